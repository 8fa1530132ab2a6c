"""Benchmark of Tower's SSIM path against other SSIM implementations, and of the Scorer.

Run ``python -m bench.scoring`` (``make bench-scoring``) on CPU, or
``python -m bench.scoring --gpu`` on a CUDA machine. Results are written to the
``## Scoring`` section of docs/BENCHMARKS.md between the markers
``<!-- scoring:begin -->`` / ``<!-- scoring:end -->`` (GPU:
``<!-- scoring-gpu:begin -->`` / ``<!-- scoring-gpu:end -->``); the rest of the
file is left as it is.

Method (CPU):

* Workload: 33 frames of 3x512x512 float32 in [0, 1] (a band-limited texture
  panning 2 px/frame), i.e. 32 consecutive pairs, identical for every contender.
* Every torch contender runs with the same ``torch.set_num_threads`` (default:
  all cores). scikit-image is NumPy/SciPy and single-threaded by design.
* One warm-up call, then ``--repeats`` timed calls per contender, interleaved
  round-robin so that load from other processes hits all contenders alike;
  the median is reported as pairs/s.
* Peak memory: each contender runs again in a fresh subprocess with glibc's
  ``MALLOC_MMAP_THRESHOLD_=65536``, so that every large buffer is its own mmap
  and is returned to the OS on free (RSS then tracks live memory instead of
  the allocator's cache). After a warm-up call the peak-RSS counter is reset
  (``/proc/self/clear_refs`` = 5); the reported peak is ``VmHWM`` after one call
  minus ``VmRSS`` before it: every byte the call had live at its high point,
  torch and NumPy alike (tracemalloc would miss torch's allocations). Divided
  by 32 pairs for the per-pair figure.

Method (CPU, the Scorer against its own SSIM):

* In one process, ``--scorer-repeats`` rounds (after a warm-up), each timing in
  turn ``ssim_pairs`` on the float frames, the Scorer on the same 33 frames as
  PNG files (what the scorer agent passes) and the Scorer on the uint8 frames
  as a tensor. Load from other processes on a shared machine hits all three
  alike; the ratio is Scorer pairs/s / ssim_pairs pairs/s, reported as the
  ratio of the medians with the spread of the per-round ratios.
* Stage profile: during the PNG runs ``Scorer.stage_times`` collects seconds
  per stage (scoring/profile.py: pool stages summed over worker threads, torch
  stages as wall time on the calling thread); the table gives the median over
  rounds in ms per pair. Pool stages are summed over the worker threads, which
  run side by side, so the stages add up to more than the wall time per pair.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.report import BENCHMARKS as BENCHMARKS_MD
from bench.report import write_section

N_FRAMES = 33
SIZE = 512
PAIRS = N_FRAMES - 1
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ workload


def make_frames(n: int = N_FRAMES, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """[n, size, size, 3] uint8: a band-limited colour texture panning 2 px/frame."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((size, size, 3)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 3.0)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    frames = [np.roll(tex, shift=(t * 2, t), axis=(1, 0)) for t in range(n)]
    return (np.stack(frames) * 255.0 + 0.5).astype(np.uint8)


def float_frames(u8: np.ndarray) -> torch.Tensor:
    """Float [N, 3, H, W] contiguous NCHW (the layout a generic caller would pass)."""
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


# --------------------------------------------------------------- contenders


def _contenders() -> dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
    """name -> (border convention, fn(frames[N,3,H,W]) -> per-pair SSIM [N-1])."""
    from scoring import ssim_pairs

    out: dict[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = {
        "tower ssim_pairs": ("reflect (torchmetrics)", lambda x: ssim_pairs(x, 1.0)),
        "tower ssim_pairs, one pass": ("reflect (torchmetrics)", lambda x: ssim_pairs(x, 1.0, chunk_frames=x.shape[0])),
    }
    from torchmetrics.functional.image import structural_similarity_index_measure as tm

    out["torchmetrics"] = (
        "reflect",
        lambda x: tm(x[:-1], x[1:], data_range=1.0, reduction="none"),
    )
    try:
        import pytorch_msssim

        out["pytorch-msssim"] = (
            "valid (no padding)",
            lambda x: pytorch_msssim.ssim(
                x[:-1], x[1:], data_range=1.0, size_average=False, win_size=11, win_sigma=1.5
            ),
        )
    except ImportError:
        print("bench: pytorch-msssim is not installed (make venv installs it); not compared", file=sys.stderr)
    try:
        import kornia

        out["kornia"] = (
            "reflect",
            lambda x: kornia.metrics.ssim(x[:-1], x[1:], 11, max_val=1.0, eps=0.0).mean(dim=(1, 2, 3)),
        )
    except ImportError:
        print("bench: kornia is not installed (make venv installs it); not compared", file=sys.stderr)
    try:
        from skimage.metrics import structural_similarity

        def sk(x: torch.Tensor) -> torch.Tensor:
            a = x.numpy()
            vals = [
                structural_similarity(
                    a[i],
                    a[i + 1],
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                    data_range=1.0,
                    channel_axis=0,
                )
                for i in range(a.shape[0] - 1)
            ]
            return torch.tensor(vals)

        out["scikit-image (1 thread)"] = ("scipy reflect, 5 px border cropped", sk)
    except ImportError:
        print("bench: scikit-image is not installed (make venv installs it); not compared", file=sys.stderr)
    return out


# ------------------------------------------------------------------ memory


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _peak_of(fn: Callable[[], object]) -> int:
    """Peak extra RSS of one call (see module docstring)."""
    fn()  # warm-up: lazy imports, kernel selection, thread pools
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn()
    return max(0, _status("VmHWM") - base)


def _measure_memory_child(name: str, threads: int) -> None:
    torch.set_num_threads(threads)
    u8 = make_frames()
    if name == "tower Scorer end to end":
        from scoring import Scorer, ScorerConfig, ShotInput

        with tempfile.TemporaryDirectory() as d:
            paths = _write_pngs(u8, Path(d))
            with Scorer(ScorerConfig(device="cpu")) as scorer:
                peak = _peak_of(lambda: scorer.score_shots([ShotInput(paths, expected_motion=0.5)]))
    else:
        x = float_frames(u8)
        fn = _contenders()[name][1]
        peak = _peak_of(lambda: fn(x))
    print(json.dumps({"peak": peak}))


def measure_memory(name: str, threads: int) -> int | None:
    """Run the memory measurement for one contender in a fresh process."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scoring", "--memory-child", name, "--threads", str(threads)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        print(f"memory measurement of {name!r} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["peak"])


# ------------------------------------------------------------------ timing


def _write_pngs(u8: np.ndarray, folder: Path) -> list[Path]:
    import cv2

    paths = []
    for i, f in enumerate(u8):
        p = folder / f"{i:04d}.png"
        cv2.imwrite(str(p), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        paths.append(p)
    return paths


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per call, warm-up first, contenders interleaved per repeat."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


#: Before the Scorer was reworked for issue 11 (item 2), kept as the baseline:
#: the figures this section showed on 2026-11-26 (commit cb7e600), and a run of
#: that code (tower-scoring/1.0.0) with this method on 2026-12-01, alternating
#: with runs of 2.0.0 on the same machine (3 rounds; the median of three such
#: runs by ratio). 1.0.0 has no stage_times: its stages were timed by wrapping
#: the same functions (decode_image, prepare_frame, dis_flow inside
#: analyse_pair, ssim_between, _temporal_ssim, the consistency features).
BASELINE_RUNS: list[dict[str, object]] = [
    {
        "run": "2026-11-26, commit cb7e600 (Scorer timed after the contenders, not interleaved)",
        "version": "tower-scoring/1.0.0",
        "ssim": 38.3,
        "png": 2.9,
        "u8": None,
        "ratio": 2.9 / 38.3,
        "spread": None,
    },
    {
        "run": "2026-12-01, before (this method, 3 rounds)",
        "version": "tower-scoring/1.0.0",
        "ssim": 50.6,
        "png": 10.3,
        "u8": None,
        "ratio": 0.204,
        "spread": "0.20-0.21",
    },
]
#: ms per pair of the 2026-12-01 "before" run, same stage definitions.
BASELINE_STAGES: dict[str, float] | None = {
    "decode": 7.31,
    "ssim": 17.21,
    "grey": 0.33,
    "flow": 64.54,
    "warp": 19.91,
    "mc_ssim": 28.02,
    "consistency": 3.93,
    "composite": 0.0,
}
BASELINE_STAGES_NOTE = "96.7"


@dataclass
class ScorerRun:
    """The Scorer against its own SSIM, interleaved (see module docstring)."""

    ssim_s: list[float]
    png_s: list[float]
    u8_s: list[float]
    stages: dict[str, float]  # median seconds per call, PNG runs
    workers: int

    @staticmethod
    def rate(seconds: list[float]) -> float:
        return PAIRS / statistics.median(seconds)

    @property
    def ratio(self) -> float:
        return self.rate(self.png_s) / self.rate(self.ssim_s)

    @property
    def round_ratios(self) -> list[float]:
        return [a / b for a, b in zip(self.ssim_s, self.png_s, strict=True)]


def run_scorer_vs_ssim(u8: np.ndarray, repeats: int) -> ScorerRun:
    """ssim_pairs vs Scorer (PNG files, uint8 tensor), interleaved, with the Scorer's stage profile."""
    from scoring import Scorer, ScorerConfig, ShotInput, ssim_pairs
    from scoring.profile import STAGES, StageTimes

    x = float_frames(u8)
    frames_u8 = torch.from_numpy(u8).permute(0, 3, 1, 2)
    with tempfile.TemporaryDirectory() as d, Scorer(ScorerConfig(device="cpu")) as scorer:
        paths = _write_pngs(u8, Path(d))
        png_shot = [ShotInput(paths, expected_motion=0.5)]
        u8_shot = [ShotInput(frames_u8, expected_motion=0.5)]
        for shot in (png_shot, u8_shot):
            result = scorer.score_shots(shot)[0]
            if result.status != "ok":
                raise RuntimeError(f"scorer failed on benchmark frames: {result.reason}")
        ssim_pairs(x, 1.0)
        ssim_s: list[float] = []
        png_s: list[float] = []
        u8_s: list[float] = []
        profiles: list[dict[str, float]] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ssim_pairs(x, 1.0)
            ssim_s.append(time.perf_counter() - t0)
            times = StageTimes()
            scorer.stage_times = times
            t0 = time.perf_counter()
            scorer.score_shots(png_shot)
            png_s.append(time.perf_counter() - t0)
            scorer.stage_times = None
            profiles.append(times.snapshot())
            t0 = time.perf_counter()
            scorer.score_shots(u8_shot)
            u8_s.append(time.perf_counter() - t0)
        workers = scorer.config.resolved_workers()
    stages = {k: statistics.median(p[k] for p in profiles) for k in STAGES}
    return ScorerRun(ssim_s=ssim_s, png_s=png_s, u8_s=u8_s, stages=stages, workers=workers)


BATCH_SHOTS, BATCH_FRAMES, BATCH_SIZE = 4, 10, 256  # a pipeline shot: 10 frames at 256x256


def run_batching(device: torch.device, repeats: int) -> dict[str, float]:
    """Shots per second when the Scorer gets the shots of several events one call each (what a
    scorer worker does) or all in one call (what a batching worker would do), interleaved."""
    from scoring import Scorer, ScorerConfig, ShotInput

    shots = [ShotInput(torch.from_numpy(make_frames(BATCH_FRAMES, BATCH_SIZE, seed=i)).permute(0, 3, 1, 2),
                       expected_motion=0.5) for i in range(BATCH_SHOTS)]
    with Scorer(ScorerConfig(device=str(device))) as scorer:
        def one_by_one() -> None:
            for shot in shots:
                scorer.score_shots([shot])
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        def together() -> None:
            scorer.score_shots(shots)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        secs = interleaved_medians({"one call per shot": one_by_one, f"{BATCH_SHOTS} shots per call": together}, repeats)
    return {name: BATCH_SHOTS / s for name, s in secs.items()}


def format_batching(rates: dict[str, float], device: str, repeats: int) -> str:
    rows = [f"| {name} | {rate:.2f} |" for name, rate in rates.items()]
    one, together = rates.values()
    verdict = "faster" if together > one else "slower"
    return "\n".join([
        f"Reproduce: `python -m bench.scoring --batching{' --gpu' if device != 'cpu' else ''}`. Device: {device}; "
        f"{BATCH_SHOTS} shots of {BATCH_FRAMES} frames 3x{BATCH_SIZE}x{BATCH_SIZE} (uint8 tensors), median of "
        f"{repeats} interleaved rounds; {time.strftime('%Y-%m-%d')}.",
        "",
        "| Scorer calls | shots/s |",
        "|---|---:|",
        *rows,
        "",
        f"One call for {BATCH_SHOTS} shots is **{together / one:.2f}x** one call per shot here ({verdict}).",
    ])


@dataclass
class Row:
    name: str
    border: str
    seconds: float
    max_abs_diff: float | None
    peak_bytes: int | None


def run_cpu(
    repeats: int, threads: int, with_memory: bool, scorer_repeats: int
) -> tuple[list[Row], dict[str, str], ScorerRun]:
    torch.set_num_threads(threads)
    u8 = make_frames()
    x = float_frames(u8)
    contenders = _contenders()
    oracle = contenders["torchmetrics"][1](x)
    diffs = {k: float((fn(x).double() - oracle.double()).abs().max()) for k, (_, fn) in contenders.items()}
    secs = interleaved_medians({k: (lambda fn=fn: fn(x)) for k, (_, fn) in contenders.items()}, repeats)
    scorer_run = run_scorer_vs_ssim(u8, scorer_repeats)

    from scoring import SCORER_VERSION

    rows = [Row(k, contenders[k][0], secs[k], diffs[k], None) for k in contenders]
    rows.append(
        Row("tower Scorer end to end", "PNG files in, ShotScore out", statistics.median(scorer_run.png_s), None, None)
    )
    if with_memory:
        for r in rows:
            r.peak_bytes = measure_memory(r.name, threads)
    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": str(os.cpu_count()),
        "torch": torch.__version__,
        "threads": str(threads),
        "workers": str(scorer_run.workers),
        "scorer_version": SCORER_VERSION,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    return rows, info, scorer_run


# -------------------------------------------------------------------- GPU


def ssim_traffic_bytes(c: int, h: int, w: int, itemsize: int = 4) -> dict[str, float]:
    """Bytes through device memory per consecutive pair of a long shot, counted
    as reads + writes of every op that scoring.ssim._consecutive_chunk and
    scoring.frames.to_device_float run (one frame's per-frame work plus one
    pair's work). The derivation is spelled out in docs/SCORING.md."""
    u = c * h * w * itemsize  # one float map
    p = c * (h + 10) * (w + 10) * itemsize  # one reflect-padded float map
    hp = c * h * (w + 10) * itemsize  # a map after the vertical blur pass
    u8 = c * h * w  # one uint8 frame
    conversion = (u8 + u) + 2 * u  # uint8 -> float32, then in-place / 255
    per_frame = (
        u  # chunk mean (shift)
        + (u + p)
        + 2 * p  # reflect pad, in-place shift
        + 2 * p
        + 4 * p  # x*x, cat([x, x^2])
        + (2 * p + 2 * hp)
        + (2 * hp + 2 * u)  # separable blur of the 2-map stack
        + 2 * u  # mu_s^2
        + 3 * u
        + 2 * u
        + 2 * u  # var = clamp(E x^2 - mu_s^2) + c2/2
        + 2 * u  # mu = mu_s + shift
        + 2 * u
        + 2 * u  # a = mu^2 + c1/2
    )
    per_pair = (
        3 * p  # x_i * x_j
        + (p + hp)
        + (hp + u)  # separable blur of 1 map
        + 3 * u
        + 3 * u
        + 2 * u  # mu_s,i mu_s,j; 2 E[xy] - 2 (.); + c2
        + 3 * u
        + 2 * u
        + 3 * u  # mu_i mu_j; c1 + 2 (.); multiply
        + 3 * u
        + 3 * u
        + 3 * u  # a_i + a_j; b_i + b_j; multiply
        + 3 * u
        + u  # divide; mean
    )
    return {
        "kernel": float(per_frame + per_pair),
        "conversion": float(conversion),
        "fused_minimum": float(u8),  # read each uint8 frame once, write one scalar
        "upload": float(u8),  # uint8 frame over PCIe, once per frame
    }


def run_gpu(device: torch.device, repeats: int) -> tuple[list[tuple[str, float]], dict[str, str]]:
    """Pairs/s on the device: kernel only (frames resident) and end to end from host uint8.

    Device-agnostic so it can be exercised on CPU; ``main`` only calls it for CUDA.
    """
    from scoring import ssim_pairs
    from scoring.frames import to_device_float

    is_cuda = device.type == "cuda"

    def sync() -> None:
        if is_cuda:
            torch.cuda.synchronize(device)

    u8 = make_frames()
    frames_list = list(u8)
    resident = to_device_float(frames_list, device)

    def kernel() -> None:
        ssim_pairs(resident, 1.0)
        sync()

    def end_to_end() -> None:
        ssim_pairs(to_device_float(frames_list, device), 1.0).cpu()
        sync()

    # Memory bandwidth actually achievable on this card: a large device copy
    # (read + write). Host->device bandwidth from pinned memory.
    big = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device=device)
    dst = torch.empty_like(big)
    host = torch.empty(big.numel(), dtype=torch.uint8).pin_memory() if is_cuda else torch.empty_like(big)

    def d2d() -> None:
        dst.copy_(big)
        sync()

    def h2d() -> None:
        dst.copy_(host, non_blocking=True)
        sync()

    secs = interleaved_medians({"kernel": kernel, "e2e": end_to_end, "d2d": d2d, "h2d": h2d}, repeats)
    dev_bw = 2 * big.numel() / secs["d2d"]
    h2d_bw = big.numel() / secs["h2d"]
    traffic = ssim_traffic_bytes(3, SIZE, SIZE)
    peak = None
    if is_cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        kernel()
        peak = torch.cuda.max_memory_allocated(device) - base
    kernel_bound = dev_bw / traffic["kernel"]
    e2e_bound = min(dev_bw / (traffic["kernel"] + traffic["conversion"]), h2d_bw / traffic["upload"])
    rows = [
        ("measured: ssim_pairs, float frames resident on device", PAIRS / secs["kernel"]),
        ("bound: that kernel sequence at measured device bandwidth", kernel_bound),
        ("measured: end to end, host uint8 -> upload -> float -> ssim_pairs", PAIRS / secs["e2e"]),
        ("bound: end to end, min(device traffic incl. conversion, uint8 upload)", e2e_bound),
        ("bound: ideal fused single-pass kernel at measured device bandwidth", dev_bw / traffic["fused_minimum"]),
        ("bound: uint8 upload alone at measured host->device bandwidth", h2d_bw / traffic["upload"]),
    ]
    info = {
        "device": torch.cuda.get_device_name(device) if is_cuda else str(device),
        "torch": torch.__version__,
        "measured device bandwidth (copy, GB/s)": f"{dev_bw / 1e9:.0f}",
        "measured host->device bandwidth (pinned, GB/s)": f"{h2d_bw / 1e9:.1f}",
        "device bytes per pair, kernel (MB)": f"{traffic['kernel'] / 1e6:.0f}",
        "kernel efficiency vs bandwidth bound": f"{PAIRS / secs['kernel'] / kernel_bound:.0%}",
        "peak device memory per pair (MiB)": "n/a" if peak is None else f"{peak / PAIRS / 2**20:.1f}",
    }
    return rows, info


# ------------------------------------------------------------------ report


def publish(tag: str, title: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Write ``## title`` + body between ``<!-- tag:begin/end -->`` (bench.report's
    convention: the heading lives inside the markers), leaving other sections alone."""
    write_section(tag, f"## {title}\n\n{body}", path)


def _mib(b: int | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f}"


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def format_scorer(run: ScorerRun, info: dict[str, str]) -> list[str]:
    """The 'Scorer vs its SSIM' part of the CPU section: rates, ratio, stage profile, baseline."""
    from scoring.profile import STAGES

    rates = {k: [PAIRS / t for t in v] for k, v in (("ssim", run.ssim_s), ("png", run.png_s), ("u8", run.u8_s))}
    n = len(run.ssim_s)
    lines = [
        "### The Scorer against its own SSIM",
        "",
        f"Same frames, {n} interleaved rounds in one process (`--scorer-repeats`): `ssim_pairs` on the float "
        "frames, then the Scorer end to end from the 33 PNG files (what the scorer agent passes: decoding, "
        "temporal SSIM, flow, warping, motion-compensated SSIM, consistency, composite), then the Scorer from "
        f"the uint8 frames as a tensor. Scorer worker threads = {run.workers}, torch threads = "
        f"{info['threads']}. Rates are medians, [min-max] over the rounds; ratio = Scorer (PNG) pairs/s / "
        "`ssim_pairs` pairs/s, the ratio of the medians and [min-max] of the per-round ratios.",
        "",
        "| run | scorer version | ssim_pairs pairs/s | Scorer pairs/s, PNG files | Scorer pairs/s, uint8 frames "
        "| ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for b in BASELINE_RUNS:
        u8 = "-" if b["u8"] is None else f"{b['u8']:.1f}"
        spread = "" if b["spread"] is None else f" [{b['spread']}]"
        lines.append(
            f"| {b['run']} | {b['version']} | {b['ssim']:.1f} | {b['png']:.1f} | {u8} | {b['ratio']:.2f}{spread} |"
        )
    lines.append(
        f"| this run, {info['date']} | {info['scorer_version']} | {run.rate(run.ssim_s):.1f} "
        f"[{_spread(rates['ssim'])}] | {run.rate(run.png_s):.1f} [{_spread(rates['png'])}] "
        f"| {run.rate(run.u8_s):.1f} [{_spread(rates['u8'])}] | **{run.ratio:.2f}** [{_spread(run.round_ratios)}] |"
    )
    wall = 1000 * statistics.median(run.png_s) / PAIRS
    lines += [
        "",
        "Stage profile of the PNG runs, ms per pair (median over rounds; `Scorer.stage_times`, "
        "scoring/profile.py). `ssim` (torch, all threads) and `composite` are wall time on the calling thread; "
        "the other stages run on the pool and are summed over its worker threads, which run side by side, so "
        "the sum exceeds the wall time. In 1.0.0 `mc_ssim` was a torch pass on the calling thread; in 2.0.0 it "
        "runs per pair in the pool on CPU.",
        "",
        "| stage | " + ("before (tower-scoring/1.0.0) | " if BASELINE_STAGES else "") + "this run |",
        "|---|" + ("---:|" if BASELINE_STAGES else "") + "---:|",
    ]
    for k in STAGES:
        before = f" {BASELINE_STAGES.get(k, 0.0):.2f} |" if BASELINE_STAGES else ""
        lines.append(f"| {k} |{before} {1000 * run.stages[k] / PAIRS:.2f} |")
    total_before = f" {sum(BASELINE_STAGES.values()):.1f} |" if BASELINE_STAGES else ""
    lines.append(f"| sum of stages |{total_before} {1000 * sum(run.stages.values()) / PAIRS:.1f} |")
    wall_before = f" {BASELINE_STAGES_NOTE} |" if BASELINE_STAGES else ""
    lines.append(f"| wall time per pair |{wall_before} {wall:.1f} |")
    return lines


def format_cpu(rows: list[Row], info: dict[str, str], repeats: int, scorer_run: ScorerRun | None = None) -> str:
    fastest_other = max(PAIRS / r.seconds for r in rows if not r.name.startswith("tower"))
    ours = next(r for r in rows if r.name == "tower ssim_pairs")
    lines = [
        "Reproduce: `make bench-scoring` (`python -m bench.scoring`).",
        "",
        f"Machine: {info['cpu']}, {info['cpu_count']} logical CPUs, torch {info['torch']}, "
        f"Python {info['python']}; torch threads = {info['threads']} for every torch contender; "
        f"Scorer worker threads = {info['workers']}; {info['scorer_version']}; {info.get('date', '')}.",
        "",
        f"Workload: {N_FRAMES} frames of 3x{SIZE}x{SIZE} float32 -> {PAIRS} consecutive pairs. "
        f"Median of {repeats} interleaved runs after a warm-up. Peak = extra RSS at the high point of one "
        "call, measured in a fresh process with `MALLOC_MMAP_THRESHOLD_=65536` and `/proc/self/clear_refs` "
        "(see bench/scoring.py); per pair = peak / 32.",
        "",
        "| implementation | border convention | pairs/s | x torchmetrics | peak MiB | MiB/pair "
        "| max abs diff vs torchmetrics |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    tm_rate = PAIRS / next(r.seconds for r in rows if r.name == "torchmetrics")
    for r in rows:
        rate = PAIRS / r.seconds
        diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.1e}"
        per_pair = "n/a" if r.peak_bytes is None else f"{r.peak_bytes / PAIRS / 2**20:.1f}"
        lines.append(
            f"| {r.name} | {r.border} | {rate:.1f} | {rate / tm_rate:.2f} | {_mib(r.peak_bytes)} | {per_pair} "
            f"| {diff} |"
        )
    lines += [
        "",
        f"tower ssim_pairs vs the fastest other contender: {PAIRS / ours.seconds / fastest_other:.2f}x. "
        "The end-to-end row is the median of the PNG runs below (its own rounds, interleaved with "
        "`ssim_pairs`, not with the other contenders). Its MiB/pair column is the peak divided by 32 pairs.",
    ]
    if scorer_run is not None:
        lines += ["", *format_scorer(scorer_run, info)]
    return "\n".join(lines)


def format_gpu(rows: list[tuple[str, float]], info: dict[str, str], repeats: int) -> str:
    lines = [
        "Reproduce: `make bench-scoring-gpu` (`python -m bench.scoring --gpu`).",
        "",
        "; ".join(f"{k}: {v}" for k, v in info.items()) + f"; median of {repeats} runs.",
        "",
        f"| {N_FRAMES} frames 3x{SIZE}x{SIZE}, {PAIRS} pairs | pairs/s |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {rate:,.0f} |" for name, rate in rows]
    lines += ["", "Bounds are explained in docs/SCORING.md (Performance)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scoring", description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="benchmark on CUDA (end to end from uint8 frames)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--scorer-repeats", type=int, default=9, help="interleaved rounds of ssim_pairs / Scorer (PNG) / Scorer (uint8)"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads for all")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-contender memory subprocesses")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/BENCHMARKS.md alone")
    ap.add_argument(
        "--scorer-only",
        action="store_true",
        help="only the Scorer against ssim_pairs (rates, ratio, stage profile); prints, never writes",
    )
    ap.add_argument("--batching", action="store_true",
                    help="only one call per shot against several shots per call (with --gpu: on CUDA)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_child:
        _measure_memory_child(args.memory_child, args.threads)
        return 0

    if args.batching:
        device = torch.device("cuda" if args.gpu else "cpu")
        if args.gpu and not torch.cuda.is_available():
            print("bench.scoring --batching --gpu needs a CUDA device", file=sys.stderr)
            return 2
        torch.set_num_threads(args.threads)
        body = format_batching(run_batching(device, args.repeats), device.type, args.repeats)
        tag, title = f"scoring-batching-{device.type}", f"Scoring: shots per call ({device.type})"
    elif args.gpu:
        if not torch.cuda.is_available():
            print(
                "bench.scoring --gpu needs a CUDA device, but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it on a GPU machine, "
                "or run `python -m bench.scoring` for the CPU benchmark.",
                file=sys.stderr,
            )
            return 2
        rows, info = run_gpu(torch.device("cuda"), args.repeats)
        body = format_gpu(rows, info, args.repeats)
        tag, title = "scoring-gpu", "Scoring (GPU)"
    elif args.scorer_only:
        torch.set_num_threads(args.threads)
        from scoring import SCORER_VERSION

        run = run_scorer_vs_ssim(make_frames(), args.scorer_repeats)
        info = {"threads": str(args.threads), "date": time.strftime("%Y-%m-%d"), "scorer_version": SCORER_VERSION}
        print("\n".join(format_scorer(run, info)))
        return 0
    else:
        cpu_rows, cpu_info, scorer_run = run_cpu(args.repeats, args.threads, not args.no_memory, args.scorer_repeats)
        body = format_cpu(cpu_rows, cpu_info, args.repeats, scorer_run)
        tag, title = "scoring", "Scoring"
    print(body)
    if not args.no_write:
        publish(tag, title, body)
        print(f"\nwrote section '{title}' of {BENCHMARKS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
