"""The top-level API: score shots end to end (files or tensors in, ShotScore out).

Pipeline per call to :meth:`Scorer.score_shots` (per frame size, stages 2-5):

1. Load: all frame files of all shots decode in one thread pool, straight to
   HxWx3 uint8 RGB; tensors are validated (NaN/Inf, range, shape) and quantised
   to uint8.
2. Temporal SSIM, alone (torch uses every core): shots of the same size are
   concatenated and every consecutive pair is scored in chunked passes on the
   device (uint8 upload, float on device, per-frame blur reuse; see
   scoring/ssim.py). The pair straddling two shots is computed and discarded,
   which costs one pair per shot boundary.
3. Everything else that runs on CPU threads is queued on the pool at once:
   consistency features (ORB keypoints, weight-free embeddings), frame
   preparation at the motion working resolution (once per frame), and per pair
   DIS flow both ways, warping, occlusion mask, warp error, brightness residual,
   motion statistics and, on CPU, motion-compensated SSIM (OpenCV). On an
   accelerator the motion-compensated SSIM of each chunk of pairs runs in one
   device pass while the pool works on the next pairs.
4. Consistency against the reference (embedding backend + keypoint agreement).
5. Composite (scoring/composite.py).

Stage timing for benchmarks: ``Scorer.stage_times`` (scoring/profile.py).

Error contract: ``score_shots`` never raises. Every shot gets a ShotScore, in
input order; bad input (missing/corrupt file, mixed sizes, fewer than 2 frames,
NaN/Inf, out-of-range values, bad expected_motion) gives ``status="failed"``
with a human-readable ``reason``, and one bad shot never fails the others.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from scoring import consistency as cons
from scoring import flow
from scoring.composite import combine as combine_composite
from scoring.composite import motion_level, subscores
from scoring.config import SCORER_VERSION, ScorerConfig, resolve_device
from scoring.frames import FrameError, check_same_size, decode_many, tensor_to_frames, to_device_float
from scoring.models import ShotInput, ShotScore
from scoring.profile import StageTimes, timed
from scoring.ssim import frames_per_chunk, ssim_between, ssim_hwc_uint8, ssim_pairs

T = TypeVar("T")


class DeviceBusy(ConnectionError):
    """The scoring device failed for a reason of its own (CUDA out of memory): not the frames'
    fault, so not a failed score. A :class:`ConnectionError`, so the agent waits it out."""


def is_transient_device_error(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text and ("cuda" in text or "hip" in text))


#: Bytes held per pair of a motion chunk on an accelerator, in float32 maps of
#: 3 x H x W at the working resolution: the two float frames uploaded for
#: motion-compensated SSIM, the warped uint8 frame and mask while the chunk is
#: alive. ssim_between bounds its own intermediates with max_batch_bytes separately.
_MC_MAPS_PER_PAIR = 3.0


@dataclass
class _Shot:
    """A loaded shot; ``error`` set means it has failed and is skipped."""

    index: int
    inp: ShotInput
    expected: float = 0.0
    frames: list[np.ndarray] = field(default_factory=list)
    reference: np.ndarray | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    ssim: np.ndarray | None = None


@dataclass
class _ConsistencyJobs:
    """Pool futures of one shot's consistency features (reference first, then sampled frames)."""

    indices: list[int]
    frames: list[np.ndarray]
    embeddings: list[Future[np.ndarray]] | None
    keypoints: list[Future[cons.Keypoints]]


@dataclass
class _MotionRun:
    """Per-pair flow + warping jobs of one size group, submitted at most ``window`` pairs ahead
    of the motion-compensated SSIM passes that consume them ``chunk`` pairs at a time."""

    scale: float
    chunk: int
    window: int
    prepared: dict[int, list[Future[flow.PreparedFrame]]]
    analyse: Callable[[tuple[Any, int]], Any]
    pool: ThreadPoolExecutor
    jobs: list[tuple[Any, int]] = field(default_factory=list)
    submitted: int = 0
    in_flight: deque[tuple[tuple[Any, int], Future[Any]]] = field(default_factory=deque)

    def top_up(self) -> None:
        while self.submitted < len(self.jobs) and len(self.in_flight) < self.window:
            job = self.jobs[self.submitted]
            self.in_flight.append((job, self.pool.submit(self.analyse, job)))
            self.submitted += 1

    def take_chunk(self) -> list[tuple[tuple[Any, int], Any]]:
        """The next ``chunk`` analysed pairs, in order (blocks until they are done)."""
        out = []
        while self.in_flight and len(out) < self.chunk:
            job, fut = self.in_flight.popleft()
            out.append((job, fut.result()))
        self.top_up()
        return out

    def cancel(self) -> None:
        """Drop what has not started (after an error, or nothing left)."""
        self.submitted = len(self.jobs)
        while self.in_flight:
            self.in_flight.popleft()[1].cancel()
        for futs in self.prepared.values():
            for f in futs:
                f.cancel()


def _is_path(x: object) -> bool:
    return isinstance(x, (str, os.PathLike))


class Scorer:
    """Scores shots; owns a thread pool (use as a context manager or call close()).

    Args:
        config: ScorerConfig; invalid configuration raises here, at start-up.
        embedding_backend: consistency embedding; default WeightFreeEmbedding.

    Thread-safety: ``score_shots`` keeps no state on the Scorer between or
    during calls (DIS instances are per thread), so concurrent calls, e.g. from
    ``asyncio.to_thread``, are safe; they share the worker pool.

    ``stage_times``: set to a :class:`scoring.profile.StageTimes` to collect
    seconds per pipeline stage (benchmarks); None (default) = no timing.
    """

    stage_times: StageTimes | None = None

    def __init__(self, config: ScorerConfig | None = None, *, embedding_backend: cons.EmbeddingBackend | None = None):
        self.config = config or ScorerConfig()
        self.device = resolve_device(self.config.device)
        self._pool = ThreadPoolExecutor(max_workers=self.config.resolved_workers(), thread_name_prefix="tower-scoring")
        # Motion-compensated SSIM: on an accelerator, batched passes of ssim_between
        # on the device; on CPU, ssim_hwc_uint8 in the worker that warped the pair
        # (same definition, agree within 1e-6; see docs/SCORING.md).
        self._mc_on_device = self.device.type != "cpu"
        self.embedding_backend: cons.EmbeddingBackend = embedding_backend or cons.WeightFreeEmbedding(self._pool)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ API

    def score_shots(self, shots: Sequence[ShotInput]) -> list[ShotScore]:
        """Score each shot; raises only :class:`DeviceBusy` (a transient device error such as CUDA
        out of memory, which says nothing about the frames: try again later), otherwise never
        (see module docstring for the contract)."""
        try:
            items = list(shots)
        except Exception:  # not iterable: there is no shot to attach a result to
            return []
        try:
            return self._score(items)
        except DeviceBusy:
            raise
        except Exception as exc:  # last resort: a bug or a device failure
            if is_transient_device_error(exc):
                raise self._busy(exc) from exc
            reason = f"internal error: {type(exc).__name__}: {exc}"
            return [self._failed(getattr(s, "shot_id", None), reason) for s in items]

    # ------------------------------------------------------------- helpers

    def _busy(self, exc: BaseException) -> DeviceBusy:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # what the failed batch held goes back before the retry
        return DeviceBusy(f"scoring device {self.device} is busy: {type(exc).__name__}: {exc}")

    def _failed(self, shot_id: Any, reason: str) -> ShotScore:
        return ShotScore(
            status="failed",
            reason=reason,
            composite=0.0,
            metrics={},
            scorer_version=SCORER_VERSION,
            device=str(self.device),
            embedding_backend=self.embedding_backend.name,
            shot_id=shot_id if isinstance(shot_id, str) else None,
        )

    def _guard(self, shots: Sequence[_Shot], stage: str, fn: Callable[..., T], *args: Any) -> T | None:
        """Run ``fn(*args)`` for ``shots``; on an exception mark them failed instead of raising."""
        try:
            return fn(*args)
        except Exception as exc:
            if is_transient_device_error(exc):
                raise self._busy(exc) from exc
            for s in shots:
                if s.error is None:
                    s.error = f"{stage} failed: {type(exc).__name__}: {exc}"
            return None

    # ------------------------------------------------------------- pipeline

    def _score(self, items: list[Any]) -> list[ShotScore]:
        shots = [_Shot(index=i, inp=inp) for i, inp in enumerate(items)]
        self._load(shots)
        groups: dict[tuple[int, int], list[_Shot]] = defaultdict(list)
        for s in shots:
            if s.error is None:
                groups[s.frames[0].shape[:2]].append(s)
        with torch.inference_mode():
            for (h, w), group in groups.items():
                self._score_group(group, h, w)
        out = []
        for s in shots:
            sid = getattr(s.inp, "shot_id", None)
            if s.error is not None:
                out.append(self._failed(sid, s.error))
                continue
            out.append(
                ShotScore(
                    status="ok",
                    reason=None,
                    composite=s.metrics.pop("composite"),
                    metrics=s.metrics,
                    scorer_version=SCORER_VERSION,
                    device=str(self.device),
                    embedding_backend=self.embedding_backend.name,
                    shot_id=sid if isinstance(sid, str) else None,
                )
            )
        return out

    def _load(self, shots: list[_Shot]) -> None:
        """Validate inputs and decode every file of every shot in one parallel batch."""
        jobs: list[tuple[_Shot, int, Any]] = []  # (shot, position or -1 for reference, path)
        for s in shots:
            inp = s.inp
            if not isinstance(inp, ShotInput):
                s.error = f"expected ShotInput, got {type(inp).__name__}"
                continue
            em = inp.expected_motion
            if isinstance(em, bool) or not isinstance(em, Real) or not math.isfinite(float(em)) or not 0 <= em <= 1:
                s.error = f"expected_motion must be a finite number in [0, 1], got {em!r}"
                continue
            s.expected = float(em)
            fr = inp.frames
            try:
                if isinstance(fr, Tensor):
                    with timed(self.stage_times, "decode"):
                        s.frames = tensor_to_frames(fr)
                elif _is_path(fr) or not isinstance(fr, Sequence):
                    s.error = "frames must be a sequence of image paths or a [N, C, H, W] tensor"
                    continue
                else:
                    if not all(_is_path(p) for p in fr):
                        s.error = "frames sequence must contain only paths (str or os.PathLike)"
                        continue
                    s.frames = [None] * len(fr)  # type: ignore[list-item]
                    jobs.extend((s, i, p) for i, p in enumerate(fr))
                ref = inp.reference
                if isinstance(ref, Tensor):
                    if ref.ndim != 3:
                        raise FrameError(f"reference tensor must be [C, H, W], got shape {tuple(ref.shape)}")
                    s.reference = tensor_to_frames(ref[None])[0]
                elif _is_path(ref):
                    jobs.append((s, -1, ref))
                elif ref is not None:
                    s.error = f"reference must be a path, a [C, H, W] tensor or None, got {type(ref).__name__}"
                    continue
            except FrameError as exc:
                s.error = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad shot must never fail the others
                s.error = f"invalid frames: {type(exc).__name__}: {exc}"
                continue
            n = len(fr) if not isinstance(fr, Tensor) else len(s.frames)
            if n < 2:
                s.error = f"shot has {n} frame(s); temporal metrics need at least 2"

        live = [(s, i, p) for s, i, p in jobs if s.error is None]
        decoded = decode_many([p for _, _, p in live], self._pool, self.stage_times)
        for (s, i, _), img in zip(live, decoded, strict=True):
            if s.error is not None:
                continue
            if isinstance(img, FrameError):
                s.error = f"reference: {img}" if i < 0 else f"frame {i}: {img}"
            elif i < 0:
                s.reference = img
            else:
                s.frames[i] = img
        for s in shots:
            if s.error is None:
                try:
                    check_same_size(s.frames)
                    if s.reference is not None and min(s.reference.shape[:2]) < 16:
                        raise FrameError(f"reference is {s.reference.shape[1]}x{s.reference.shape[0]}, too small")
                except FrameError as exc:
                    s.error = str(exc)
            if s.error is not None:
                s.frames, s.reference = [], None  # free memory early

    def _temporal_ssim(self, group: list[_Shot], h: int, w: int) -> None:
        """Consecutive-pair SSIM for all shots of one size, in memory-bounded chunks."""
        frames = [f for s in group for f in s.frames]
        n = len(frames)
        k = frames_per_chunk(3, h, w, 4, self.config.max_batch_bytes, self.device)
        values = np.empty(n - 1, dtype=np.float64)
        start = 0
        while start < n - 1:
            end = min(n, start + k)
            x = to_device_float(frames[start:end], self.device)
            pairs = ssim_pairs(x, 1.0, max_batch_bytes=self.config.max_batch_bytes)
            values[start : end - 1] = pairs.double().cpu().numpy()
            start = end - 1
        offset = 0
        for s in group:
            m = len(s.frames)
            s.ssim = values[offset : offset + m - 1]
            offset += m

    def _score_group(self, group: list[_Shot], h: int, w: int) -> None:
        """All stages for the shots of one frame size.

        Temporal SSIM first, alone: torch uses every core for it, and running
        pool work at the same time only oversubscribes the cores (measured on
        2 cores: 90 vs 76 CPU-ms per pair, 48 vs 40 ms wall). Then the CPU-thread
        work (consistency keypoints and embeddings, frame preparation, flow,
        warping and, on CPU, motion-compensated SSIM) is queued on the pool at
        once; on an accelerator the motion-compensated SSIM of each chunk of
        pairs runs on the device while the pool computes the next pairs' flow.
        """
        st = self.stage_times
        with timed(st, "ssim"):
            self._guard(group, "temporal SSIM", self._temporal_ssim, group, h, w)
        group = [s for s in group if s.error is None]
        if not group:
            return
        cons_jobs = {s.index: self._guard([s], "consistency", self._start_consistency, s) for s in group}
        motion = self._guard(group, "motion analysis", self._start_motion, group, h, w)
        try:
            ok = [s for s in group if s.error is None]
            if motion is not None and ok:
                self._guard(ok, "motion analysis", self._finish_motion, motion, ok, h, w)
        finally:
            if motion is not None:
                motion.cancel()
        for s in group:
            if s.error is None:
                self._guard([s], "consistency", self._finish_consistency, s, cons_jobs[s.index])
            if s.error is None:
                with timed(st, "composite"):
                    self._guard([s], "composite", self._composite, s)

    def _start_motion(self, group: list[_Shot], h: int, w: int) -> _MotionRun:
        """Queue frame preparation and per-pair flow + warping on the pool (bounded look-ahead)."""
        cfg = self.config
        st = self.stage_times
        scale = flow.flow_scale(h, w, cfg.flow_max_side, cfg.motion_scale, cfg.motion_min_side)

        def prepare(f: np.ndarray) -> flow.PreparedFrame:
            with timed(st, "grey"):
                return flow.prepare_frame(f, scale)

        prepared = {s.index: [self._pool.submit(prepare, f) for f in s.frames] for s in group}

        mc_in_pool = not self._mc_on_device

        def analyse(job: tuple[_Shot, int]) -> tuple[flow.PairMotion, float | None] | Exception:
            s, t = job
            try:
                # Futures submitted before this job: already started (FIFO pool), so no deadlock.
                a, b = prepared[s.index][t].result(), prepared[s.index][t + 1].result()
                with timed(st, "flow"):
                    fw, bw = flow.pair_flows(a, b, cfg.flow_preset, cfg.backward_flow_preset)
                with timed(st, "warp"):
                    r = flow.measure_pair(a, b, fw, bw, scale=scale, moving_threshold_px=cfg.moving_threshold_px)
                if not mc_in_pool:
                    return r, None
                with timed(st, "mc_ssim"):
                    mc = ssim_hwc_uint8(a.rgb, r.warped, r.valid)
                return r.without_images(), mc
            except Exception as exc:  # isolate the shot, not the batch
                return exc

        wh, ww = max(1, round(h * scale)), max(1, round(w * scale))
        if mc_in_pool:
            # Results hold statistics only: no memory bound on the look-ahead.
            chunk, window = 4 * cfg.resolved_workers(), 1 << 30
        else:
            # Half the memory bound for the chunk's own buffers, half for ssim_between.
            per_pair = _MC_MAPS_PER_PAIR * 3 * wh * ww * 4
            chunk = max(1, int(cfg.max_batch_bytes // 2 // per_pair))
            # Enough pairs per SSIM pass to keep every flow worker busy meanwhile.
            chunk = min(chunk, 4 * cfg.resolved_workers())
            # Pairs analysed ahead of the SSIM passes hold a warped frame and a mask
            # (4 bytes per working pixel): a quarter of the memory bound for those.
            window = max(2 * chunk, int(cfg.max_batch_bytes // 4 // (4 * wh * ww)))
        run = _MotionRun(scale=scale, chunk=chunk, window=window, prepared=prepared, analyse=analyse, pool=self._pool)
        run.jobs = [(s, t) for s in group for t in range(len(s.frames) - 1)]
        run.top_up()
        return run

    def _finish_motion(self, run: _MotionRun, group: list[_Shot], h: int, w: int) -> None:
        """Motion-compensated SSIM of each chunk of analysed pairs, then per-shot motion metrics."""
        cfg = self.config
        stats: dict[int, list[tuple[flow.PairMotion, float]]] = defaultdict(list)
        while any(s.error is None for s in group):
            part = run.take_chunk()
            if not part:
                break
            good = []
            for (s, t), res in part:
                if isinstance(res, Exception):
                    if s.error is None:
                        s.error = f"optical flow failed on pair {t}: {type(res).__name__}: {res}"
                elif s.error is None:
                    r, mc_value = res
                    if mc_value is None:
                        good.append((s, t, r))
                    else:
                        stats[s.index].append((r, mc_value))
            if not good:
                continue
            with timed(self.stage_times, "mc_ssim"):
                x = to_device_float([run.prepared[s.index][t].result().rgb for s, t, _ in good], self.device)
                y = to_device_float([r.warped for _, _, r in good], self.device)
                mask = torch.from_numpy(np.stack([r.valid for _, _, r in good]))[:, None].to(self.device)
                mc = ssim_between(x, y, 1.0, mask=mask, max_batch_bytes=cfg.max_batch_bytes // 2)
                mc = mc.double().cpu().numpy()
                del x, y, mask
            for (s, _, r), v in zip(good, mc, strict=True):
                # Keep statistics only; the warped frames are dropped with the chunk.
                stats[s.index].append((r.without_images(), float(v)))
        scale = run.scale

        for s in group:
            if s.error is not None:
                continue
            pm = [r for r, _ in stats[s.index]]
            mc = np.array([v for _, v in stats[s.index]])
            ss = s.ssim
            if ss is None or len(mc) != len(ss):
                n_ssim = 0 if ss is None else len(ss)
                raise RuntimeError(f"shot {s.index}: {len(mc)} motion pairs for {n_ssim} SSIM pairs")
            warp = np.array([r.warp_error for r in pm])
            p95_norm = float(np.mean([r.mag_p95_norm for r in pm]))
            s.metrics.update(
                n_frames=float(len(s.frames)),
                n_pairs=float(len(ss)),
                height=float(h),
                width=float(w),
                ssim_mean=float(ss.mean()),
                ssim_min=float(ss.min()),
                ssim_worst_pair=float(ss.argmin()),
                mc_ssim_mean=float(mc.mean()),
                mc_ssim_min=float(mc.min()),
                mc_ssim_worst_pair=float(mc.argmin()),
                warp_error_mean=float(warp.mean()),
                warp_error_max=float(warp.max()),
                valid_fraction_mean=float(np.mean([r.valid_fraction for r in pm])),
                flicker=flow.flicker_index([r.brightness_residual for r in pm]),
                motion_mean_px=float(np.mean([r.mag_mean_px for r in pm])),
                motion_p95_px=float(np.mean([r.mag_p95_px for r in pm])),
                motion_mean_norm=float(np.mean([r.mag_mean_norm for r in pm])),
                motion_p95_norm=p95_norm,
                motion_moving_fraction=float(np.mean([r.moving_fraction for r in pm])),
                motion_level=motion_level(p95_norm, cfg.scales),
                expected_motion=s.expected,
                flow_scale=scale,
            )

    def _start_consistency(self, s: _Shot) -> _ConsistencyJobs:
        """Queue the reference's and sampled frames' keypoints (and weight-free embeddings) on the pool."""
        st = self.stage_times
        ref = s.frames[0] if s.reference is None else s.reference
        idx = cons.sample_indices(len(s.frames), self.config.consistency_max_frames, s.reference is None)
        frames = [ref, *(s.frames[i] for i in idx)]

        def timed_call(fn: Callable[[np.ndarray], T]) -> Callable[[np.ndarray], T]:
            def call(f: np.ndarray) -> T:
                with timed(st, "consistency"):
                    return fn(f)

            return call

        backend = self.embedding_backend
        embeddings = None
        if type(backend) is cons.WeightFreeEmbedding:  # per-frame jobs, no nested pool.map
            embeddings = [self._pool.submit(timed_call(cons.weight_free_features), f) for f in frames]
        keypoints = [self._pool.submit(timed_call(cons.orb_keypoints), f) for f in frames]
        return _ConsistencyJobs(indices=idx, frames=frames, embeddings=embeddings, keypoints=keypoints)

    def _finish_consistency(self, s: _Shot, jobs: _ConsistencyJobs) -> None:
        with timed(self.stage_times, "consistency"):
            self._consistency(s, jobs)

    def _consistency(self, s: _Shot, jobs: _ConsistencyJobs) -> None:
        cfg = self.config
        ref_is_first = s.reference is None
        idx = jobs.indices
        ref, *sampled = jobs.frames
        backend = self.embedding_backend
        if jobs.embeddings is not None:
            embs = torch.from_numpy(np.stack([f.result() for f in jobs.embeddings]))
            e_ref, e_frames = embs[0], embs[1:]
        elif isinstance(backend, cons.WeightFreeEmbedding):
            embs = torch.from_numpy(np.stack(backend.embed_uint8(jobs.frames)))
            e_ref, e_frames = embs[0], embs[1:]
        else:
            e_ref = backend.embed(to_device_float([ref], self.device))[0]
            e_frames = backend.embed(to_device_float(sampled, self.device))
        if e_frames.ndim != 2 or e_frames.shape[0] != len(sampled) or e_ref.ndim != 1:
            raise ValueError(
                f"embedding backend {backend.name!r} returned shapes {tuple(e_ref.shape)}, "
                f"{tuple(e_frames.shape)}; expected [D] and [{len(sampled)}, D]"
            )
        if not (bool(torch.isfinite(e_ref).all()) and bool(torch.isfinite(e_frames).all())):
            raise ValueError(f"embedding backend {backend.name!r} returned non-finite values")
        emb = cons.embedding_similarity(e_ref.cpu(), e_frames.cpu()).tolist()

        kps = [f.result() for f in jobs.keypoints]
        used = kps[0].count >= cons.MIN_REFERENCE_KEYPOINTS
        kp = [cons.keypoint_agreement(kps[0], k) for k in kps[1:]] if used else None
        per_frame = cons.combine(emb, kp, cfg.keypoint_weight)
        s.metrics.update(
            consistency=float(np.mean(per_frame)),
            consistency_min=float(np.min(per_frame)),
            consistency_embedding=float(np.mean(emb)),
            consistency_keypoints=float(np.mean(kp)) if kp is not None else float(np.mean(emb)),
            consistency_keypoints_used=1.0 if used else 0.0,
            consistency_frames=float(len(idx)),
            consistency_reference_is_first_frame=1.0 if ref_is_first else 0.0,
        )

    def _composite(self, s: _Shot) -> None:
        m = s.metrics
        sub = subscores(
            mc_ssim_mean=m["mc_ssim_mean"],
            mc_ssim_min=m["mc_ssim_min"],
            warp_error=m["warp_error_mean"],
            flicker=m["flicker"],
            level=m["motion_level"],
            expected_motion=s.expected,
            consistency=m["consistency"],
            scales=self.config.scales,
        )
        m.update({f"score_{k}": v for k, v in sub.items()})
        m["composite"] = combine_composite(sub, self.config.weights)
        bad = sorted(k for k, v in m.items() if not math.isfinite(v))
        if bad:
            s.error = f"non-finite metrics {bad}; input frames are likely degenerate"
            s.metrics = {}
