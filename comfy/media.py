"""What an output file is (from its bytes) and how to get RGB frames out of it.

Server file names and extensions are never trusted: :func:`sniff` reads the magic bytes. Stills
are PNG/JPEG/WEBP/BMP/TIFF; animated images are APNG, animated WEBP and GIF (Pillow reads every
frame); videos are MP4/MOV, WEBM/MKV and AVI (OpenCV's bundled FFmpeg decodes them).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageSequence

MediaKind = Literal["still", "animated", "video"]


@dataclass(frozen=True, slots=True)
class Media:
    kind: MediaKind
    ext: str
    """The extension we store an original under (ours, from the bytes)."""


def sniff(data: bytes) -> Media | None:
    """The kind of an output file from its first bytes; ``None`` for what is not a picture or video."""
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        idat = data.find(b"IDAT")
        actl = data.find(b"acTL", 0, idat if idat > 0 else len(data))
        return Media("animated" if actl > 0 else "still", ".png")
    if head.startswith(b"GIF8"):
        return Media("animated" if _frame_count(data) > 1 else "still", ".gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        animated = head[12:16] == b"VP8X" and len(head) > 20 and bool(head[20] & 0x02)
        return Media("animated" if animated else "still", ".webp")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Media("video", ".avi")
    if head.startswith(b"\xff\xd8\xff"):
        return Media("still", ".jpg")
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return Media("still", ".tiff")
    if head.startswith(b"BM"):
        return Media("still", ".bmp")
    if head[4:8] == b"ftyp":
        return Media("video", ".mov" if head[8:12] == b"qt  " else ".mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Media("video", ".webm" if b"webm" in head else ".mkv")
    return None


def _frame_count(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return getattr(image, "n_frames", 1)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR, without decoding it."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def still_frame(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def animated_frames(data: bytes) -> list[np.ndarray]:
    """Every frame of an APNG / animated WEBP / GIF as HxWx3 uint8 RGB, composited as displayed."""
    with Image.open(io.BytesIO(data)) as image:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]


def video_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video file as HxWx3 uint8 RGB. Raises ``ValueError`` if none decodes."""
    capture = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not frames:
        raise ValueError(f"no frame could be decoded from {path.name}")
    return frames


def encode_png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
