"""The scene ETA from finished scenes: a fit of fixed + per-frame seconds, or the median rate."""

import pytest

from director.eta import HISTORY, SceneTiming, estimate, weighted_median


def test_no_finished_scene_gives_no_eta():
    assert estimate([], 40) is None
    assert estimate([SceneTiming(0, 12.0)], 40) is None


def test_scenes_of_several_lengths_give_fixed_plus_per_frame():
    history = [SceneTiming(frames, 5.0 + 0.5 * frames) for frames in (20, 30, 40, 50)]
    eta = estimate(history, 60)
    assert eta.method == "fit" and eta.scenes == 4
    assert eta.fixed_s == pytest.approx(5.0) and eta.per_frame_s == pytest.approx(0.5)
    assert eta.seconds == pytest.approx(35.0)


def test_scenes_of_one_length_give_the_median_rate():
    history = [SceneTiming(40, s) for s in (20.0, 22.0, 60.0)]
    eta = estimate(history, 20)
    assert eta.method == "per-frame" and eta.seconds == pytest.approx(11.0)


def test_a_fit_with_a_negative_part_falls_back_to_the_rate():
    # Longer scenes that finished sooner (a busier pipeline earlier): no sensible line.
    history = [SceneTiming(20, 40.0), SceneTiming(40, 30.0), SceneTiming(60, 20.0)]
    eta = estimate(history, 40)
    assert eta.method == "per-frame" and eta.seconds == pytest.approx(40 * (30.0 / 40))


def test_only_the_latest_scenes_count():
    old = [SceneTiming(40, 400.0)] * 50
    recent = [SceneTiming(40, 40.0)] * HISTORY
    assert estimate(recent + old, 40).seconds == pytest.approx(40.0)


def test_recent_scenes_weigh_more_so_a_warming_pipeline_is_followed():
    # The latest five scenes ran at 1 s per frame, the fifteen before them (a cold pipeline) at 2.
    history = [SceneTiming(f, 1.0 * f) for f in (20, 30, 40, 50, 60)] + [SceneTiming(f, 2.0 * f) for f in (20, 40, 60) * 5]
    eta = estimate(history, 40)
    unweighted = (5 * 1.0 + 15 * 2.0) / 20 * 40
    assert 40.0 <= eta.seconds < unweighted - 10, (eta, unweighted)
    assert weighted_median([1.0, 2.0, 3.0], [0.1, 0.1, 1.0]) == 3.0
    assert weighted_median([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]) == 2.0
