"""The benchmark's report plumbing (the timed runs themselves are `make bench-scoring`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import scoring as bench


def test_section_is_created_then_replaced_in_place(tmp_path: Path) -> None:
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n<!-- comfy:begin -->\n## ComfyUI\n\ncomfy numbers\n<!-- comfy:end -->\n")
    bench.publish("scoring", "Scoring", "first table", md)
    text = md.read_text()
    assert "<!-- comfy:begin -->\n## ComfyUI\n\ncomfy numbers\n<!-- comfy:end -->" in text
    assert "<!-- scoring:begin -->\n## Scoring\n\nfirst table\n<!-- scoring:end -->" in text

    md.write_text(md.read_text() + "\n<!-- later:begin -->\nkept\n<!-- later:end -->\n")
    bench.publish("scoring", "Scoring", "second table", md)
    text = md.read_text()
    assert "first table" not in text and "second table" in text
    assert text.count("<!-- scoring:begin -->") == 1 and text.count("## Scoring") == 1
    assert "comfy numbers" in text and "<!-- later:begin -->\nkept" in text
    assert text.index("comfy numbers") < text.index("second table") < text.index("kept")


def test_section_in_new_file(tmp_path: Path) -> None:
    md = tmp_path / "docs" / "BENCHMARKS.md"
    bench.publish("scoring-gpu", "Scoring (GPU)", "gpu table", md)
    text = md.read_text()
    assert text.startswith("# Benchmarks")
    assert "<!-- scoring-gpu:begin -->\n## Scoring (GPU)\n\ngpu table\n<!-- scoring-gpu:end -->" in text


def test_traffic_arithmetic_matches_docs() -> None:
    t = bench.ssim_traffic_bytes(3, 512, 512)
    assert t["kernel"] / 1e6 == pytest.approx(222.4, abs=0.1)  # docs/SCORING.md, "Performance"
    assert t["conversion"] / 1e6 == pytest.approx(10.2, abs=0.1)
    assert t["upload"] == t["fused_minimum"] == 3 * 512 * 512


def test_gpu_mode_fails_clearly_without_cuda(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--gpu", "--no-write"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_scorer_section_reports_rates_ratio_and_stages() -> None:
    from scoring.profile import STAGES

    pairs = bench.PAIRS
    run = bench.ScorerRun(
        ssim_s=[pairs / 40.0, pairs / 50.0, pairs / 45.0],
        png_s=[pairs / 20.0, pairs / 25.0, pairs / 24.0],
        u8_s=[pairs / 26.0] * 3,
        stages={k: 0.032 * (i + 1) for i, k in enumerate(STAGES)},
        workers=2,
    )
    assert run.ratio == pytest.approx(24.0 / 45.0)
    text = "\n".join(bench.format_scorer(run, {"threads": "2", "date": "2026-12-01", "scorer_version": "v"}))
    assert (
        "| this run, 2026-12-01 | v | 45.0 [40.00-50.00] | 24.0 [20.00-25.00] | 26.0 [26.00-26.00] | **0.53**" in text
    )
    for k in STAGES:
        assert f"| {k} |" in text
    assert "| wall time per pair |" in text
    for b in bench.BASELINE_RUNS:  # the figures from before the rework stay in the table
        assert f"| {b['run']} |" in text
