"""Synthetic frames for the scoring tests: smooth, band-limited colour textures.

A texture is a sum of random colour sinusoids evaluated at continuous
coordinates, so translating it by any sub-pixel amount is exact (no
interpolation error) and the true optical flow is known.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scoring import Scorer, ScorerConfig


@lru_cache(maxsize=256)
def _texture(h: int, w: int, dx: float, dy: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    xx -= dx
    yy -= dy
    img = np.zeros((h, w, 3))
    for _ in range(24):
        lam = rng.uniform(10.0, 48.0)  # wavelengths in px: band-limited, DIS-friendly
        theta = rng.uniform(0.0, np.pi)
        phase = rng.uniform(0.0, 2 * np.pi)
        kx, ky = 2 * np.pi / lam * np.cos(theta), 2 * np.pi / lam * np.sin(theta)
        colour = rng.uniform(0.2, 1.0, 3)
        img += colour * np.sin(kx * xx + ky * yy + phase)[..., None]
    # A fixed normaliser (not the per-image max) keeps every translated copy on
    # the same scale; the sum's std is ~2, so values rarely reach the clip.
    return np.clip(0.5 + 0.4 * img / 6.0, 0.0, 1.0)


def texture(h: int, w: int, dx: float = 0.0, dy: float = 0.0, seed: int = 0) -> np.ndarray:
    """HxWx3 float64 in [0, 1]; content at p equals the untranslated texture at p - (dx, dy)."""
    return _texture(h, w, float(dx), float(dy), seed)


def make_shot(
    n: int,
    h: int = 128,
    w: int = 128,
    speed: tuple[float, float] = (0.0, 0.0),
    flicker: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """Float [N, 3, H, W] shot: a texture panning at ``speed`` px/frame, optionally with
    brightness alternating by +-``flicker`` between frames."""
    frames = []
    for t in range(n):
        f = texture(h, w, speed[0] * t, speed[1] * t, seed)
        if flicker:
            f = np.clip(f + (flicker if t % 2 else -flicker), 0.0, 1.0)
        frames.append(f)
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().contiguous()


def write_pngs(frames: torch.Tensor, folder: Path) -> list[Path]:
    """Write a float [N, 3, H, W] shot as 8-bit RGB PNGs, return the paths in order."""
    folder.mkdir(parents=True, exist_ok=True)
    u8 = (frames * 255.0 + 0.5).floor().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    paths = []
    for i, f in enumerate(u8):
        p = folder / f"{i:04d}.png"
        assert cv2.imwrite(str(p), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def shot_factory() -> Callable[..., torch.Tensor]:
    return make_shot


@pytest.fixture(scope="session")
def texture_factory() -> Callable[..., np.ndarray]:
    return texture


@pytest.fixture(scope="session")
def png_writer() -> Callable[[torch.Tensor, Path], list[Path]]:
    return write_pngs


@pytest.fixture(scope="session")
def cpu_scorer() -> Scorer:
    scorer = Scorer(ScorerConfig(device="cpu", workers=2))
    yield scorer
    scorer.close()
