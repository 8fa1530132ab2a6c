"""Regression alerts between workflow versions."""

import random

from director.alerts import MIN_SAMPLES, checkpoint, regression


def test_checkpoints_double():
    assert [n for n in range(1, 200) if checkpoint(n)] == [10, 20, 40, 80, 160]


def test_a_clear_drop_is_a_regression_and_noise_is_not():
    rng = random.Random(1)
    before = [0.8 + rng.uniform(-0.1, 0.1) for _ in range(100)]
    worse = [0.6 + rng.uniform(-0.1, 0.1) for _ in range(20)]
    same = [0.8 + rng.uniform(-0.1, 0.1) for _ in range(20)]
    found = regression(worse, before)
    assert found is not None and found.drop > 0.15 and found.p_value < 1e-6
    assert regression(same, before) is None
    assert regression([x + 0.1 for x in worse], before) is not None
    assert regression(before[:20], worse) is None, "an improvement is no regression"


def test_too_few_scores_say_nothing():
    assert regression([0.1] * (MIN_SAMPLES - 1), [0.9] * 50) is None
    assert regression([0.1] * 20, [0.9] * 20) is not None, "constant scores: the drop is certain"
