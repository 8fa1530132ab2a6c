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
