"""The weight-free image signature: deterministic, unit length, and a likeness that follows the
picture (composition, palette, edges), not the file."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from scoring.signature import DIMENSIONS, image_signature


def picture(background: tuple[int, int, int], stripes: str, size: int = 96, shift: int = 0) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for i in range(-size, 2 * size, 16):
        if stripes == "vertical":
            draw.rectangle([i + shift, 0, i + shift + 5, size], fill=(20, 20, 20))
        else:  # diagonal
            draw.line([(i + shift, 0), (i + shift + size, size)], fill=(250, 250, 250), width=4)
    return image


def similarity(a: Image.Image, b: Image.Image) -> float:
    return float(np.dot(image_signature(a), image_signature(b)))


def test_the_signature_is_deterministic_short_and_unit_length():
    image = picture((200, 60, 40), "vertical")
    signature = image_signature(image)
    assert len(signature) == DIMENSIONS and signature == image_signature(image.copy())
    assert abs(np.linalg.norm(signature) - 1.0) < 1e-3
    dark, light = (image_signature(Image.new("RGB", (32, 32), (v, v, v))) for v in (20, 235))
    assert np.dot(dark, light) < 0.5, "a plain picture is its palette: a dark one is not a light one"


def test_a_moved_or_resized_frame_looks_more_like_itself_than_another_scene_does():
    forest = picture((40, 120, 50), "vertical")
    panned = picture((40, 120, 50), "vertical", shift=6)  # the next frame of a pan
    larger = picture((40, 120, 50), "vertical", size=160)  # another render size
    night_fight = picture((20, 20, 90), "diagonal")
    assert similarity(forest, panned) > similarity(forest, night_fight) + 0.3
    assert similarity(forest, larger) > similarity(forest, night_fight) + 0.3


def test_palette_and_edges_each_count():
    red_vertical, blue_vertical = picture((200, 40, 40), "vertical"), picture((40, 40, 200), "vertical")
    red_diagonal = picture((200, 40, 40), "diagonal")
    assert similarity(red_vertical, red_vertical.copy()) > similarity(red_vertical, blue_vertical)
    assert similarity(red_vertical, red_vertical.copy()) > similarity(red_vertical, red_diagonal)
