"""How long a scene will take, from how long finished scenes of the same workflow took.

A finished scene gives one :class:`SceneTiming`: its planned frames (the sum of its shots' frame
counts) and its wall-clock seconds from request to its last shot's final score (every attempt,
retry, render, score and hop included). :func:`estimate` fits ``seconds = fixed + per_frame x
frames`` to the latest :data:`HISTORY` of them by least squares, each weighted by its recency
(half the weight every :data:`HALF_LIFE_SCENES` scenes back: a pipeline that warms up, or a
render server that gets busier, is followed), and falls back to the weighted median seconds per
frame when the frames do not vary enough to fit (or the fit would give a negative part). The
estimate assumes the pipeline is as busy as it was over that recent history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Finished scenes an estimate is made from (the latest; older ones describe an older pipeline).
HISTORY = 20
#: A finished scene this many scenes older than the latest weighs half as much.
HALF_LIFE_SCENES = 5.0


@dataclass(frozen=True)
class SceneTiming:
    frames: int
    seconds: float


@dataclass(frozen=True)
class Eta:
    seconds: float
    scenes: int  # finished scenes of the workflow it is made from
    method: str  # "fit" (fixed + per frame) or "per-frame" (median seconds per frame)
    fixed_s: float
    per_frame_s: float


def estimate(history: Sequence[SceneTiming], frames: int) -> Eta | None:
    """The ETA of a scene of ``frames`` planned frames from ``history`` (newest first); ``None``
    with no finished scene to go by."""
    usable = [t for t in history[:HISTORY] if t.frames > 0 and t.seconds > 0]
    if not usable:
        return None
    weights = [0.5 ** (age / HALF_LIFE_SCENES) for age in range(len(usable))]
    xs = [t.frames for t in usable]
    ys = [t.seconds for t in usable]
    if len(usable) >= 3 and len(set(xs)) >= 2:
        total = sum(weights)
        mean_x = sum(w * x for w, x in zip(weights, xs)) / total
        mean_y = sum(w * y for w, y in zip(weights, ys)) / total
        var = sum(w * (x - mean_x) ** 2 for w, x in zip(weights, xs))
        slope = sum(w * (x - mean_x) * (y - mean_y) for w, x, y in zip(weights, xs, ys)) / var
        fixed = mean_y - slope * mean_x
        if slope > 0 and fixed >= 0:
            return Eta(fixed + slope * frames, len(usable), "fit", fixed, slope)
    per_frame = weighted_median([y / x for x, y in zip(xs, ys)], weights)
    return Eta(per_frame * frames, len(usable), "per-frame", 0.0, per_frame)


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    """The smallest value at which the weights of the values up to it reach half the total."""
    pairs = sorted(zip(values, weights))
    half, running = sum(weights) / 2, 0.0
    for value, weight in pairs:
        running += weight
        if running >= half:
            return value
    return pairs[-1][0]
