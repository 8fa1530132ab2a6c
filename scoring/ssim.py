"""SSIM exactly as torchmetrics defines it, computed faster.

Definition (the contract, identical to
``torchmetrics.functional.image.structural_similarity_index_measure`` with its
defaults ``gaussian_kernel=True, sigma=1.5, k1=0.01, k2=0.03``):

* Gaussian window of 11 taps (``int(3.5 * sigma + 0.5) * 2 + 1``), sigma 1.5,
  ``w[i] = exp(-(i - 5)^2 / (2 sigma^2))`` normalised to sum 1; the 2-D window is
  the outer product ``w w^T``.
* Each image is reflect-padded by 5 pixels (torch ``"reflect"``: the edge pixel is
  not repeated, ``d c b | a b c d``), filtered with a *valid* convolution, so the
  SSIM map has the input's H x W and border pixels use mirrored neighbours.
* ``c1 = (0.01 L)^2``, ``c2 = (0.03 L)^2`` with ``L = data_range``, which callers
  must always pass explicitly (1.0 for float frames in [0, 1]); variances are
  clamped at 0 as torchmetrics does.
* The score of a pair is the mean of the map over channels and all H x W pixels.

``crop_border=True`` instead averages only pixels at least 5 pixels from the
border, which is scikit-image's convention (it filters with scipy's
half-sample-symmetric padding and then crops). The interior filter responses do
not depend on the padding, so that mode matches ``skimage.metrics.structural_similarity``
up to float rounding. See docs/SCORING.md.

Why this is faster than torchmetrics on the same definition:

* Each frame of a shot belongs to two consecutive pairs. Its blurred mean ``mu``
  and blurred square ``E[x^2]`` are computed once per frame instead of once per
  pair, so a shot of N frames needs 3N-1 blurred maps instead of 5(N-1).
* The Gaussian is separable: two depthwise 1-D convolutions (22 taps per pixel)
  instead of one 11x11 depthwise convolution (121 taps).
* Tensors are kept channels_last, for which oneDNN's depthwise convolution is
  several times faster on CPU than NCHW; frames decoded as HWC uint8 arrive in
  that layout for free.
* The algebra reuses per-frame terms (``mu^2 + c1/2`` and ``var + c2/2``, summed
  per pair), folds the factor 2 into the blur taps and runs in place, to
  minimise passes over memory, while keeping SSIM(x, x) == 1.0 exactly.
* Work is chunked over frames, which bounds peak memory and keeps the working
  set cache-resident on CPU.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch convention
from torch import Tensor

SIGMA = 1.5
K1 = 0.01
K2 = 0.03
#: torchmetrics derives the Gaussian window length from sigma, ignoring ``kernel_size``.
WINDOW = int(3.5 * SIGMA + 0.5) * 2 + 1
PAD = (WINDOW - 1) // 2
#: Smallest spatial size accepted: reflect padding needs ``PAD < H, W`` and the
#: skimage-style crop needs a non-empty interior.
MIN_SIDE = 2 * PAD + 1

#: Peak bytes per frame of a chunk, in units of one padded C x (H+10) x (W+10)
#: map of the input dtype: padded frame, [x, x^2] stack and its two blur stages,
#: per-frame terms, pair product, its blur and the algebra temporaries.
#: Measured 7.85 on CPU (peak RSS over a chunk, NCHW input, which adds one
#: channels_last copy); rounded up.
_MAPS_PER_FRAME = 8.0
#: Same unit, per pair of :func:`ssim_between` (5-map stack, its blur stages,
#: algebra temporaries): measured 14.7 on CPU; rounded up.
_MAPS_PER_PAIR_GENERAL = 15.0
#: On CPU, chunks of a few frames keep the working set in L2/L3 cache and let
#: the allocator reuse pages; measured fastest (4 frames: ~0.55 s vs ~0.8 s for
#: one pass over 33 frames of 3x512x512 on 2 cores).
_CPU_CHUNK_FRAMES = 4
#: ssim_between on CPU: one pair at a time. Its 5-map stack is ~12.7 MB per pair
#: at 3x256x256 and ~49 MB at 3x512x512; measured (one thread, 16 pairs) 9.1 ms
#: per pair at 256 with 1 pair per chunk vs 15.5 with 2, and 39 vs 68 ms at 512.
_CPU_CHUNK_PAIRS = 1


def gaussian_window(dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """Return the 1-D torchmetrics Gaussian window (``WINDOW`` taps, sums to 1)."""
    dist = torch.arange((1 - WINDOW) / 2, (1 + WINDOW) / 2, 1, dtype=dtype, device=device)
    gauss = torch.exp(-torch.pow(dist / SIGMA, 2) / 2)
    return gauss / gauss.sum()


def _check_frames(x: Tensor, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be [N, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {x.dtype}")
    if min(x.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"{name} spatial size {tuple(x.shape[-2:])} is below {MIN_SIDE}x{MIN_SIDE}")


def _check_data_range(data_range: float) -> float:
    dr = float(data_range)
    if not math.isfinite(dr) or dr <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    return dr


class _Blur:
    """Separable depthwise Gaussian blur on channels_last tensors (valid conv)."""

    def __init__(self, channels: int, dtype: torch.dtype, device: torch.device, scale: float = 1.0) -> None:
        g = gaussian_window(dtype, device)
        # The optional scale is folded into the vertical taps so that callers get
        # ``scale * blur(x)`` without an extra pass over the output.
        self.kh = (g * scale).view(1, 1, WINDOW, 1).expand(channels, 1, WINDOW, 1).contiguous()
        self.kw = g.view(1, 1, 1, WINDOW).expand(channels, 1, 1, WINDOW).contiguous()
        self.channels = channels

    def __call__(self, x: Tensor) -> Tensor:
        y = F.conv2d(x, self.kh, groups=self.channels)
        return F.conv2d(y, self.kw, groups=self.channels)


def _no_tf32():
    """cuDNN may run float32 convolutions in TF32 (10-bit mantissa), which would
    break the 1e-5 agreement with torchmetrics; force IEEE float32 for our convs."""
    return torch.backends.cudnn.flags(enabled=True, allow_tf32=False)


def _reduce(ssim_map: Tensor, crop_border: bool, mask: Tensor | None) -> Tensor:
    if crop_border:
        ssim_map = ssim_map[..., PAD:-PAD, PAD:-PAD]
        if mask is not None:
            mask = mask[..., PAD:-PAD, PAD:-PAD]
    if mask is None:
        return ssim_map.mean(dim=(1, 2, 3))
    m = mask.to(ssim_map.dtype)
    num = (ssim_map * m).sum(dim=(1, 2, 3))
    den = m.sum(dim=(1, 2, 3)) * ssim_map.shape[1]
    # A pair whose mask is empty has nothing comparable; it scores 0 (worst
    # plausible similarity) instead of NaN so downstream aggregates stay finite.
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def _consecutive_chunk(x: Tensor, c1: float, c2: float, crop_border: bool) -> Tensor:
    """SSIM of pairs (x[i], x[i+1]) for a chunk; x is float, channels_last preferred."""
    c = x.shape[1]
    x = x.contiguous(memory_format=torch.channels_last)
    # Second moments are formed on data shifted by the chunk mean: variance and
    # covariance are shift-invariant, and E[x^2] - mu^2 then cancels far less in
    # float32. Measured on the benchmark frames: max error against a float64
    # evaluation 2e-7, versus 6e-6 for torchmetrics' own float32 result.
    shift = x.mean()
    xp = F.pad(x, (PAD, PAD, PAD, PAD), mode="reflect").sub_(shift)
    # Reflect padding commutes with pointwise products, so x^2 and x_i * x_j are
    # formed on the padded frames and never padded themselves.
    moments = torch.cat([xp, xp * xp], dim=1)
    blurred = _Blur(2 * c, x.dtype, x.device)(moments)
    del moments
    mus, exx = blurred[:, :c], blurred[:, c:]
    # Per-frame halves of the denominators: a_i + a_j = mu_i^2 + mu_j^2 + c1 and
    # b_i + b_j = var_i + var_j + c2 (variance clamped at 0 like torchmetrics).
    # The operation order is chosen so that for identical frames the numerator
    # terms round exactly like the denominator terms (doubling is exact in
    # binary floating point), giving SSIM == 1.0 exactly, as torchmetrics does.
    musq_s = mus * mus
    b = exx.sub_(musq_s).clamp_(min=0).add_(c2 / 2)
    del musq_s
    mu = mus + shift
    a = (mu * mu).add_(c1 / 2)
    xy = xp[:-1] * xp[1:]
    del xp
    s2 = _Blur(c, x.dtype, x.device, scale=2.0)(xy)  # 2 E[xy], exactly twice the plain blur
    del xy
    num = s2.sub_(mus[:-1] * mus[1:], alpha=2).add_(c2)  # 2 cov + c2
    del mus
    num.mul_(torch.add(torch.tensor(c1, dtype=x.dtype, device=x.device), mu[:-1] * mu[1:], alpha=2))  # 2 mu_i mu_j + c1
    den = torch.add(a[:-1], a[1:]).mul_(torch.add(b[:-1], b[1:]))
    del a, b
    return _reduce(num.div_(den), crop_border, None)


def frames_per_chunk(
    channels: int, height: int, width: int, itemsize: int, max_batch_bytes: int | None, device: torch.device
) -> int:
    """Frames processed together so that the chunk stays under ``max_batch_bytes``.

    Never fewer than 2 (one pair). On CPU additionally capped at a small count
    that measured fastest; on CUDA only the memory bound applies.
    """
    per_frame = _MAPS_PER_FRAME * channels * (height + 2 * PAD) * (width + 2 * PAD) * itemsize
    k = 1 << 30 if max_batch_bytes is None else int(max_batch_bytes // per_frame)
    if device.type == "cpu":
        k = min(k, _CPU_CHUNK_FRAMES)
    return max(2, k)


def ssim_pairs(
    frames: Tensor,
    data_range: float,
    *,
    crop_border: bool = False,
    max_batch_bytes: int | None = None,
    chunk_frames: int | None = None,
) -> Tensor:
    """SSIM between consecutive frames: ``out[i] = SSIM(frames[i], frames[i+1])``.

    Args:
        frames: float tensor [N, C, H, W], N >= 2, H and W >= 11, any device.
            Values should lie in a range of width ``data_range``.
        data_range: the value range L (1.0 for frames in [0, 1]); required,
            never inferred from the data, so scores are comparable across shots.
        crop_border: average only the interior (scikit-image convention)
            instead of the full reflect-padded map (torchmetrics convention).
        max_batch_bytes: memory bound for intermediate tensors; frames are
            processed in overlapping chunks that respect it (at least one pair
            is always processed at once).
        chunk_frames: frames per chunk, overriding the automatic choice
            (memory bound, and on CPU a small cache-friendly count); >= 2.

    Returns:
        Tensor [N-1] in the input dtype on the input device. NaN inputs
        propagate to NaN outputs (the Scorer rejects them beforehand).

    Raises:
        ValueError: on a wrong shape, dtype, size or data_range.
    """
    _check_frames(frames, "frames")
    if frames.shape[0] < 2:
        raise ValueError(f"need at least 2 frames for a pair, got {frames.shape[0]}")
    dr = _check_data_range(data_range)
    c1, c2 = (K1 * dr) ** 2, (K2 * dr) ** 2
    n, c, h, w = frames.shape
    if chunk_frames is not None:
        if chunk_frames < 2:
            raise ValueError(f"chunk_frames must be >= 2, got {chunk_frames}")
        k = chunk_frames
    else:
        k = frames_per_chunk(c, h, w, frames.element_size(), max_batch_bytes, frames.device)
    out = []
    with torch.no_grad(), _no_tf32():
        start = 0
        while start < n - 1:
            # Chunks overlap by one frame so every consecutive pair is covered once.
            end = min(n, start + k)
            out.append(_consecutive_chunk(frames[start:end], c1, c2, crop_border))
            start = end - 1
    return torch.cat(out)


def ssim_between(
    x: Tensor,
    y: Tensor,
    data_range: float,
    *,
    mask: Tensor | None = None,
    crop_border: bool = False,
    max_batch_bytes: int | None = None,
) -> Tensor:
    """SSIM of arbitrary pairs ``(x[b], y[b])`` with the same definition.

    Used for motion-compensated SSIM, where y is frame t+1 warped onto frame t.

    Args:
        x, y: float tensors [B, C, H, W] of equal shape.
        data_range: value range L, required.
        mask: optional [B, 1, H, W] (bool or float) weights; the score is then the
            weighted mean of the SSIM map (e.g. excluding occluded pixels). A pair
            with an all-zero mask scores 0.
        crop_border: skimage convention (see :func:`ssim_pairs`).
        max_batch_bytes: memory bound for intermediates; pairs are processed in
            chunks that respect it (on CPU also a small cache-friendly count).

    Returns:
        Tensor [B].
    """
    _check_frames(x, "x")
    if x.shape != y.shape:
        raise ValueError(f"x and y shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    if mask is not None and (
        mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0] or mask.shape[2:] != x.shape[2:]
    ):
        raise ValueError(f"mask must be [B, 1, H, W] matching x, got {tuple(mask.shape)}")
    dr = _check_data_range(data_range)
    c1, c2 = (K1 * dr) ** 2, (K2 * dr) ** 2
    c, h, w = x.shape[1:]
    y = y.to(x.dtype)
    per_pair = _MAPS_PER_PAIR_GENERAL * c * (h + 2 * PAD) * (w + 2 * PAD) * x.element_size()
    k = x.shape[0] if max_batch_bytes is None else max(1, int(max_batch_bytes // per_pair))
    if x.device.type == "cpu":
        k = min(k, _CPU_CHUNK_PAIRS)
    with torch.no_grad(), _no_tf32():
        out = [
            _general_chunk(x[i : i + k], y[i : i + k], None if mask is None else mask[i : i + k], c1, c2, crop_border)
            for i in range(0, x.shape[0], k)
        ]
    return torch.cat(out)


def _general_chunk(x: Tensor, y: Tensor, mask: Tensor | None, c1: float, c2: float, crop_border: bool) -> Tensor:
    c = x.shape[1]
    # Shifted second moments for float32 accuracy, as in _consecutive_chunk.
    shift = (x.mean() + y.mean()) / 2
    xp = F.pad(x.contiguous(memory_format=torch.channels_last), (PAD, PAD, PAD, PAD), mode="reflect").sub_(shift)
    yp = F.pad(y.contiguous(memory_format=torch.channels_last), (PAD, PAD, PAD, PAD), mode="reflect").sub_(shift)
    stack = torch.cat([xp, yp, xp * xp, yp * yp, xp * yp], dim=1)
    del xp, yp
    blurred = _Blur(5 * c, x.dtype, x.device)(stack)
    del stack
    mxs, mys, exx, eyy, exy = blurred.split(c, dim=1)
    # Same rounding structure as the consecutive path: SSIM(x, x) == 1.0 exactly.
    vx = exx.sub_(mxs * mxs).clamp_(min=0).add_(c2 / 2)
    vy = eyy.sub_(mys * mys).clamp_(min=0).add_(c2 / 2)
    num = exy.sub_(mxs * mys).mul_(2).add_(c2)
    mx, my = mxs + shift, mys + shift
    num.mul_((mx * my).mul_(2).add_(c1))
    den = (mx * mx).add_(c1 / 2).add_((my * my).add_(c1 / 2)).mul_(vx.add_(vy))
    return _reduce(num.div_(den), crop_border, mask)


def _cv_window() -> np.ndarray:
    return gaussian_window(torch.float64, "cpu").numpy().astype(np.float32)


_CV_WINDOW = _cv_window()


def ssim_hwc_uint8(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """SSIM of two HxWxC uint8 images (as ``x / 255``, data range 1) with OpenCV,
    optionally the mean over ``mask`` (HxW bool) only; 0.0 if the mask is empty.

    The same definition as :func:`ssim_between` (window, reflect padding -
    OpenCV's ``BORDER_REFLECT_101`` is torch's ``"reflect"`` -, constants,
    clamping, shifted moments, and the operation order that makes SSIM(x, x)
    exactly 1.0), computed on one thread without torch: the Scorer runs it in
    its CPU worker pool right after warping, so motion-compensated SSIM runs in
    parallel with optical flow instead of in small, poorly parallel torch
    passes. Agrees with :func:`ssim_between` within 1e-6 (tests).
    """
    if x.dtype != np.uint8 or y.dtype != np.uint8 or x.shape != y.shape or x.ndim != 3 or x.shape[2] > 4:
        raise ValueError("ssim_hwc_uint8 needs two HxWxC uint8 images (C <= 4) of the same shape")
    if min(x.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image size {x.shape[:2]} is below {MIN_SIDE}x{MIN_SIDE}")
    c1, c2 = K1**2, K2**2
    xs = np.divide(x, np.float32(255.0), dtype=np.float32)
    ys = np.divide(y, np.float32(255.0), dtype=np.float32)
    shift = np.float32((_mean(xs) + _mean(ys)) / 2)
    xs -= shift
    ys -= shift

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(a, cv2.CV_32F, _CV_WINDOW, _CV_WINDOW, borderType=cv2.BORDER_REFLECT_101)

    mxs, mys = blur(xs), blur(ys)
    exx, eyy, exy = blur(xs * xs), blur(ys * ys), blur(xs * ys)
    del xs, ys
    t = mxs * mxs
    vx = np.maximum(np.subtract(exx, t, out=exx), 0.0, out=exx)
    vx += c2 / 2
    np.multiply(mys, mys, out=t)
    vy = np.maximum(np.subtract(eyy, t, out=eyy), 0.0, out=eyy)
    vy += c2 / 2
    np.multiply(mxs, mys, out=t)
    num = np.subtract(exy, t, out=exy)
    num *= 2
    num += c2
    mx = np.add(mxs, shift, out=mxs)
    my = np.add(mys, shift, out=mys)
    np.multiply(mx, my, out=t)
    t *= 2
    t += c1
    num *= t
    den = np.multiply(mx, mx, out=t)
    den += c1 / 2
    my2 = np.multiply(my, my, out=my)
    my2 += c1 / 2
    den += my2
    vx += vy
    den *= vx
    num /= den
    if mask is None:
        return _mean(num)
    n = int(np.count_nonzero(mask))
    if n == 0:
        return 0.0
    num *= mask[..., None]
    return _mean(num, n)


def _mean(a: np.ndarray, count: int | None = None) -> float:
    """Sum over an HxWxC float32 image (C <= 4), accumulated in double by OpenCV in
    one pass, divided by ``count`` pixels (default all) times C. A map of exact
    ones gives exactly 1.0."""
    c = a.shape[2] if a.ndim == 3 else 1
    n = a.shape[0] * a.shape[1] if count is None else count
    return float(sum(cv2.sumElems(a)[:c]) / (n * c))
