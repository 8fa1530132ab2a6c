"""End-to-end Scorer behaviour: the composite must not reward frozen or flickering shots,
results are JSON-safe, and bad input fails cleanly instead of raising."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from scoring import SCORER_VERSION, CompositeWeights, Scorer, ScorerConfig, ShotInput, ShotScore

N = 9  # frames per synthetic shot: 8 pairs, enough for flicker (needs 2+ pairs)
ACTION = 0.9


@pytest.fixture(scope="module")
def shots(shot_factory: Callable[..., torch.Tensor]) -> dict[str, ShotInput]:
    return {
        "static": ShotInput(shot_factory(N), expected_motion=0.0, shot_id="static"),
        "static_flicker": ShotInput(shot_factory(N, flicker=0.05), expected_motion=0.0, shot_id="static_flicker"),
        "frozen_action": ShotInput(shot_factory(N), expected_motion=ACTION, shot_id="frozen_action"),
        "moving_action": ShotInput(shot_factory(N, speed=(3.0, 1.0)), expected_motion=ACTION, shot_id="moving_action"),
        "moving_static": ShotInput(shot_factory(N, speed=(3.0, 1.0)), expected_motion=0.0, shot_id="moving_static"),
    }


@pytest.fixture(scope="module")
def results(cpu_scorer: Scorer, shots: dict[str, ShotInput]) -> dict[str, ShotScore]:
    scored = cpu_scorer.score_shots(list(shots.values()))  # one batched call, all same size
    return dict(zip(shots, scored, strict=True))


def test_all_ok_with_version_and_device(results: dict[str, ShotScore]) -> None:
    for name, r in results.items():
        assert r.status == "ok", (name, r.reason)
        assert r.reason is None
        assert r.shot_id == name
        assert r.scorer_version == SCORER_VERSION
        assert r.device == "cpu"
        assert r.embedding_backend == "weightfree-hist/1"
        assert 0.0 <= r.composite <= 1.0


def test_metrics_are_json_safe(results: dict[str, ShotScore]) -> None:
    for r in results.values():
        assert r.metrics and all(isinstance(v, float) and math.isfinite(v) for v in r.metrics.values())
        json.dumps(r.model_dump(), allow_nan=False)
        assert ShotScore.model_validate_json(r.model_dump_json()) == r


def test_frozen_frames_are_perfectly_stable(results: dict[str, ShotScore]) -> None:
    m = results["frozen_action"].metrics
    assert m["ssim_mean"] == 1.0 and m["ssim_min"] == 1.0
    assert m["motion_level"] < 0.05


def test_frozen_action_scores_below_moving_action(results: dict[str, ShotScore]) -> None:
    frozen, moving = results["frozen_action"], results["moving_action"]
    assert moving.metrics["ssim_mean"] < 0.9  # raw SSIM punishes motion ...
    assert moving.metrics["mc_ssim_mean"] > 0.99  # ... motion compensation does not
    assert frozen.composite < 0.2
    assert moving.composite > 0.8
    assert frozen.composite < moving.composite - 0.5


def test_motion_where_none_was_asked_scores_low(results: dict[str, ShotScore]) -> None:
    assert results["moving_static"].composite < 0.2
    assert results["static"].composite > 0.95


def test_flicker_lowers_stability_and_composite(results: dict[str, ShotScore]) -> None:
    stable, flicker = results["static"].metrics, results["static_flicker"].metrics
    assert flicker["ssim_mean"] < stable["ssim_mean"] - 0.01
    assert flicker["flicker"] == pytest.approx(0.05, abs=0.01)
    assert flicker["warp_error_mean"] > 0.01
    assert results["static_flicker"].composite < 0.6 < results["static"].composite


def test_worst_pair_index(cpu_scorer: Scorer, shot_factory: Callable[..., torch.Tensor]) -> None:
    x = shot_factory(6)
    x[4] = (x[4] + 0.15).clamp(0, 1)  # pairs 3 and 4 touch the glitch; pair 3 is first
    m = cpu_scorer.score_shots([ShotInput(x, 0.0)])[0].metrics
    assert m["ssim_worst_pair"] in (3.0, 4.0)
    assert m["mc_ssim_min"] < m["mc_ssim_mean"]


def test_png_files_score_like_tensors(
    cpu_scorer: Scorer,
    shots: dict[str, ShotInput],
    results: dict[str, ShotScore],
    tmp_path: Path,
    png_writer: Callable[[torch.Tensor, Path], list[Path]],
) -> None:
    paths = png_writer(shots["moving_action"].frames, tmp_path / "shot")
    from_files = cpu_scorer.score_shots([ShotInput([str(p) for p in paths], ACTION, shot_id="moving_action")])[0]
    assert from_files.status == "ok"
    ref = results["moving_action"]
    assert from_files.metrics.keys() == ref.metrics.keys()
    for k, v in ref.metrics.items():
        assert from_files.metrics[k] == pytest.approx(v, abs=1e-6), k


def test_batching_and_chunking_do_not_change_scores(shots: dict[str, ShotInput], results: dict[str, ShotScore]) -> None:
    # A 1 MB bound forces one-pair SSIM chunks and one-pair motion chunks.
    with Scorer(ScorerConfig(device="cpu", workers=2, max_batch_bytes=1_000_000)) as small:
        for name in ("static_flicker", "moving_action"):
            alone = small.score_shots([shots[name]])[0]
            for k, v in results[name].metrics.items():
                if k.endswith("_worst_pair"):
                    continue  # these shots' pairs tie up to rounding, so argmin is arbitrary
                assert alone.metrics[k] == pytest.approx(v, abs=1e-6), (name, k)


def test_reference_other_than_first_frame(
    cpu_scorer: Scorer, shot_factory: Callable[..., torch.Tensor], results: dict[str, ShotScore]
) -> None:
    other = shot_factory(1, seed=11)[0]
    r = cpu_scorer.score_shots([ShotInput(shot_factory(N), 0.0, reference=other)])[0]
    assert r.status == "ok"
    assert r.metrics["consistency_reference_is_first_frame"] == 0.0
    assert r.metrics["consistency"] < results["static"].metrics["consistency"] - 0.2
    assert r.composite < results["static"].composite


class _MeanColour:
    """A toy learned-backend stand-in: per-channel means as the embedding."""

    name = "mean-colour/test"

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=(2, 3))


class _Broken:
    name = "broken/test"

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.full((frames.shape[0], 4), float("nan"))


def test_pluggable_embedding_backend(shot_factory: Callable[..., torch.Tensor]) -> None:
    with Scorer(ScorerConfig(device="cpu", workers=2), embedding_backend=_MeanColour()) as sc:
        r = sc.score_shots([ShotInput(shot_factory(4), 0.0)])[0]
    assert r.status == "ok" and r.embedding_backend == "mean-colour/test"
    assert r.metrics["consistency_embedding"] == pytest.approx(1.0, abs=1e-3)
    with Scorer(ScorerConfig(device="cpu", workers=2), embedding_backend=_Broken()) as sc:
        r = sc.score_shots([ShotInput(shot_factory(4), 0.0)])[0]
    assert r.status == "failed" and "non-finite" in (r.reason or "")


def test_custom_weights_change_composite(shots: dict[str, ShotInput], results: dict[str, ShotScore]) -> None:
    w = CompositeWeights(stability=0, warp=0, flicker=0, motion=0, consistency=1)
    with Scorer(ScorerConfig(device="cpu", workers=2, weights=w)) as sc:
        r = sc.score_shots([shots["frozen_action"]])[0]
    assert r.composite == pytest.approx(results["frozen_action"].metrics["score_consistency"])


# ---------------------------------------------------------------- bad input


def _corrupt_png(folder: Path) -> Path:
    p = folder / "corrupt.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10)
    return p


def test_bad_inputs_fail_with_reason(
    cpu_scorer: Scorer,
    shot_factory: Callable[..., torch.Tensor],
    tmp_path: Path,
    png_writer: Callable[[torch.Tensor, Path], list[Path]],
) -> None:
    good = png_writer(shot_factory(3), tmp_path / "good")
    small = png_writer(shot_factory(1, h=64, w=96), tmp_path / "small")
    nan = shot_factory(3)
    nan[1, 0, 5, 5] = float("nan")
    cases: dict[str, tuple[ShotInput, str]] = {
        "sizes": (ShotInput([*good[:2], small[0]], 0.5), "different sizes"),
        "corrupt": (ShotInput([good[0], _corrupt_png(tmp_path), good[1]], 0.5), "frame 1: corrupt"),
        "missing": (ShotInput([good[0], tmp_path / "nope.png"], 0.5), "frame 1: missing frame file"),
        "one_frame": (ShotInput([good[0]], 0.5), "1 frame"),
        "no_frames": (ShotInput([], 0.5), "0 frame"),
        "one_frame_tensor": (ShotInput(shot_factory(1), 0.5), "1 frame"),
        "nan": (ShotInput(nan, 0.5), "NaN"),
        "range": (ShotInput(shot_factory(3) * 2.0, 0.5), "[0, 1]"),
        "channels": (ShotInput(torch.rand(3, 4, 64, 64), 0.5), "channels"),
        "int_tensor": (ShotInput(torch.zeros(3, 3, 64, 64, dtype=torch.int32), 0.5), "dtype"),
        "tiny": (ShotInput(torch.rand(3, 3, 16, 16), 0.5), "at least 32"),
        "motion_range": (ShotInput(good, 1.5), "expected_motion"),
        "motion_nan": (ShotInput(good, float("nan")), "expected_motion"),
        "motion_type": (ShotInput(good, "fast"), "expected_motion"),  # type: ignore[arg-type]
        "bare_path": (ShotInput(str(good[0]), 0.5), "sequence"),  # type: ignore[arg-type]
        "missing_ref": (ShotInput(good, 0.5, reference=tmp_path / "ref.png"), "reference: missing"),
        "bad_ref_tensor": (ShotInput(good, 0.5, reference=torch.rand(64, 64)), "reference tensor"),
    }
    inputs = [c[0] for c in cases.values()] + [ShotInput(good, 0.5, shot_id="good"), "not a shot"]
    out = cpu_scorer.score_shots(inputs)  # type: ignore[arg-type]
    assert len(out) == len(inputs)
    for (name, (_, expect)), r in zip(cases.items(), out, strict=False):
        assert r.status == "failed", name
        assert r.composite == 0.0 and r.metrics == {}
        assert r.reason and expect in r.reason, (name, r.reason)
        assert r.scorer_version == SCORER_VERSION
    assert out[-2].status == "ok" and out[-2].shot_id == "good"  # one bad shot never fails the others
    assert out[-1].status == "failed" and "ShotInput" in (out[-1].reason or "")


def test_non_iterable_input_returns_empty(cpu_scorer: Scorer) -> None:
    assert cpu_scorer.score_shots(None) == []  # type: ignore[arg-type]


def test_device_selection() -> None:
    auto = Scorer(ScorerConfig(device="auto", workers=1))
    auto.close()
    if torch.cuda.is_available():
        assert auto.device.type == "cuda"
        cuda = Scorer(ScorerConfig(device="cuda", workers=1))
        assert cuda.device.type == "cuda"
        cuda.close()
    else:
        assert auto.device.type == "cpu"
        with pytest.raises(ValueError, match="cuda"):
            Scorer(ScorerConfig(device="cuda"))


def test_inputs_that_break_the_decoder_fail_only_their_own_shot(tmp_path):
    import struct
    import zlib

    import torch

    from scoring import Scorer, ScorerConfig, ShotInput

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    # A PNG whose header claims 60000x60000 pixels: OpenCV refuses it with cv2.error.
    huge = tmp_path / "huge.png"
    huge.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
        + chunk(b"IEND", b"")
    )
    scorer = Scorer(ScorerConfig(device="cpu"))
    good, empty, bomb = scorer.score_shots(
        [
            ShotInput(frames=torch.rand(3, 3, 64, 64), expected_motion=0.5),
            ShotInput(frames=torch.zeros(0, 3, 64, 64), expected_motion=0.5),
            ShotInput(frames=[huge, huge], expected_motion=0.5),
        ]
    )
    assert good.status == "ok"
    assert empty.status == "failed" and "empty" in empty.reason
    assert bomb.status == "failed" and "undecodable image" in bomb.reason


def test_a_transient_device_error_is_raised_as_busy_not_a_failed_score(
    cpu_scorer: Scorer, shot_factory: Callable[..., torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA out of memory says nothing about the frames: the agent must retry, not burn an attempt."""
    from agents.runtime import is_outage
    from scoring import DeviceBusy

    def out_of_memory(*args: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cpu_scorer, "_temporal_ssim", out_of_memory)
    with pytest.raises(DeviceBusy, match="out of memory") as caught:
        cpu_scorer.score_shots([ShotInput(frames=shot_factory(6, speed=(1.0, 0.0)), expected_motion=0.5)])
    assert is_outage(caught.value)
    monkeypatch.undo()
    [score] = cpu_scorer.score_shots([ShotInput(frames=shot_factory(6, speed=(1.0, 0.0)), expected_motion=0.5)])
    assert score.status == "ok"  # the same shot scores once the device is free


def test_other_errors_still_fail_only_their_shot(
    cpu_scorer: Scorer, shot_factory: Callable[..., torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cpu_scorer, "_temporal_ssim", broken)
    [score] = cpu_scorer.score_shots([ShotInput(frames=shot_factory(6, speed=(1.0, 0.0)), expected_motion=0.5)])
    assert score.status == "failed" and "a bug" in (score.reason or "")


# ------------------------------------------------------- speed-related paths


def test_device_and_pool_motion_ssim_agree(shots: dict[str, ShotInput], results: dict[str, ShotScore]) -> None:
    """On CPU, motion-compensated SSIM runs in the worker pool (OpenCV); on an accelerator in
    batched ssim_between passes on the device. Forcing the device path on CPU must give the
    same metrics within 1e-6."""
    with Scorer(ScorerConfig(device="cpu", workers=2, max_batch_bytes=2_000_000)) as sc:
        sc._mc_on_device = True
        for name in ("static_flicker", "moving_action"):
            r = sc.score_shots([shots[name]])[0]
            for k, v in results[name].metrics.items():
                if k.endswith("_worst_pair"):
                    continue
                assert r.metrics[k] == pytest.approx(v, abs=1e-6), (name, k)


def test_stage_times_collect_every_stage(
    cpu_scorer: Scorer,
    shots: dict[str, ShotInput],
    tmp_path: Path,
    png_writer: Callable[[torch.Tensor, Path], list[Path]],
) -> None:
    from scoring.profile import STAGES, StageTimes

    paths = png_writer(shots["moving_action"].frames, tmp_path / "shot")
    times = StageTimes()
    cpu_scorer.stage_times = times
    try:
        [r] = cpu_scorer.score_shots([ShotInput(paths, ACTION)])
    finally:
        cpu_scorer.stage_times = None
    assert r.status == "ok"
    got = times.snapshot()
    assert set(got) == set(STAGES)
    assert all(got[k] > 0 for k in STAGES if k != "composite")


def test_half_resolution_motion_stays_within_documented_tolerance(shot_factory: Callable[..., torch.Tensor]) -> None:
    """Motion at half resolution (the default for frames over 256 px) against native resolution,
    on clean pans: the bounds documented in docs/SCORING.md ("Working resolution")."""
    native = ScorerConfig(device="cpu", workers=2, motion_scale=1.0, backward_flow_preset=None)
    half = ScorerConfig(device="cpu", workers=2)
    shots = [ShotInput(shot_factory(5, 384, 384, speed=sp), 0.5) for sp in ((1.3, 0.6), (3.0, 1.0))]
    with Scorer(native) as a, Scorer(half) as b:
        ref, got = a.score_shots(shots), b.score_shots(shots)
    for r, g in zip(ref, got, strict=True):
        assert r.metrics["flow_scale"] == 1.0 and g.metrics["flow_scale"] == pytest.approx(256 / 384)
        assert abs(g.metrics["mc_ssim_mean"] - r.metrics["mc_ssim_mean"]) < 0.005
        assert abs(g.metrics["warp_error_mean"] - r.metrics["warp_error_mean"]) < 0.001
        assert abs(g.metrics["motion_p95_px"] - r.metrics["motion_p95_px"]) < 0.15
        assert abs(g.metrics["valid_fraction_mean"] - r.metrics["valid_fraction_mean"]) < 0.01
        assert abs(g.composite - r.composite) < 0.03
        assert g.metrics["ssim_mean"] == pytest.approx(r.metrics["ssim_mean"], abs=1e-6)  # temporal SSIM is native
