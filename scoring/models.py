"""Input and result types of the public API."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor


@dataclass(frozen=True)
class ShotInput:
    """One shot to score.

    Attributes:
        frames: image file paths in display order (decoded as 8-bit RGB), or a
            tensor [N, C, H, W] with C in {1, 3}, uint8 or float in [0, 1].
        expected_motion: what the shot asked for, in [0, 1]: 0 = static
            establishing shot, 1 = fast action.
        reference: the first accepted frame of the character/scene (path or
            [C, H, W] tensor, any size); None = the shot's own first frame.
        shot_id: opaque caller identifier, echoed in the result.

    Nothing is validated at construction: the Scorer validates and reports
    problems as failed results, so building an input never raises.
    """

    frames: Sequence[str | os.PathLike[str]] | Tensor
    expected_motion: float
    reference: str | os.PathLike[str] | Tensor | None = None
    shot_id: str | None = None


class ShotScore(BaseModel):
    """Result for one shot; JSON-serialisable (``model_dump_json``).

    ``composite`` is in [0, 1] and 0.0 when ``status == "failed"``; ``reason``
    is None exactly when the status is ``ok``. ``metrics`` holds only finite
    floats (see docs/SCORING.md for the keys); it is empty on failure.
    """

    model_config = ConfigDict(frozen=True)

    status: Literal["ok", "failed"]
    reason: str | None = None
    composite: float = Field(ge=0.0, le=1.0)
    metrics: dict[str, float] = Field(default_factory=dict)
    scorer_version: str
    device: str
    embedding_backend: str
    shot_id: str | None = None

    @field_validator("metrics")
    @classmethod
    def _finite(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not math.isfinite(x)]
        if bad:
            raise ValueError(f"non-finite metrics: {bad}")
        return v
