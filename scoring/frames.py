"""Frame loading: parallel decode to uint8 RGB, validation, upload to the device.

Contract: every shot, whether given as image files or as a tensor, becomes a list
of HxWx3 ``uint8`` RGB arrays of one size. Tensor input is quantised to 8 bits
exactly like a PNG would be, so a shot scores the same whichever way it arrives.
Frames travel to the device as uint8 (a quarter of the float32 bytes) and are
converted to float in [0, 1] there.

Problems are reported as :class:`FrameError` with a message meant for humans;
the Scorer turns them into ``status="failed"`` results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from scoring.profile import StageTimes, timed

#: Smaller frames cannot carry the 11x11 SSIM window, DIS patches or ORB features.
MIN_FRAME_SIDE = 32


#: OpenCV >= 4.10 decodes straight to RGB (same semantics as IMREAD_COLOR, no
#: BGR->RGB pass). Measured on the 3x512x512 benchmark PNGs, one thread: 6.3 ms
#: per frame vs 6.5 with IMREAD_COLOR + cvtColor and 6.9 with Pillow 13.
_IMREAD_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)


class FrameError(ValueError):
    """Input frames are unusable; ``str(err)`` is the reason reported to callers."""


def decode_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode one image file to an HxWx3 uint8 RGB array.

    Grey images are expanded to three channels, alpha is dropped and 16-bit
    images are reduced to 8 bits (OpenCV ``IMREAD_COLOR`` semantics).

    Raises:
        FrameError: the file is missing, unreadable or not a decodable image.
    """
    p = Path(path)
    if not p.is_file():
        raise FrameError(f"missing frame file: {p}")
    try:
        # np.fromfile + imdecode (instead of imread) reads paths with any
        # characters and lets us tell "cannot read" from "cannot decode".
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as exc:
        raise FrameError(f"cannot read frame file {p}: {exc}") from exc
    try:
        flag = cv2.IMREAD_COLOR if _IMREAD_RGB is None else _IMREAD_RGB
        img = cv2.imdecode(data, flag) if data.size else None
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV allows
        raise FrameError(f"undecodable image {p}: {str(exc).strip().splitlines()[-1]}") from exc
    if img is None:
        raise FrameError(f"corrupt or undecodable image: {p}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if _IMREAD_RGB is None else img


def decode_many(
    paths: Sequence[str | os.PathLike[str]], pool: Executor, times: StageTimes | None = None
) -> list[np.ndarray | FrameError]:
    """Decode files in parallel (OpenCV releases the GIL while decoding).

    Returns one entry per path, in order: the array, or the FrameError that
    decoding raised, so one bad file never hides the results of the others.
    ``times`` (optional) accumulates the decoding time under ``decode``.
    """

    def one(p: str | os.PathLike[str]) -> np.ndarray | FrameError:
        with timed(times, "decode"):
            try:
                return decode_image(p)
            except FrameError as exc:
                return exc

    return list(pool.map(one, paths))


def tensor_to_frames(frames: Tensor) -> list[np.ndarray]:
    """Convert a [N, C, H, W] tensor (C in {1, 3}) to a list of HxWx3 uint8 arrays.

    Float tensors must be finite and within [0, 1]; uint8 tensors are taken as is.

    Raises:
        FrameError: wrong shape, channel count or dtype, NaN/Inf or out-of-range values.
    """
    if frames.ndim != 4:
        raise FrameError(f"frame tensor must be [N, C, H, W], got shape {tuple(frames.shape)}")
    if frames.shape[1] not in (1, 3):
        raise FrameError(f"frame tensor must have 1 or 3 channels, got {frames.shape[1]}")
    if frames.numel() == 0:
        raise FrameError(f"frame tensor is empty, shape {tuple(frames.shape)}")
    t = frames.detach()
    if t.dtype == torch.uint8:
        u8 = t
    elif t.is_floating_point():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise FrameError(f"frame tensor contains {bad} NaN/Inf values")
        lo, hi = float(t.min()), float(t.max())
        if lo < 0.0 or hi > 1.0:
            raise FrameError(f"float frame tensor must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
        # Round half up, the same mapping as PNG encoders use for [0,1] floats.
        u8 = (t.float() * 255.0 + 0.5).floor_().to(torch.uint8)
    else:
        raise FrameError(f"frame tensor dtype must be uint8 or floating point, got {t.dtype}")
    if u8.shape[1] == 1:
        u8 = u8.expand(-1, 3, -1, -1)
    arr = u8.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return [arr[i] for i in range(arr.shape[0])]


def check_same_size(frames: Sequence[np.ndarray], what: str = "frame") -> tuple[int, int]:
    """Return (H, W) shared by all frames.

    Raises:
        FrameError: sizes differ, or frames are smaller than MIN_FRAME_SIDE.
    """
    h, w = frames[0].shape[:2]
    for i, f in enumerate(frames):
        if f.shape[:2] != (h, w):
            raise FrameError(
                f"{what}s have different sizes: {what} 0 is {w}x{h}, {what} {i} is {f.shape[1]}x{f.shape[0]}"
            )
    if min(h, w) < MIN_FRAME_SIDE:
        raise FrameError(f"{what}s are {w}x{h}; both sides must be at least {MIN_FRAME_SIDE} px")
    return h, w


def to_device_float(frames: Sequence[np.ndarray], device: torch.device) -> Tensor:
    """Stack HxWx3 uint8 frames, upload as uint8, return float [N, 3, H, W] in [0, 1].

    The result is channels_last (the HWC memory order of the decoded frames is
    kept, no transpose copy), which is the layout the SSIM kernels want.
    """
    u8 = torch.from_numpy(np.stack(frames))  # [N, H, W, 3]
    if device.type == "cuda":
        u8 = u8.pin_memory().to(device, non_blocking=True)
    return u8.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
