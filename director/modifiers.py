"""The prompt patterns ("modifiers") the director chooses between and learns about.

``motion_gain`` and ``jitter`` describe what a modifier does to a render: the procedural
renderer applies them literally, and they document the intent for a model-backed one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Modifier:
    name: str
    prompt_text: str
    negative_text: str
    motion_gain: float
    jitter: float
    cfg_delta: float = 0.0


MODIFIERS: dict[str, Modifier] = {
    m.name: m
    for m in (
        Modifier("dynamic-action", "dynamic action lines, speed lines, motion blur, dramatic pose",
                 "static pose, stiff", motion_gain=1.5, jitter=0.03, cfg_delta=0.5),
        Modifier("steady-cinematic", "steady cinematic camera, stable composition, film still",
                 "camera shake, flicker", motion_gain=0.35, jitter=0.01, cfg_delta=-0.5),
        Modifier("clean-cel", "clean cel shading, crisp lineart, flat colours",
                 "sketchy lines, noise", motion_gain=1.0, jitter=0.02),
        Modifier("painterly-detail", "painterly background, intricate detail, rich texture",
                 "plain background", motion_gain=0.9, jitter=0.09, cfg_delta=1.0),
        Modifier("rim-light-drama", "dramatic rim light, strong contrast, volumetric light",
                 "flat lighting", motion_gain=1.15, jitter=0.05),
    )
}
