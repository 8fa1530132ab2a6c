"""Limited animation: one still keyframe moved by a virtual camera into a shot's frames, as TV anime does.

A keyframe preset renders one picture; :func:`animate_keyframe` films it with the shot's planned camera
movement (:func:`camera_move` maps the plan's label to one of :data:`MOVES`). Contracts:

* Each output frame is a *window* of the keyframe, of the output's aspect ratio, resampled to the output
  size (bilinear ``cv2.warpAffine``, so sub-pixel moves are smooth). The window is the largest that holds
  the whole move: every sampled point lies within the keyframe's pixel centres (up to OpenCV's 1/32 px
  fixed-point rounding), so no border fill is ever shown. Moving shots therefore magnify the keyframe by
  up to ``1 / MIN_WINDOW``; a keyframe rendered larger than the output (overscan) keeps them sharp.
* Speeds are stated per second of screen time in output pixels, so the same ``motion`` moves as far
  per second at any fps. ``motion`` is the prompt's ``camera_motion`` (0 still, 1 a tracking shot's speed);
  at ``motion == 0`` every frame equals frame 0, for every move.
* Sign convention, that of :func:`scoring.flow.dis_flow` (the content's displacement from one frame to
  the next): ``pan`` moves the camera right, so the content moves left (dx < 0); ``tilt`` moves it up
  (a crane rising), so the content moves down (dy > 0). :func:`expected_shift` gives that (dx, dy).
* ``push-in`` magnifies the content about the output's centre by :func:`expected_zoom` (> 1) per frame,
  so the content at offset ``r`` from the centre moves by ``(zoom - 1) r``; ``pull-out`` is the reverse
  (zoom < 1) and ends on the largest window. ``shake`` is a handheld sway: each axis a seeded sum of three
  sinusoids of 0.4-2 Hz with random phases, bounded by ``SHAKE x motion`` of the output's shorter side.
* When a move would need a window smaller than ``MIN_WINDOW`` of the largest one, its speed is lowered
  until it fits (long or fast shots move less than asked; :func:`expected_shift` reports the lowered speed).
* Deterministic: the same inputs give byte-identical frames.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

MOVES = ("static", "pan", "tilt", "push-in", "pull-out", "shake")

# At motion 1: a pan crosses FULL_PAN of the output width per second (a tilt, of its height); a push-in
# magnifies by FULL_ZOOM per second; a shake sways by up to SHAKE of the output's shorter side.
FULL_PAN = 0.2
FULL_ZOOM = 1.15
SHAKE = 0.01
# The smallest window, relative to the largest that fits: below it the magnified keyframe turns visibly soft.
MIN_WINDOW = 0.6
SHAKE_HZ = (0.4, 2.0)

# The plan's camera_movement labels (director.refiner.CAMERA_MOTION); anything else films a static shot.
_LABELS = {
    "locked-off": "static", "slow push-in": "push-in", "dolly": "push-in", "pull-back": "pull-out",
    "slow pan": "pan", "whip pan": "pan", "tracking": "pan", "orbit": "pan", "crane": "tilt", "handheld": "shake",
}


def camera_move(movement: str) -> str:
    """Map a plan's ``camera_movement`` label (or a :data:`MOVES` name) to one of :data:`MOVES`.

    Unknown labels map to ``static``: a still shot is always a valid rendering of a plan.
    """
    label = movement.strip().lower()
    return label if label in MOVES else _LABELS.get(label, "static")


def _pan(kf_ext: float, out_ext: float, a0: float, v: float, n: int) -> tuple[float, float]:
    """Magnification and speed (output px per frame) of a pan along one axis that fits the keyframe."""
    a = min(a0, kf_ext / (out_ext + v * (n - 1)))
    if a < MIN_WINDOW * a0:
        a = MIN_WINDOW * a0
        v = (kf_ext - a * out_ext) / (a * (n - 1))
    return a, v


def _zoom(motion: float, fps: int, n: int) -> float:
    z = FULL_ZOOM ** (motion / fps)
    if n > 1 and z ** (n - 1) > 1 / MIN_WINDOW:
        z = (1 / MIN_WINDOW) ** (1 / (n - 1))
    return z


def camera_path(movement: str, *, keyframe_size: tuple[int, int], frame_count: int, fps: int, motion: float,
                seed: int, width: int, height: int) -> list[np.ndarray]:
    """Per frame, the 2x3 affine matrix from output pixel (u, v) to keyframe pixel (x, y) (float64).

    ``keyframe_size`` is (width, height). Output pixel centres map into ``[0, kw - 1] x [0, kh - 1]``.
    """
    kw, kh = keyframe_size
    if min(kw, kh, width, height) < 2 or frame_count < 1 or fps < 1 or motion < 0:
        raise ValueError("camera_path needs sizes >= 2, frame_count >= 1, fps >= 1 and motion >= 0")
    move = camera_move(movement)
    n, kx, ky, ex, ey = frame_count, kw - 1, kh - 1, width - 1, height - 1
    a0 = min(kx / ex, ky / ey)
    t = np.arange(n, dtype=np.float64)
    mags, cx, cy = np.full(n, a0), np.full(n, kx / 2), np.full(n, ky / 2)
    if move == "pan":
        a, v = _pan(kx, ex, a0, FULL_PAN * motion * width / fps, n)
        mags[:], cx = a, kx / 2 + a * v * (t - (n - 1) / 2)
    elif move == "tilt":
        a, v = _pan(ky, ey, a0, FULL_PAN * motion * height / fps, n)
        mags[:], cy = a, ky / 2 - a * v * (t - (n - 1) / 2)
    elif move in ("push-in", "pull-out"):
        z = _zoom(motion, fps, n)
        mags = a0 * z ** -(t if move == "push-in" else n - 1 - t)
    elif move == "shake":
        amp = SHAKE * motion * min(width, height)
        a = max(MIN_WINDOW * a0, min(a0, kx / (ex + 2 * amp), ky / (ey + 2 * amp)))
        amp = min(amp, (kx - a * ex) / (2 * a), (ky - a * ey) / (2 * a))
        rng = np.random.default_rng(seed)
        mags[:] = a
        for centre in (cx, cy):
            freqs, phases = rng.uniform(*SHAKE_HZ, 3), rng.uniform(0, 2 * math.pi, 3)
            weights = rng.dirichlet(np.ones(3))
            sway = weights[:, None] * np.sin(2 * math.pi * freqs[:, None] * t / fps + phases[:, None])
            centre += a * amp * sway.sum(axis=0)
    return [np.array([[m, 0.0, x - m * ex / 2], [0.0, m, y - m * ey / 2]]) for m, x, y in zip(mags, cx, cy)]


def expected_shift(movement: str, *, motion: float, fps: int, width: int, height: int,
                   frame_count: int, keyframe_size: tuple[int, int] | None = None) -> tuple[float, float]:
    """The content's (dx, dy) per frame, output pixels, in :func:`scoring.flow.dis_flow`'s convention.

    ``(-v, 0)`` for a pan, ``(0, v)`` for a tilt, after any slow-down to fit the keyframe (whose size
    defaults to the output's); ``(0, 0)`` for the other moves (a shake sways about a fixed point).
    """
    kw, kh = keyframe_size or (width, height)
    a0 = min((kw - 1) / (width - 1), (kh - 1) / (height - 1))
    move = camera_move(movement)
    if move == "pan":
        return -_pan(kw - 1, width - 1, a0, FULL_PAN * motion * width / fps, frame_count)[1], 0.0
    if move == "tilt":
        return 0.0, _pan(kh - 1, height - 1, a0, FULL_PAN * motion * height / fps, frame_count)[1]
    return 0.0, 0.0


def expected_zoom(movement: str, *, motion: float, fps: int, frame_count: int) -> float:
    """The content's magnification per frame about the output's centre: > 1 pushing in, < 1 pulling out."""
    move = camera_move(movement)
    if move == "push-in":
        return _zoom(motion, fps, frame_count)
    if move == "pull-out":
        return 1 / _zoom(motion, fps, frame_count)
    return 1.0


def animate_keyframe(keyframe: np.ndarray, *, movement: str, frame_count: int, fps: int, motion: float, seed: int,
                     width: int | None = None, height: int | None = None) -> list[np.ndarray]:
    """``frame_count`` HxWx3 uint8 frames of ``keyframe`` (HxWx3 uint8 RGB) filmed by the planned camera.

    The output size defaults to the keyframe's; frame 0 is the start of the move.
    """
    if keyframe.dtype != np.uint8 or keyframe.ndim != 3 or keyframe.shape[2] != 3:
        raise ValueError("animate_keyframe needs an HxWx3 uint8 keyframe")
    kh, kw = keyframe.shape[:2]
    w, h = width or kw, height or kh
    path = camera_path(movement, keyframe_size=(kw, kh), frame_count=frame_count, fps=fps, motion=motion,
                       seed=seed, width=w, height=h)
    frames: list[np.ndarray] = []
    for i, matrix in enumerate(path):
        if i and np.array_equal(matrix, path[i - 1]):
            # A still camera: copy rather than resample, so the frames are identical by construction.
            frames.append(frames[-1].copy())
            continue
        frames.append(cv2.warpAffine(keyframe, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REFLECT101))
    return frames
