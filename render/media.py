"""The media store: frames on disk under safe names Tower chooses, addressed by relative URIs."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from events.models import FrameRef


def attempt_dir(scene_id: str, shot_number: int, attempt: int) -> Path:
    """Relative folder of one attempt; scene ids are validated to ``[A-Za-z0-9._:-]``."""
    safe_scene = scene_id.replace(":", "_")
    if safe_scene in {".", ".."}:
        raise ValueError(f"scene id {scene_id!r} cannot name a folder")
    return Path(safe_scene) / f"shot{shot_number:02d}" / f"attempt{attempt}"


def write_frames(root: Path, relative_dir: Path, frames: list[np.ndarray]) -> list[FrameRef]:
    """Write PNGs atomically (temp file + rename), so a crash never leaves half a frame."""
    folder = root / relative_dir
    folder.mkdir(parents=True, exist_ok=True)
    refs = []
    for index, frame in enumerate(frames):
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
        data = buffer.getvalue()
        name = f"frame_{index:04d}.png"
        temp = folder / f".{name}.tmp"
        temp.write_bytes(data)
        os.replace(temp, folder / name)
        refs.append(
            FrameRef(
                index=index,
                uri=(relative_dir / name).as_posix(),
                width=frame.shape[1],
                height=frame.shape[0],
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    return refs


def verified(root: Path, ref: FrameRef) -> Path:
    """The file of ``ref``, checked against its sha256: the frame scored is the frame the event names
    (a redelivered render may have rewritten the folder since)."""
    read_verified(root, ref)
    return resolve(root, ref.uri)


def read_verified(root: Path, ref: FrameRef) -> bytes:
    """The bytes of ``ref``'s file, checked against its sha256 (:func:`verified`)."""
    try:
        data = resolve(root, ref.uri).read_bytes()
    except OSError as exc:
        raise ValueError(f"frame {ref.uri} cannot be read: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != ref.sha256:
        raise ValueError(f"frame {ref.uri} changed since it was rendered (sha256 {digest[:12]}, expected {ref.sha256[:12]})")
    return data


def resolve(root: Path, uri: str) -> Path:
    """The file behind a frame URI; refuses URIs that escape the media root."""
    path = (root / uri).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"frame uri {uri!r} escapes the media store")
    return path
