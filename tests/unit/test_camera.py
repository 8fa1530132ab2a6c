"""render.camera: limited animation of one keyframe, measured with the project's own optical flow."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from render.camera import (
    FULL_PAN,
    MIN_WINDOW,
    MOVES,
    SHAKE,
    animate_keyframe,
    camera_move,
    camera_path,
    expected_shift,
    expected_zoom,
)
from scoring.flow import dis_flow

W, H = 128, 96
# Flow is unreliable within a few pixels of the border; measure inside it.
EDGE = 12


def texture(width: int = W, height: int = H, seed: int = 0) -> np.ndarray:
    """Band-limited RGB noise: flow needs texture at every point, without aliasing."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255
    return smooth.round().astype(np.uint8)


def grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def interior_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return dis_flow(grey(a), grey(b))[EDGE:-EDGE, EDGE:-EDGE]


def zoom_fit(flow: np.ndarray) -> tuple[float, float]:
    """Least-squares slopes of dx against x and dy against y about the output's centre (pixel indices)."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[EDGE:EDGE + h, EDGE:EDGE + w].astype(np.float64)
    rx, ry = xs - (W - 1) / 2, ys - (H - 1) / 2
    kx = float((flow[..., 0] * rx).sum() / (rx * rx).sum())
    ky = float((flow[..., 1] * ry).sum() / (ry * ry).sum())
    return kx, ky


@pytest.mark.parametrize(("label", "move"), [
    ("static", "static"), ("locked-off", "static"), ("slow push-in", "push-in"), ("push-in", "push-in"),
    ("dolly", "push-in"), ("pull-back", "pull-out"), ("pan", "pan"), ("slow pan", "pan"), ("whip pan", "pan"),
    ("tracking", "pan"), ("orbit", "pan"), ("crane", "tilt"), ("handheld", "shake"),
    ("something new", "static"), ("", "static"), (" Slow Pan ", "pan"),
])
def test_camera_move_maps_plan_labels(label: str, move: str) -> None:
    assert camera_move(label) == move


def test_camera_move_accepts_move_names() -> None:
    assert [camera_move(name) for name in MOVES] == list(MOVES)


@pytest.mark.parametrize("movement", MOVES)
def test_shape_dtype_and_count(movement: str) -> None:
    frames = animate_keyframe(texture(), movement=movement, frame_count=7, fps=12, motion=1.0, seed=3)
    assert len(frames) == 7
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)


def test_size_override() -> None:
    frames = animate_keyframe(texture(), movement="pan", frame_count=3, fps=12, motion=1.0, seed=0, width=80, height=48)
    assert all(f.shape == (48, 80, 3) for f in frames)


def test_rejects_bad_keyframe() -> None:
    with pytest.raises(ValueError):
        animate_keyframe(texture()[..., 0], movement="pan", frame_count=3, fps=12, motion=1.0, seed=0)


def test_static_same_size_is_the_keyframe() -> None:
    key = texture()
    frames = animate_keyframe(key, movement="locked-off", frame_count=5, fps=24, motion=1.0, seed=0)
    assert all(np.array_equal(f, key) for f in frames)


@pytest.mark.parametrize("movement", MOVES)
def test_motion_zero_is_still(movement: str) -> None:
    frames = animate_keyframe(texture(), movement=movement, frame_count=6, fps=24, motion=0.0, seed=5)
    assert all(np.array_equal(f, frames[0]) for f in frames)


@pytest.mark.parametrize("movement", MOVES)
def test_deterministic(movement: str) -> None:
    first = animate_keyframe(texture(), movement=movement, frame_count=6, fps=24, motion=1.0, seed=9)
    again = animate_keyframe(texture(), movement=movement, frame_count=6, fps=24, motion=1.0, seed=9)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize(("fps", "motion"), [(24, 1.0), (12, 0.5), (8, 1.5)])
def test_pan_moves_content_left_at_the_stated_speed(fps: int, motion: float) -> None:
    frames = animate_keyframe(texture(), movement="pan", frame_count=8, fps=fps, motion=motion, seed=0)
    dx, dy = expected_shift("pan", motion=motion, fps=fps, width=W, height=H, frame_count=8)
    assert dx == pytest.approx(-FULL_PAN * motion * W / fps) and dy == 0.0
    for a, b in zip(frames, frames[1:]):
        flow = interior_flow(a, b)
        assert float(np.median(flow[..., 0])) == pytest.approx(dx, abs=max(0.15, 0.1 * abs(dx)))
        assert abs(float(np.median(flow[..., 1]))) < 0.1


def test_tilt_moves_content_down_at_the_stated_speed() -> None:
    frames = animate_keyframe(texture(), movement="crane", frame_count=8, fps=12, motion=1.0, seed=0)
    dx, dy = expected_shift("crane", motion=1.0, fps=12, width=W, height=H, frame_count=8)
    assert dx == 0.0 and dy == pytest.approx(FULL_PAN * H / 12) and dy > 0
    for a, b in zip(frames, frames[1:]):
        flow = interior_flow(a, b)
        assert float(np.median(flow[..., 1])) == pytest.approx(dy, abs=max(0.15, 0.1 * dy))
        assert abs(float(np.median(flow[..., 0]))) < 0.1


def test_fps_sets_the_per_frame_step() -> None:
    slow = expected_shift("pan", motion=1.0, fps=24, width=W, height=H, frame_count=4)[0]
    fast = expected_shift("pan", motion=1.0, fps=12, width=W, height=H, frame_count=4)[0]
    assert fast == pytest.approx(2 * slow)


def test_long_pan_is_slowed_to_fit_the_keyframe() -> None:
    asked = -FULL_PAN * 2.0 * W / 8
    dx, _ = expected_shift("pan", motion=2.0, fps=8, width=W, height=H, frame_count=200)
    assert asked < dx < 0
    path = camera_path("pan", keyframe_size=(W, H), frame_count=200, fps=8, motion=2.0, seed=0, width=W, height=H)
    assert path[0][0, 0] == pytest.approx(MIN_WINDOW)
    # The camera crosses the whole keyframe: window from the left edge to the right edge.
    assert path[0][0, 2] == pytest.approx(0.0, abs=1e-9)
    assert path[-1][0, 0] * (W - 1) + path[-1][0, 2] == pytest.approx(W - 1)
    assert path[1][0, 2] - path[0][0, 2] == pytest.approx(-dx * path[0][0, 0])


@pytest.mark.parametrize("movement", MOVES)
@pytest.mark.parametrize(("frame_count", "motion", "keyframe_size", "out"), [
    (24, 1.0, (W, H), (W, H)), (200, 2.0, (W, H), (W, H)), (48, 1.5, (160, 90), (W, H)), (1, 1.0, (W, H), (64, 64)),
])
def test_windows_stay_inside_the_keyframe(movement: str, frame_count: int, motion: float,
                                          keyframe_size: tuple[int, int], out: tuple[int, int]) -> None:
    """Every sampled output pixel centre maps within the keyframe's pixel centres: no border fill."""
    kw, kh = keyframe_size
    w, h = out
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64).T
    path = camera_path(movement, keyframe_size=keyframe_size, frame_count=frame_count, fps=12, motion=motion, seed=4,
                       width=w, height=h)
    assert len(path) == frame_count
    for matrix in path:
        x, y = matrix @ corners
        assert x.min() >= -1e-9 and x.max() <= kw - 1 + 1e-9
        assert y.min() >= -1e-9 and y.max() <= kh - 1 + 1e-9
        smallest = MIN_WINDOW * min((kw - 1) / (w - 1), (kh - 1) / (h - 1))
        assert matrix[0, 0] == matrix[1, 1] and matrix[0, 0] >= smallest * (1 - 1e-9)


def test_push_in_flows_outward_by_the_zoom() -> None:
    frames = animate_keyframe(texture(), movement="slow push-in", frame_count=6, fps=8, motion=2.0, seed=0)
    zoom = expected_zoom("push-in", motion=2.0, fps=8, frame_count=6)
    assert zoom == pytest.approx(1.15 ** (2 / 8))
    for a, b in zip(frames, frames[1:]):
        flow = interior_flow(a, b)
        half = flow.shape[1] // 2
        assert np.median(flow[:, :20, 0]) < 0 < np.median(flow[:, -20:, 0])
        assert np.median(flow[:20, :, 1]) < 0 < np.median(flow[-20:, :, 1])
        assert abs(float(np.median(flow[:, half - 4:half + 4, 0]))) < 0.1
        kx, ky = zoom_fit(flow)
        assert kx == pytest.approx(zoom - 1, rel=0.15) and ky == pytest.approx(zoom - 1, rel=0.15)


def test_pull_out_flows_inward_and_ends_on_the_largest_window() -> None:
    frames = animate_keyframe(texture(), movement="pull-back", frame_count=6, fps=8, motion=2.0, seed=0)
    zoom = expected_zoom("pull-back", motion=2.0, fps=8, frame_count=6)
    assert zoom < 1
    assert np.array_equal(frames[-1], texture())
    for a, b in zip(frames, frames[1:]):
        flow = interior_flow(a, b)
        assert np.median(flow[:, :20, 0]) > 0 > np.median(flow[:, -20:, 0])
        kx, ky = zoom_fit(flow)
        assert kx == pytest.approx(zoom - 1, rel=0.15) and ky == pytest.approx(zoom - 1, rel=0.15)


def test_long_push_in_is_capped() -> None:
    zoom = expected_zoom("push-in", motion=2.0, fps=8, frame_count=100)
    assert zoom ** 99 == pytest.approx(1 / MIN_WINDOW)
    assert expected_zoom("pan", motion=1.0, fps=8, frame_count=10) == 1.0


def test_shake_is_small_bounded_and_seeded() -> None:
    key = texture()
    frames = animate_keyframe(key, movement="handheld", frame_count=24, fps=12, motion=2.0, seed=1)
    other = animate_keyframe(key, movement="handheld", frame_count=24, fps=12, motion=2.0, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(frames, other))
    amplitude = SHAKE * 2.0 * min(W, H)
    steps = [np.median(interior_flow(a, b).reshape(-1, 2), axis=0) for a, b in zip(frames, frames[1:])]
    assert max(float(np.hypot(*s)) for s in steps) > 0.02
    # Displacement from frame 0 never exceeds twice the amplitude on either axis.
    for frame in frames[1:]:
        offset = np.median(interior_flow(frames[0], frame).reshape(-1, 2), axis=0)
        assert np.all(np.abs(offset) <= 2 * amplitude + 0.15)
    path = camera_path("shake", keyframe_size=(W, H), frame_count=24, fps=12, motion=2.0, seed=1, width=W, height=H)
    centres = np.array([m @ [(W - 1) / 2, (H - 1) / 2, 1] for m in path])
    sway = (centres - [(W - 1) / 2, (H - 1) / 2]) / path[0][0, 0]
    assert np.abs(sway).max() <= amplitude + 1e-9 and np.abs(sway).max() > 0.2 * amplitude
