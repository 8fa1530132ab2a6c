"""Motion: DIS optical flow, flow warping, occlusion masks, per-pair motion statistics.

Conventions (all contracts of this module):

* Flow ``f`` from frame ``a`` to frame ``b`` (``dis_flow(a, b)``) is an HxWx2
  float32 array of (dx, dy) in pixels such that ``a(p) ~ b(p + f(p))``.
* Warping frame t+1 back onto frame t samples ``I_{t+1}(p + f_fw(p))`` with
  bilinear interpolation (``cv2.remap``); samples that fall outside the frame
  are invalid.
* Occlusion (Lai et al. 2018, after Sundaram et al. 2010): with ``f_bw`` warped
  the same way, pixel p is occluded when
  ``|f_fw + f_bw~|^2 > 0.01 (|f_fw|^2 + |f_bw~|^2) + 0.5``.
* Warping error (Lai et al. 2018, E_pair): over valid (in-frame, not occluded)
  pixels, the mean of the squared RGB difference summed over channels, with
  frames in [0, 1]; 0 for a perfectly consistent pair, at most 3.

Flow runs on CPU (OpenCV has no GPU DIS); callers parallelise over pairs with a
thread pool, which works because OpenCV releases the GIL.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

FlowPreset = Literal["ultrafast", "fast", "medium"]

_PRESETS: dict[str, int] = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

# ITU-R BT.601 luma, the weights of cv2.COLOR_RGB2GRAY, so brightness residuals
# are measured on the same signal the flow was estimated on.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# DIS instances hold scratch buffers and are not thread-safe: one per thread and preset.
_local = threading.local()


def _dis(preset: FlowPreset) -> cv2.DISOpticalFlow:
    cache: dict[str, cv2.DISOpticalFlow] | None = getattr(_local, "dis", None)
    if cache is None:
        cache = _local.dis = {}
    if preset not in cache:
        if preset not in _PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; expected one of {sorted(_PRESETS)}")
        cache[preset] = cv2.DISOpticalFlow_create(_PRESETS[preset])
    return cache[preset]


def dis_flow(gray_a: np.ndarray, gray_b: np.ndarray, preset: FlowPreset = "medium") -> np.ndarray:
    """Dense flow from ``gray_a`` to ``gray_b`` (HxW uint8), HxWx2 float32 pixels.

    The MEDIUM preset is the default: on band-limited textures its interior
    error is ~0.03 px for sub-pixel shifts (tests/unit/scoring), while FAST and
    ULTRAFAST are 3-10x faster but 2-3x less accurate.
    """
    if gray_a.dtype != np.uint8 or gray_b.dtype != np.uint8 or gray_a.ndim != 2 or gray_a.shape != gray_b.shape:
        raise ValueError("dis_flow needs two HxW uint8 images of the same size")
    return _dis(preset).calc(gray_a, gray_b, None)


def warp_back(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image(p + flow(p))``; return (warped, in_bounds mask HxW bool).

    Border replication only fills pixels that ``in_bounds`` already excludes;
    it avoids black fill bleeding into neighbouring valid pixels through the
    SSIM window.
    """
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = gx + flow[..., 0]
    my = gy + flow[..., 1]
    warped = cv2.remap(image, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    in_bounds = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return warped, in_bounds


def occlusion_mask(flow_fw: np.ndarray, flow_bw_warped: np.ndarray) -> np.ndarray:
    """True where the forward-backward check fails (Lai et al. 2018 thresholds)."""
    s = flow_fw + flow_bw_warped
    lhs = np.einsum("hwc,hwc->hw", s, s)
    fw_sq = np.einsum("hwc,hwc->hw", flow_fw, flow_fw)
    bw_sq = np.einsum("hwc,hwc->hw", flow_bw_warped, flow_bw_warped)
    return lhs > 0.01 * (fw_sq + bw_sq) + 0.5


@dataclass(frozen=True)
class PreparedFrame:
    """A frame at flow working resolution with its grey version (computed once per frame)."""

    rgb: np.ndarray  # HxWx3 uint8
    gray: np.ndarray  # HxW uint8


def prepare_frame(frame: np.ndarray, scale: float) -> PreparedFrame:
    """Resize (area interpolation, for scale < 1) and convert to grey once per frame,
    because every frame takes part in two pairs."""
    if scale < 1.0:
        h, w = frame.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return PreparedFrame(rgb=frame, gray=cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))


@dataclass(frozen=True)
class PairMotion:
    """Motion statistics for one pair (t, t+1), at flow working resolution.

    Magnitudes in ``*_px`` are converted back to pixels of the original frame;
    ``*_norm`` values are divided by the frame diagonal (resolution-free).
    """

    warp_error: float
    valid_fraction: float
    brightness_residual: float  # masked mean of luma(warped t+1) - luma(t), in [-1, 1]
    mag_mean_px: float
    mag_p95_px: float
    mag_mean_norm: float
    mag_p95_norm: float
    moving_fraction: float
    warped: np.ndarray  # HxWx3 uint8, frame t+1 warped onto t
    valid: np.ndarray  # HxW bool, in-frame and not occluded


def analyse_pair(
    a: PreparedFrame,
    b: PreparedFrame,
    *,
    scale: float,
    preset: FlowPreset,
    moving_threshold_px: float,
) -> PairMotion:
    """Flow both ways, warp b onto a, mask occlusions, and measure the pair.

    ``scale`` is the working-resolution factor used by :func:`prepare_frame`;
    ``moving_threshold_px`` is in original-frame pixels.
    """
    fw = dis_flow(a.gray, b.gray, preset)
    bw = dis_flow(b.gray, a.gray, preset)
    warped, in_bounds = warp_back(b.rgb, fw)
    bw_warped, _ = warp_back(bw, fw)
    valid = in_bounds & ~occlusion_mask(fw, bw_warped)

    diff = warped.astype(np.float32) - a.rgb.astype(np.float32)
    diff *= 1.0 / 255.0
    sq = np.einsum("hwc,hwc->hw", diff, diff)
    luma = diff @ _LUMA
    n_valid = int(valid.sum())
    if n_valid:
        warp_error = float(sq[valid].mean())
        brightness = float(luma[valid].mean())
    else:
        # Nothing survived the consistency check: fall back to the unmasked
        # means, which include the occluded garbage and so stay pessimistic.
        warp_error = float(sq.mean())
        brightness = float(luma.mean())

    h, w = fw.shape[:2]
    mag = np.sqrt(np.einsum("hwc,hwc->hw", fw, fw))
    diag = float(np.hypot(h, w))
    mean_mag = float(mag.mean())
    p95 = float(np.percentile(mag, 95))
    return PairMotion(
        warp_error=warp_error,
        valid_fraction=n_valid / valid.size,
        brightness_residual=brightness,
        mag_mean_px=mean_mag / scale,
        mag_p95_px=p95 / scale,
        mag_mean_norm=mean_mag / diag,
        mag_p95_norm=p95 / diag,
        moving_fraction=float((mag > moving_threshold_px * scale).mean()),
        warped=warped,
        valid=valid,
    )


def flicker_index(brightness_residuals: list[float]) -> float:
    """Amplitude of alternating brightness, from per-pair motion-compensated residuals.

    With ``r_t = luma(warped t+1) - luma(t)``, flicker is ``mean |r_{t+1} - r_t| / 4``:
    frames alternating ``base +- a`` give exactly ``a``, while a steady fade
    (constant ``r_t``) gives 0. Needs two pairs; a single pair cannot tell a
    fade from a flicker and yields 0.
    """
    if len(brightness_residuals) < 2:
        return 0.0
    r = np.asarray(brightness_residuals, dtype=np.float64)
    return float(np.abs(np.diff(r)).mean() / 4.0)


def flow_scale(height: int, width: int, max_side: int | None) -> float:
    """Working-resolution factor (<= 1) so that the longer side is at most ``max_side``."""
    if max_side is None or max(height, width) <= max_side:
        return 1.0
    return max_side / max(height, width)
