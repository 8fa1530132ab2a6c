"""Optional stage timing of the Scorer, for benchmarks and profiling.

``Scorer.stage_times`` is None by default (no timing; a ``nullcontext`` per
stage). Set it to a :class:`StageTimes` and every call adds, per stage, the
time spent in it *by the thread that runs it* (thread-safe: pool workers and
concurrent calls may share one accumulator):

* on pool threads, summed over the threads: ``decode`` (per file), ``grey``
  (per frame: working-size grey and working-grid pixels), ``flow`` (DIS both
  ways, per pair), ``warp`` (warping, occlusion mask, warp error, brightness
  residual and motion statistics, per pair), ``mc_ssim`` on CPU (per pair),
  and the keypoint and embedding part of ``consistency`` (per frame);
* on the calling thread, wall time: ``ssim`` (temporal SSIM, torch on all its
  threads), ``mc_ssim`` on an accelerator (upload and batched device passes),
  the rest of ``consistency`` (matching, similarities, waiting for the pool's
  part) and ``composite``.

Pool stages are summed over the worker threads that run side by side, so the
stages add up to more than the wall time of a call; the difference shows the
parallelism.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

#: Stages in pipeline order.
STAGES = ("decode", "ssim", "grey", "flow", "warp", "mc_ssim", "consistency", "composite")

_NULL: AbstractContextManager[None] = nullcontext()


class StageTimes:
    """Thread-safe accumulator: stage name -> seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            with self._lock:
                self._seconds[name] += dt

    def snapshot(self) -> dict[str, float]:
        """Seconds per stage, every stage of :data:`STAGES` present (0.0 if not run)."""
        with self._lock:
            out = {k: 0.0 for k in STAGES}
            out.update(self._seconds)
            return out

    def reset(self) -> None:
        with self._lock:
            self._seconds.clear()


def timed(times: StageTimes | None, name: str) -> AbstractContextManager[None]:
    """``times.stage(name)``, or a no-op when timing is off."""
    return _NULL if times is None else times.stage(name)
