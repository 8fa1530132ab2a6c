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

Working resolution (see :func:`flow_scale` and docs/SCORING.md): with a scale
``s < 1`` the flow is estimated on area-downscaled grey frames (what DIS sees),
and every per-pixel measurement runs on a *working grid* of native pixels: for an
h x w grid over an H x W frame, cell ``(i, j)`` is the native pixel at row
``floor(i H / h)``, column ``floor(j W / w)`` (every other
native pixel at ``s = 0.5``). Frame t+1 is warped by bilinear sampling of the
*native* frame at ``p + f(p) / s``, so the warp error, the brightness residual
and motion-compensated SSIM compare native pixel values (not area averages,
which would hide per-pixel noise), on a quarter of the pixels. At ``s = 1`` all
of this is the plain native-resolution computation.

Flow runs on CPU (OpenCV has no GPU DIS); callers parallelise over pairs with a
thread pool, which works because OpenCV releases the GIL.
"""

from __future__ import annotations

import dataclasses
import functools
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


@functools.lru_cache(maxsize=16)
def _base_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinate grids (x, y), HxW float32, cached per size (read-only)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = False
    gy.flags.writeable = False
    return gx, gy


def sample_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampling maps ``p + flow(p)`` (x, y) for ``cv2.remap`` and the in-bounds mask HxW bool."""
    h, w = flow.shape[:2]
    gx, gy = _base_grid(h, w)
    mx = gx + flow[..., 0]
    my = gy + flow[..., 1]
    in_bounds = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return mx, my, in_bounds


def _remap(image: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    return cv2.remap(image, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp_back(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image(p + flow(p))``; return (warped, in_bounds mask HxW bool).

    Border replication only fills pixels that ``in_bounds`` already excludes;
    it avoids black fill bleeding into neighbouring valid pixels through the
    SSIM window.
    """
    mx, my, in_bounds = sample_maps(flow)
    return _remap(image, mx, my), in_bounds


def _sq_norm(v: np.ndarray) -> np.ndarray:
    """|v|^2 per pixel of an HxWx2 float32 field (no HxWx2 temporary)."""
    x, y = v[..., 0], v[..., 1]
    return x * x + y * y


def occlusion_mask(flow_fw: np.ndarray, flow_bw_warped: np.ndarray, fw_sq: np.ndarray | None = None) -> np.ndarray:
    """True where the forward-backward check fails (Lai et al. 2018 thresholds).

    ``fw_sq`` (``|flow_fw|^2``) may be passed when the caller already has it.
    """
    lhs = _sq_norm(flow_fw + flow_bw_warped)
    if fw_sq is None:
        fw_sq = _sq_norm(flow_fw)
    return lhs > 0.01 * (fw_sq + _sq_norm(flow_bw_warped)) + 0.5


@dataclass(frozen=True)
class PreparedFrame:
    """A frame prepared once for motion analysis (every frame takes part in two pairs).

    ``gray`` is what DIS sees: the frame area-downscaled to the working size,
    in grey. ``rgb`` holds the native pixels of the working grid (the native
    frame itself at scale 1), ``cols``/``rows`` their native coordinates, and
    ``native`` the native frame that warps sample from.
    """

    rgb: np.ndarray  # h x w x 3 uint8, working grid
    gray: np.ndarray  # h x w uint8, working size
    native: np.ndarray  # H x W x 3 uint8
    cols: np.ndarray  # w float32, native x of each grid column
    rows: np.ndarray  # h float32, native y of each grid row


def _grid(native: int, working: int) -> np.ndarray:
    """Native coordinate of each working-grid index: ``floor(i * native / working)``."""
    return (np.arange(working, dtype=np.int64) * native // working).astype(np.intp)


def prepare_frame(frame: np.ndarray, scale: float) -> PreparedFrame:
    """Working-size grey (area interpolation) and working-grid pixels of one HxWx3 uint8 frame."""
    h, w = frame.shape[:2]
    if scale >= 1.0:
        return PreparedFrame(
            rgb=frame,
            gray=cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY),
            native=frame,
            cols=np.arange(w, dtype=np.float32),
            rows=np.arange(h, dtype=np.float32),
        )
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    gray = cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    cols, rows = _grid(w, size[0]), _grid(h, size[1])
    sx, sy = w // size[0], h // size[1]
    if w == sx * size[0] and h == sy * size[1]:  # an integer step
        if sx == sy and sx & (sx - 1) == 0:
            # A power of two (e.g. 2): OpenCV's nearest-neighbour resize computes
            # floor(i * step) exactly then, and is 5x faster than a strided copy.
            rgb = cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST)
        else:
            rgb = np.ascontiguousarray(frame[::sy, ::sx])
    else:
        rgb = frame[rows[:, None], cols[None, :]]
    return PreparedFrame(rgb=rgb, gray=gray, native=frame, cols=cols.astype(np.float32), rows=rows.astype(np.float32))


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
    warped: np.ndarray | None  # HxWx3 uint8, frame t+1 warped onto t (working grid)
    valid: np.ndarray | None  # HxW bool, in-frame and not occluded

    def without_images(self) -> PairMotion:
        """The statistics alone (drops ``warped`` and ``valid`` once they are used)."""
        return dataclasses.replace(self, warped=None, valid=None)


def _percentile(a: np.ndarray, q: float) -> float:
    """``np.percentile(a, q)`` (linear interpolation) with one partial sort."""
    flat = a.ravel()
    pos = q / 100.0 * (flat.size - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, flat.size - 1)
    part = np.partition(flat, [lo, hi]) if hi != lo else np.partition(flat, lo)
    a_lo, a_hi = float(part[lo]), float(part[hi])
    return a_lo + (a_hi - a_lo) * (pos - lo)


def pair_flows(
    a: PreparedFrame, b: PreparedFrame, preset: FlowPreset, backward_preset: FlowPreset | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """DIS flow both ways, (a -> b, b -> a), at the frames' working resolution.

    The backward flow only feeds the occlusion check, so it may use a cheaper
    preset (``backward_preset``; None = ``preset``).
    """
    return dis_flow(a.gray, b.gray, preset), dis_flow(b.gray, a.gray, backward_preset or preset)


def measure_pair(
    a: PreparedFrame,
    b: PreparedFrame,
    fw: np.ndarray,
    bw: np.ndarray,
    *,
    scale: float,
    moving_threshold_px: float,
) -> PairMotion:
    """Warp b onto a with the forward flow, mask occlusions with the backward flow,
    and measure the pair (warp error, brightness residual, motion statistics).

    ``fw`` and ``bw`` are at working size; the warp samples b's native frame
    (module docstring). ``|fw|^2`` serves both the occlusion check and the flow
    magnitudes; at scale 1 one set of sampling maps serves both warps.
    """
    gh, gw = fw.shape[:2]
    nh, nw = b.native.shape[:2]
    if (gh, gw) == (nh, nw):
        mx, my, in_bounds = sample_maps(fw)
        warped = _remap(b.native, mx, my)
        bw_warped = _remap(bw, mx, my)
    else:
        # Flow in working pixels -> native pixels, per axis (the working size is rounded).
        mx = b.cols[None, :] + fw[..., 0] * np.float32(nw / gw)
        my = b.rows[:, None] + fw[..., 1] * np.float32(nh / gh)
        warped = _remap(b.native, mx, my)
        in_bounds = (mx >= 0) & (mx <= nw - 1) & (my >= 0) & (my <= nh - 1)
        wx, wy, _ = sample_maps(fw)
        bw_warped = _remap(bw, wx, wy)
    fw_sq = _sq_norm(fw)
    valid = in_bounds & ~occlusion_mask(fw, bw_warped, fw_sq)

    diff = warped.astype(np.float32)
    diff -= a.rgb
    diff *= 1.0 / 255.0
    sq = diff * diff
    n_valid = int(np.count_nonzero(valid))
    # Means over the valid pixels, per channel, accumulated in double by OpenCV:
    # the warp error sums the channels' mean squared differences, the brightness
    # residual weights the channels' mean differences with the luma weights.
    # Nothing valid: the unmasked means, which include the occluded garbage
    # and so stay pessimistic.
    m = valid.view(np.uint8) if n_valid else None
    warp_error = float(sum(cv2.mean(sq, mask=m)[:3]))
    brightness = float(np.dot(_LUMA.astype(np.float64), cv2.mean(diff, mask=m)[:3]))

    h, w = fw.shape[:2]
    mag = np.sqrt(fw_sq)
    diag = float(np.hypot(h, w))
    mean_mag = float(mag.mean(dtype=np.float64))
    p95 = _percentile(mag, 95.0)
    return PairMotion(
        warp_error=warp_error,
        valid_fraction=n_valid / valid.size,
        brightness_residual=brightness,
        mag_mean_px=mean_mag / scale,
        mag_p95_px=p95 / scale,
        mag_mean_norm=mean_mag / diag,
        mag_p95_norm=p95 / diag,
        moving_fraction=float(np.count_nonzero(mag > moving_threshold_px * scale)) / mag.size,
        warped=warped,
        valid=valid,
    )


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
    fw, bw = pair_flows(a, b, preset)
    return measure_pair(a, b, fw, bw, scale=scale, moving_threshold_px=moving_threshold_px)


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


def flow_scale(height: int, width: int, max_side: int | None, factor: float = 1.0, min_side: int = 0) -> float:
    """Working-resolution factor (<= 1) for flow, warping and motion-compensated SSIM.

    ``factor`` scales the frame (0.5 = half resolution), but never below
    ``min_side`` pixels on the longer side (smaller frames stay native), and
    ``max_side`` caps the longer side whatever the factor (None = no cap).
    """
    long_side = max(height, width)
    s = factor
    if min_side:
        s = max(s, min(1.0, min_side / long_side))
    if max_side is not None:
        s = min(s, max_side / long_side)
    return min(1.0, s)
