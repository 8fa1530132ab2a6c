"""Composite quality score: measured metrics -> sub-scores in [0, 1] -> one number.

The composite is the only signal the director learns from, so it is built to
make "render nothing" a losing strategy:

* Stability is measured *after motion compensation* (SSIM of frame t with frame
  t+1 warped back by optical flow), so moving content is not penalised and a
  frozen image gains nothing over a clean moving one.
* Motion is scored against what the shot asked for (``expected_motion``): a
  static action shot scores near 0 on that term.
* By default sub-scores are combined with a weighted *geometric* mean, so no good
  term can buy back a failed one (a frozen action shot cannot be rescued by its
  perfect stability). ``aggregation="arithmetic"`` is available for analysis.

Sub-score definitions (all in [0, 1], 1 = best):

* ``stability   = clamp((mc_ssim_mean + mc_ssim_min) / 2, 0, 1)`` - the worst
  pair counts as much as the average, so a single glitch frame is visible.
* ``warp        = exp(-warp_error_mean / warp_error_scale)``
* ``flicker     = exp(-flicker / flicker_scale)``
* ``motion      = exp(-((level - expected_motion) / motion_tolerance)^2)`` with
  ``level = clamp(motion_p95_norm / motion_full_scale, 0, 1)``: the 95th
  percentile flow magnitude per frame (so a character that fills >5% of the frame
  counts even over a static background), divided by the frame diagonal, averaged
  over pairs (so animation "on twos" averages to its true speed).
* ``consistency`` - see scoring/consistency.py.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SUBSCORES = ("stability", "warp", "flicker", "motion", "consistency")
#: Floor applied before the logarithm of the geometric mean (keeps it finite).
_LOG_FLOOR = 1e-6


class CompositeWeights(BaseModel):
    """Relative weights of the sub-scores; normalised by their sum when combined.

    Defaults: stability 0.30, motion 0.25, warp 0.15, flicker 0.15,
    consistency 0.15. Setting a weight to 0 removes that term.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    stability: float = Field(0.30, ge=0.0)
    warp: float = Field(0.15, ge=0.0)
    flicker: float = Field(0.15, ge=0.0)
    motion: float = Field(0.25, ge=0.0)
    consistency: float = Field(0.15, ge=0.0)
    aggregation: Literal["geometric", "arithmetic"] = "geometric"

    @model_validator(mode="after")
    def _positive_total(self) -> CompositeWeights:
        if sum(self.as_dict().values()) <= 0:
            raise ValueError("at least one composite weight must be positive")
        return self

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in SUBSCORES}


class SubscoreScales(BaseModel):
    """How raw metrics map to sub-scores (see module docstring for formulas)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Warp error (sum of squared RGB differences, frames in [0, 1]) that scores
    #: exp(-1) ~ 0.37; 0.01 is an RMS difference of ~0.058 per channel.
    warp_error_scale: float = Field(0.01, gt=0.0)
    #: Flicker amplitude (fraction of full-scale luma) scoring exp(-1); 0.02 is a
    #: clearly visible +-2% brightness pumping.
    flicker_scale: float = Field(0.02, gt=0.0)
    #: p95 flow magnitude per frame, as a fraction of the diagonal, that counts as
    #: motion level 1 ("fast action"): 1% = 22 px/frame at 1920x1080.
    motion_full_scale: float = Field(0.01, gt=0.0)
    #: Difference between measured level and expected_motion scoring exp(-1).
    motion_tolerance: float = Field(0.3, gt=0.0)


def motion_level(p95_norm: float, scales: SubscoreScales) -> float:
    """Measured motion on the expected_motion scale [0, 1]."""
    return min(1.0, max(0.0, p95_norm / scales.motion_full_scale))


def subscores(
    *,
    mc_ssim_mean: float,
    mc_ssim_min: float,
    warp_error: float,
    flicker: float,
    level: float,
    expected_motion: float,
    consistency: float,
    scales: SubscoreScales,
) -> dict[str, float]:
    """Sub-scores in [0, 1] from measured metrics (formulas in the module docstring)."""
    return {
        "stability": min(1.0, max(0.0, 0.5 * (mc_ssim_mean + mc_ssim_min))),
        "warp": math.exp(-max(0.0, warp_error) / scales.warp_error_scale),
        "flicker": math.exp(-max(0.0, flicker) / scales.flicker_scale),
        "motion": math.exp(-(((level - expected_motion) / scales.motion_tolerance) ** 2)),
        "consistency": min(1.0, max(0.0, consistency)),
    }


def combine(scores: dict[str, float], weights: CompositeWeights) -> float:
    """Weighted geometric (default) or arithmetic mean of sub-scores, in [0, 1]."""
    w = weights.as_dict()
    total = sum(w.values())
    if weights.aggregation == "geometric":
        log_sum = sum(w[k] * math.log(max(_LOG_FLOOR, scores[k])) for k in SUBSCORES if w[k] > 0)
        value = math.exp(log_sum / total)
        # Undo the floor's contribution so an exact zero term yields exactly 0
        # rather than a tiny positive number that looks like signal.
        if any(w[k] > 0 and scores[k] <= 0.0 for k in SUBSCORES):
            value = 0.0
    else:
        value = sum(w[k] * scores[k] for k in SUBSCORES) / total
    return min(1.0, max(0.0, value))
