"""Optical flow accuracy on known pans, occlusion masks, warp error and flicker."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from scoring.flow import (
    analyse_pair,
    dis_flow,
    flicker_index,
    flow_scale,
    measure_pair,
    occlusion_mask,
    prepare_frame,
    warp_back,
)

MARGIN = 16  # interior: beyond the largest displacement plus the DIS patch size


def _u8(img: np.ndarray) -> np.ndarray:
    return (img * 255.0 + 0.5).astype(np.uint8)


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(_u8(img), cv2.COLOR_RGB2GRAY)


def _interior_epe(flow: np.ndarray, dx: float, dy: float) -> np.ndarray:
    inner = flow[MARGIN:-MARGIN, MARGIN:-MARGIN]
    return np.hypot(inner[..., 0] - dx, inner[..., 1] - dy)


@pytest.mark.parametrize(("dx", "dy"), [(2.0, 0.0), (1.3, 0.6), (-0.7, 2.4)])
def test_dis_recovers_known_pan(texture_factory: Callable[..., np.ndarray], dx: float, dy: float) -> None:
    """Measured on this texture (256x256, MEDIUM preset): mean interior endpoint
    error ~0.0002 px for the integer pan, ~0.026 px for sub-pixel pans."""
    a = _gray(texture_factory(256, 256))
    b = _gray(texture_factory(256, 256, dx, dy))  # content moves by (dx, dy)
    epe = _interior_epe(dis_flow(a, b, "medium"), dx, dy)
    assert epe.mean() < 0.05, f"mean EPE {epe.mean():.4f}"
    assert np.median(epe) < 0.05


def test_warp_back_reproduces_frame_for_integer_pan(texture_factory: Callable[..., np.ndarray]) -> None:
    a = _u8(texture_factory(64, 64))
    b = _u8(texture_factory(64, 64, 3.0, -2.0))
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.0, -2.0
    warped, in_bounds = warp_back(b, flow)
    assert np.array_equal(warped[in_bounds], a[in_bounds])
    # Pixels whose source lies outside frame t+1 are exactly the right 3 columns and top 2 rows.
    expected = np.zeros((64, 64), bool)
    expected[2:, :61] = True
    assert np.array_equal(in_bounds, expected)


def test_occlusion_mask_thresholds() -> None:
    fw = np.zeros((4, 4, 2), np.float32)
    fw[..., 0] = 5.0
    bw = -fw.copy()
    assert not occlusion_mask(fw, bw).any()  # perfectly consistent
    bw[0, 0] = (0.0, 0.0)  # |fw+bw|^2 = 25 > 0.01*25 + 0.5
    bw[1, 1] = (-5.5, 0.0)  # |.|^2 = 0.25 < 0.01*(25+30.25) + 0.5 = 1.05: still consistent
    occ = occlusion_mask(fw, bw)
    assert occ[0, 0] and not occ[1, 1] and occ.sum() == 1


def test_analyse_pair_on_pan(texture_factory: Callable[..., np.ndarray]) -> None:
    a = prepare_frame(_u8(texture_factory(128, 128)), 1.0)
    b = prepare_frame(_u8(texture_factory(128, 128, 2.0, 1.0)), 1.0)
    r = analyse_pair(a, b, scale=1.0, preset="medium", moving_threshold_px=1.0)
    assert r.warp_error < 1e-3
    assert r.valid_fraction > 0.9
    assert abs(r.mag_p95_px - np.hypot(2.0, 1.0)) < 0.1
    assert r.moving_fraction > 0.95
    assert abs(r.mag_p95_norm - np.hypot(2.0, 1.0) / np.hypot(128, 128)) < 1e-3
    assert abs(r.brightness_residual) < 1e-3


def test_analyse_pair_reports_native_pixels_when_downscaled(texture_factory: Callable[..., np.ndarray]) -> None:
    scale = flow_scale(256, 256, 128)
    assert scale == 0.5
    a = prepare_frame(_u8(texture_factory(256, 256)), scale)
    b = prepare_frame(_u8(texture_factory(256, 256, 4.0, 0.0)), scale)
    assert a.gray.shape == (128, 128)
    r = analyse_pair(a, b, scale=scale, preset="medium", moving_threshold_px=1.0)
    assert abs(r.mag_p95_px - 4.0) < 0.2


def test_brightness_flicker_shows_in_residual(texture_factory: Callable[..., np.ndarray]) -> None:
    base = texture_factory(128, 128)
    a = prepare_frame(_u8(np.clip(base - 0.05, 0, 1)), 1.0)
    b = prepare_frame(_u8(np.clip(base + 0.05, 0, 1)), 1.0)
    r = analyse_pair(a, b, scale=1.0, preset="medium", moving_threshold_px=1.0)
    assert abs(r.brightness_residual - 0.1) < 0.01
    assert r.mag_p95_px < 0.5  # DIS normalises patch means: brightness is not motion


def test_flicker_index() -> None:
    a = 0.03
    alternating = [2 * a, -2 * a, 2 * a, -2 * a]  # frames base-a, base+a, ...
    assert flicker_index(alternating) == pytest.approx(a)
    assert flicker_index([0.01] * 5) == 0.0  # a steady fade is not flicker
    assert flicker_index([0.5]) == 0.0


def test_flow_scale() -> None:
    assert flow_scale(1080, 1920, 1024) == pytest.approx(1024 / 1920)
    assert flow_scale(512, 512, 1024) == 1.0
    assert flow_scale(4000, 4000, None) == 1.0


def test_dis_flow_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        dis_flow(np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32))


# ------------------------------------------------------------ working resolution


def test_flow_scale_factor_and_bounds() -> None:
    assert flow_scale(512, 512, 1024, 0.5, 256) == 0.5  # half resolution
    assert flow_scale(384, 384, 1024, 0.5, 256) == pytest.approx(256 / 384)  # never below min_side ...
    assert flow_scale(128, 128, 1024, 0.5, 256) == 1.0  # ... and small frames stay native
    assert flow_scale(1080, 1920, 1024, 0.5, 256) == 0.5  # 960x540
    assert flow_scale(4000, 4000, 1024, 0.5, 256) == pytest.approx(1024 / 4000)  # max_side caps


@pytest.mark.parametrize(("h", "w", "scale"), [(512, 512, 0.5), (96, 120, 1 / 3), (101, 67, 0.5), (600, 800, 0.32)])
def test_prepare_frame_grid_holds_native_pixels(h: int, w: int, scale: float) -> None:
    """rgb = the native pixel (floor(i * H / h), floor(j * W / w)) of each working-grid cell,
    whichever path builds it (OpenCV nearest for power-of-two steps, slicing, indexing)."""
    frame = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    p = prepare_frame(frame, scale)
    gh, gw = p.gray.shape
    assert (gw, gh) == (max(1, round(w * scale)), max(1, round(h * scale)))
    rows = np.arange(gh) * h // gh
    cols = np.arange(gw) * w // gw
    assert np.array_equal(p.rgb, frame[rows[:, None], cols[None, :]])
    assert np.array_equal(p.rows, rows.astype(np.float32)) and np.array_equal(p.cols, cols.astype(np.float32))
    assert p.native is frame
    area = cv2.resize(frame, (gw, gh), interpolation=cv2.INTER_AREA)
    assert np.array_equal(p.gray, cv2.cvtColor(area, cv2.COLOR_RGB2GRAY))


def test_native_scale_is_the_plain_computation(texture_factory: Callable[..., np.ndarray]) -> None:
    a = prepare_frame(_u8(texture_factory(64, 64)), 1.0)
    assert a.rgb is a.native and a.gray.shape == (64, 64)


@pytest.mark.parametrize(("dx", "dy"), [(2.0, 0.0), (1.3, 0.6), (-0.7, 2.4), (4.0, -3.0)])
def test_half_resolution_flow_on_known_pan(texture_factory: Callable[..., np.ndarray], dx: float, dy: float) -> None:
    """Flow on area-downscaled frames (scale 0.5), in native pixels: the documented bound is a mean
    endpoint error below 0.1 px against the true pan and against the full-resolution flow
    (measured on 512x512: 0.02-0.07 px; docs/SCORING.md, "Working resolution")."""
    a = prepare_frame(_u8(texture_factory(512, 512)), 0.5)
    b = prepare_frame(_u8(texture_factory(512, 512, dx, dy)), 0.5)
    half = dis_flow(a.gray, b.gray, "medium") / 0.5
    m = MARGIN // 2
    epe_truth = np.hypot(half[m:-m, m:-m, 0] - dx, half[m:-m, m:-m, 1] - dy)
    full = dis_flow(cv2.cvtColor(a.native, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b.native, cv2.COLOR_RGB2GRAY), "medium")
    full_on_grid = full[::2, ::2][m:-m, m:-m]
    epe_full = np.hypot(*(half[m:-m, m:-m] - full_on_grid).transpose(2, 0, 1))
    assert epe_truth.mean() < 0.1, f"mean EPE vs truth {epe_truth.mean():.4f}"
    assert epe_full.mean() < 0.1, f"mean EPE vs full resolution {epe_full.mean():.4f}"


def test_measure_pair_at_half_resolution(texture_factory: Callable[..., np.ndarray]) -> None:
    """An integer pan warped from the native frame reproduces the native pixels of the grid."""
    a = prepare_frame(_u8(texture_factory(256, 256)), 0.5)
    b = prepare_frame(_u8(texture_factory(256, 256, 4.0, 2.0)), 0.5)
    fw = np.zeros((128, 128, 2), np.float32)
    fw[..., 0], fw[..., 1] = 2.0, 1.0  # working pixels = (4, 2) native
    r = measure_pair(a, b, fw, -fw, scale=0.5, moving_threshold_px=1.0)
    assert r.warped is not None and r.valid is not None
    assert np.array_equal(r.warped[r.valid], a.rgb[r.valid])
    assert r.warp_error == 0.0 and r.brightness_residual == 0.0
    assert r.mag_p95_px == pytest.approx(np.hypot(4.0, 2.0), abs=1e-5)
    # Samples beyond the native frame (x + 4 > 255 or y + 2 > 255) are the invalid ones.
    assert r.valid_fraction == pytest.approx((126 * 127) / 128**2)
    assert r.without_images().warped is None
