"""Composite weights and sub-score mapping."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from scoring import CompositeWeights, SubscoreScales
from scoring.composite import combine, motion_level, subscores


def _sub(**over: float) -> dict[str, float]:
    base = dict(
        mc_ssim_mean=1.0, mc_ssim_min=1.0, warp_error=0.0, flicker=0.0, level=0.5, expected_motion=0.5, consistency=1.0
    )
    base.update(over)
    return subscores(scales=SubscoreScales(), **base)


def test_perfect_shot_scores_one() -> None:
    s = _sub()
    assert all(v == pytest.approx(1.0) for v in s.values())
    assert combine(s, CompositeWeights()) == pytest.approx(1.0)


def test_subscore_formulas() -> None:
    sc = SubscoreScales()
    s = _sub(
        mc_ssim_mean=0.9,
        mc_ssim_min=0.7,
        warp_error=sc.warp_error_scale,
        flicker=sc.flicker_scale,
        level=0.0,
        expected_motion=sc.motion_tolerance,
        consistency=1.5,
    )
    assert s["stability"] == pytest.approx(0.8)
    assert s["warp"] == pytest.approx(math.exp(-1))
    assert s["flicker"] == pytest.approx(math.exp(-1))
    assert s["motion"] == pytest.approx(math.exp(-1))
    assert s["consistency"] == 1.0


def test_motion_level_saturates() -> None:
    sc = SubscoreScales()
    assert motion_level(0.0, sc) == 0.0
    assert motion_level(sc.motion_full_scale / 2, sc) == pytest.approx(0.5)
    assert motion_level(10.0, sc) == 1.0


def test_geometric_mean_cannot_buy_back_a_failed_term() -> None:
    frozen_action = _sub(level=0.0, expected_motion=1.0)
    geo = combine(frozen_action, CompositeWeights())
    arith = combine(frozen_action, CompositeWeights(aggregation="arithmetic"))
    assert geo < 0.15 < 0.7 < arith
    zero = dict(frozen_action, consistency=0.0)
    assert combine(zero, CompositeWeights()) == 0.0


def test_zero_weight_removes_a_term() -> None:
    s = _sub(consistency=0.0)
    assert combine(s, CompositeWeights(consistency=0.0)) == pytest.approx(1.0)


def test_weights_validation() -> None:
    with pytest.raises(ValidationError):
        CompositeWeights(stability=-0.1)
    with pytest.raises(ValidationError):
        CompositeWeights(stability=0, warp=0, flicker=0, motion=0, consistency=0)
    with pytest.raises(ValidationError):
        CompositeWeights(unknown=1.0)  # type: ignore[call-arg]
    w = CompositeWeights(motion=1.0)
    assert w.as_dict()["motion"] == 1.0
