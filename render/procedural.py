"""The built-in CPU renderer: deterministic procedural frames whose motion and stability follow
the prompt's shot and modifier, so the scorer's numbers mean something.

What is drawn: a band-limited painted backdrop (a few random sinusoids, tinted by the lighting),
panned by the camera (the prompt's ``camera_motion``); one soft disc per character with a colour derived from its name, moving
along its own path. How much things move is ``expected_motion x modifier.motion_gain``; how much
each frame flickers and shakes is the modifier's ``jitter``. The same prompt seed gives the same
frames, byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from director.modifiers import MODIFIERS
from events.models import PromptRefined

BACKEND_NAME = "procedural"
# v2: the camera pans by the prompt's camera_motion (a static shot does not pan), not by a constant.
WORKFLOW = "procedural-v2"
# Pixels per frame at full motion, relative to the frame's shorter side.
FULL_MOTION_STEP = 0.035

LIGHTING_TINTS: dict[str, tuple[float, float, float]] = {
    "dramatic shadows": (0.75, 0.55, 0.6),
    "soft warm backlight": (1.0, 0.8, 0.6),
    "low-key moonlight": (0.45, 0.55, 0.85),
    "golden hour": (1.0, 0.78, 0.45),
    "bright daylight": (1.0, 0.97, 0.9),
    "cold dawn light": (0.7, 0.78, 0.95),
    "neon glow": (0.85, 0.5, 1.0),
    "flickering firelight": (1.0, 0.6, 0.35),
}


def _name_rgb(name: str) -> np.ndarray:
    digest = hashlib.sha256(name.encode()).digest()
    return np.array([64 + digest[i] % 192 for i in range(3)], dtype=np.float32) / 255.0


def render_shot(event: PromptRefined) -> list[np.ndarray]:
    """The frames of one attempt as ``H x W x 3`` uint8 arrays."""
    return list(iter_frames(event))


def iter_frames(event: PromptRefined, response: tuple[float, float] | None = None) -> Iterator[np.ndarray]:
    """The frames of one attempt, one at a time (so a caller can report progress).

    ``response`` replaces the modifier's ``(motion_gain, jitter)``: how a simulated model
    responds to it (:mod:`render.simulated`)."""
    prompt, shot = event.prompt, event.shot
    modifier = MODIFIERS.get(prompt.modifier)
    if modifier is None:
        raise ValueError(f"unknown modifier {prompt.modifier!r}; known: {', '.join(MODIFIERS)}")
    if response is not None:
        modifier = replace(modifier, motion_gain=response[0], jitter=response[1])
    rng = np.random.default_rng(prompt.seed)
    height, width = prompt.height, prompt.width
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    waves = [
        (rng.uniform(0.02, 0.09), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0))
        for _ in range(6)
    ]
    tint = np.array(LIGHTING_TINTS.get(shot.lighting, (0.85, 0.85, 0.85)), dtype=np.float32)
    motion = float(np.clip(shot.expected_motion * modifier.motion_gain, 0.0, 2.0))
    step = FULL_MOTION_STEP * min(height, width) * motion
    heading = rng.uniform(0, 2 * np.pi)
    pan = np.array([np.cos(heading), np.sin(heading)]) * step * prompt.camera_motion

    actors = []
    for name in shot.characters:
        start = np.array([rng.uniform(0.25, 0.75) * width, rng.uniform(0.3, 0.7) * height])
        direction = rng.uniform(0, 2 * np.pi)
        velocity = np.array([np.cos(direction), np.sin(direction)]) * step
        radius = min(height, width) * rng.uniform(0.08, 0.14)
        actors.append((start, velocity, radius, _name_rgb(name)))

    for t in range(shot.frame_count):
        shake = rng.normal(0.0, modifier.jitter * 40.0, size=2)
        ox, oy = pan * t + shake
        backdrop = sum(
            amp * np.sin(freq * ((xx + ox) * np.cos(angle) + (yy + oy) * np.sin(angle)) + phase)
            for freq, angle, phase, amp in waves
        )
        backdrop = 0.5 + 0.5 * backdrop / sum(w[3] for w in waves)
        image = backdrop[..., None] * tint[None, None, :]
        for start, velocity, radius, colour in actors:
            cx, cy = start + velocity * t
            cx, cy = cx % width, cy % height
            dist2 = (xx - cx) ** 2 + (yy - cy) ** 2
            alpha = np.clip(1.5 - np.sqrt(dist2) / radius, 0.0, 1.0)[..., None]
            shading = 0.85 + 0.15 * np.sin((xx - cx) * 0.3)[..., None]
            image = image * (1 - alpha) + colour[None, None, :] * shading * alpha
        flicker = 1.0 + rng.normal(0.0, modifier.jitter)
        grain = rng.normal(0.0, modifier.jitter * 0.25, size=image.shape[:2])[..., None]
        image = np.clip(image * flicker + grain, 0.0, 1.0)
        yield (image * 255.0 + 0.5).astype(np.uint8)
