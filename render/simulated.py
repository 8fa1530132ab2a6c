"""A simulated render model, for the learning benchmark (named as such: it is no real model).

It draws the procedural renderer's frames, but how each modifier moves and steadies the picture
in each context comes from a seeded random table instead of the modifier's own
``motion_gain`` and ``jitter``: a different, arbitrary response per context, so that what the
learner is shown to learn does not hinge on one hand-written response. ``model`` 2 is a changed
model: a table with another seed and more flicker throughout (it scores worse), as a model
update that regressed would. The real scorer scores its frames like any others.
"""

from __future__ import annotations

import hashlib

from director.learning import context_parts

GAIN_RANGE = (0.3, 1.6)
JITTER_RANGE = (0.005, 0.09)
# The changed model's extra flicker, on top of its table's.
MODEL_2_EXTRA_JITTER = 0.04


def workflow(model: int) -> str:
    return f"simulated-model-{model}"


def response(context: str, modifier: str, model: int) -> tuple[float, float]:
    """``(motion_gain, jitter)`` of ``modifier`` in ``context`` (its shot type, mood, lighting)."""
    parts = context_parts(context)
    key = f"{model}|{parts['camera_angle']}|{parts['mood']}|{parts['lighting']}|{modifier}"
    digest = hashlib.sha256(key.encode()).digest()
    u, v = digest[0] / 255, digest[1] / 255
    gain = GAIN_RANGE[0] + u * (GAIN_RANGE[1] - GAIN_RANGE[0])
    jitter = JITTER_RANGE[0] + v * (JITTER_RANGE[1] - JITTER_RANGE[0])
    return gain, jitter + (MODEL_2_EXTRA_JITTER if model >= 2 else 0.0)
