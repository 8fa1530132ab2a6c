"""Scorer configuration and device selection.

Configuration errors (unknown device, CUDA requested on a machine without it,
non-positive memory bound) raise at construction so a misconfigured scorer
agent fails at start-up; input errors never raise (see scoring/scorer.py).
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from scoring.composite import CompositeWeights, SubscoreScales
from scoring.flow import FlowPreset

#: Identifies the scoring definition. Bump the major version whenever a change
#: can alter a score for the same input, so the learner never mixes scales.
SCORER_VERSION = "tower-scoring/2.0.0"


class ScorerConfig(BaseModel):
    """Everything that shapes a score or the resources used to compute it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: ``auto`` = CUDA when available, else CPU. ``cuda`` without a GPU raises.
    device: Literal["auto", "cuda", "cpu"] = "auto"
    weights: CompositeWeights = Field(default_factory=CompositeWeights)
    scales: SubscoreScales = Field(default_factory=SubscoreScales)
    #: Upper bound on bytes of intermediate tensors per batched pass (SSIM and
    #: motion-compensated SSIM). Frames/pairs are chunked to respect it. 1 GiB
    #: holds ~40 frames of 512x512 or ~5 of 1920x1080 per SSIM pass.
    max_batch_bytes: int = Field(1024 * 1024 * 1024, gt=0)
    #: Threads for decoding, optical flow and keypoints (OpenCV releases the GIL).
    #: None = min(8, os.cpu_count()).
    workers: int | None = Field(None, ge=1)
    #: DIS preset of the forward flow (t -> t+1), which drives warping, warp
    #: error, motion-compensated SSIM and the motion statistics.
    flow_preset: FlowPreset = "medium"
    #: DIS preset of the backward flow (t+1 -> t), used only by the
    #: forward-backward occlusion check; None = ``flow_preset``. A coarser
    #: backward flow can only mark more pixels occluded (a slightly wider band at
    #: motion boundaries); measured effect in docs/SCORING.md ("Working resolution").
    backward_flow_preset: FlowPreset | None = "fast"
    #: Flow, warping and motion-compensated SSIM run at a working resolution:
    #: the frame scaled by ``motion_scale`` (0.5 = half resolution, a quarter
    #: of the pixels), but never with the longer side below ``motion_min_side``
    #: (smaller frames stay native) nor above ``flow_max_side`` (None = no cap).
    #: Motion magnitudes are reported in native pixels and as fractions of the
    #: diagonal either way. The half-resolution default and its measured effect
    #: on the metrics are documented in docs/SCORING.md ("Working resolution").
    motion_scale: float = Field(0.5, gt=0.0, le=1.0)
    motion_min_side: int = Field(256, ge=32)
    flow_max_side: int | None = Field(1024, ge=64)
    #: A pixel "moves" when its flow exceeds this many native pixels per frame.
    moving_threshold_px: float = Field(1.0, gt=0.0)
    #: Frames (evenly spaced) compared with the reference for consistency.
    consistency_max_frames: int = Field(8, ge=1)
    #: Share of keypoint agreement in per-frame consistency (rest = embedding).
    keypoint_weight: float = Field(0.3, ge=0.0, le=1.0)

    def resolved_workers(self) -> int:
        return self.workers or max(1, min(8, os.cpu_count() or 1))


def resolve_device(choice: str) -> torch.device:
    """Map ``auto|cuda|cpu`` to a concrete torch device (``cuda`` -> current CUDA device)."""
    if choice == "cpu":
        return torch.device("cpu")
    if choice in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if choice == "cuda":
            raise ValueError("ScorerConfig.device='cuda' but torch.cuda.is_available() is False")
        return torch.device("cpu")
    raise ValueError(f"unknown device {choice!r}; expected 'auto', 'cuda' or 'cpu'")
