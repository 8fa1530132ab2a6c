"""SSIM: torchmetrics is the definition (1e-5), scikit-image a second oracle (2e-4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from skimage.metrics import structural_similarity as sk_ssim
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from scoring import ssim_between, ssim_pairs
from scoring.ssim import PAD, gaussian_window, ssim_hwc_uint8


def _frames(n: int, c: int, h: int, w: int, noise: float, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Smooth random structure plus per-frame noise, so consecutive SSIM is well below 1."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, c, max(2, h // 8), max(2, w // 8), generator=g)
    smooth = F.interpolate(base, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    x = smooth.repeat(n, 1, 1, 1) + noise * torch.rand(n, c, h, w, generator=g)
    return x.clamp(0, 1).to(dtype)


def _oracle(frames: torch.Tensor, data_range: float) -> torch.Tensor:
    return tm_ssim(frames[:-1], frames[1:], data_range=data_range, reduction="none")


@pytest.mark.parametrize(
    ("n", "c", "h", "w", "noise"),
    [(6, 3, 96, 128, 0.05), (5, 3, 64, 80, 0.5), (4, 1, 37, 50, 0.2), (3, 3, 11, 11, 0.3), (9, 3, 48, 40, 0.0)],
)
def test_matches_torchmetrics(n: int, c: int, h: int, w: int, noise: float) -> None:
    x = _frames(n, c, h, w, noise)
    got = ssim_pairs(x, data_range=1.0)
    assert got.shape == (n - 1,)
    assert torch.allclose(got, _oracle(x, 1.0), atol=1e-5, rtol=0)


def test_chunking_does_not_change_results() -> None:
    x = _frames(11, 3, 64, 64, 0.1)
    whole = ssim_pairs(x, 1.0, chunk_frames=11)  # every frame in one pass
    # Chunk boundaries fall in different places for each size; frames at a boundary are in two chunks.
    for frames_per_chunk in (2, 3, 5):
        got = ssim_pairs(x, 1.0, chunk_frames=frames_per_chunk)
        assert torch.allclose(got, whole, atol=1e-6, rtol=0), frames_per_chunk
    assert torch.allclose(ssim_pairs(x, 1.0, max_batch_bytes=1), whole, atol=1e-6, rtol=0)  # the minimum chunk


def test_data_range_255_float64() -> None:
    x = _frames(4, 3, 40, 56, 0.1, dtype=torch.float64) * 255.0
    got = ssim_pairs(x, data_range=255.0)
    assert got.dtype == torch.float64
    assert torch.allclose(got, _oracle(x, 255.0), atol=1e-10, rtol=0)


def test_channels_last_input() -> None:
    x = _frames(4, 3, 64, 64, 0.1)
    assert torch.allclose(ssim_pairs(x.contiguous(memory_format=torch.channels_last), 1.0), ssim_pairs(x, 1.0))


def test_general_pairs_match_torchmetrics() -> None:
    x = _frames(3, 3, 64, 72, 0.2, seed=1)
    y = _frames(3, 3, 64, 72, 0.2, seed=2)
    oracle = tm_ssim(x, y, data_range=1.0, reduction="none")
    assert torch.allclose(ssim_between(x, y, 1.0), oracle, atol=1e-5, rtol=0)
    ones = torch.ones(3, 1, 64, 72, dtype=torch.bool)
    assert torch.allclose(ssim_between(x, y, 1.0, mask=ones), oracle, atol=1e-5, rtol=0)
    assert torch.allclose(ssim_between(x, y, 1.0, max_batch_bytes=1), oracle, atol=1e-5, rtol=0)


def test_masked_mean_and_empty_mask() -> None:
    x = _frames(2, 3, 32, 32, 0.3, seed=3)
    y = x.clone()
    y[:, :, :, 16:] = 1.0 - y[:, :, :, 16:]  # right half destroyed
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, :, :8] = 1.0  # far enough from the damage that the window never sees it
    assert torch.allclose(ssim_between(x, y, 1.0, mask=mask), torch.ones(2), atol=1e-6)
    assert torch.equal(ssim_between(x, y, 1.0, mask=torch.zeros(2, 1, 32, 32)), torch.zeros(2))


def test_identical_frames_score_exactly_one() -> None:
    # Exactly 1.0, as torchmetrics gives: a frozen shot must look perfectly
    # stable so that the composite, not rounding noise, is what penalises it.
    x = _frames(1, 3, 64, 64, 0.3).repeat(5, 1, 1, 1)
    assert torch.equal(ssim_pairs(x, 1.0), torch.ones(4))
    assert torch.equal(ssim_between(x[:2], x[2:4], 1.0), torch.ones(2))


def test_brightness_flicker_lowers_ssim() -> None:
    x = _frames(1, 3, 64, 64, 0.1).repeat(6, 1, 1, 1)
    flick = x.clone()
    flick[1::2] = (flick[1::2] + 0.1).clamp(0, 1)
    assert ssim_pairs(flick, 1.0).max() < ssim_pairs(x, 1.0).min() - 0.005


@pytest.mark.parametrize("channels", [1, 3])
def test_crop_border_matches_skimage(channels: int) -> None:
    x = _frames(4, channels, 70, 90, 0.2, seed=4)
    ours = ssim_pairs(x, 1.0, crop_border=True)
    ref = []
    for i in range(3):
        a, b = x[i].numpy(), x[i + 1].numpy()
        ref.append(
            sk_ssim(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0)
        )
    assert np.allclose(ours.numpy(), np.array(ref), atol=2e-4, rtol=0)


def test_border_conventions_differ_only_at_the_border() -> None:
    """Full-map (torchmetrics) and cropped (skimage) means differ because of the
    reflect-padded border; the interior maps are identical. docs/SCORING.md."""
    x = _frames(3, 3, 64, 64, 0.4, seed=5)
    full = ssim_pairs(x, 1.0)
    crop = ssim_pairs(x, 1.0, crop_border=True)
    assert not torch.allclose(full, crop, atol=1e-4)
    # Recompose the full mean from interior mean + border values of torchmetrics' map.
    _, ssim_map = tm_ssim(x[:-1], x[1:], data_range=1.0, reduction="none", return_full_image=True)
    interior = ssim_map[..., PAD:-PAD, PAD:-PAD].mean(dim=(1, 2, 3))
    assert torch.allclose(interior, crop, atol=1e-5, rtol=0)


def test_gaussian_window_is_torchmetrics_window() -> None:
    g = gaussian_window(torch.float64, "cpu")
    assert g.shape == (11,)
    assert torch.isclose(g.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.argmax(g) == 5


@pytest.mark.parametrize(
    ("frames", "data_range", "match"),
    [
        (torch.rand(1, 3, 32, 32), 1.0, "at least 2"),
        (torch.rand(3, 32, 32), 1.0, r"\[N, C, H, W\]"),
        (torch.rand(2, 3, 8, 32), 1.0, "below"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), 1.0, "float"),
        (torch.rand(2, 3, 32, 32), 0.0, "data_range"),
        (torch.rand(2, 3, 32, 32), float("nan"), "data_range"),
    ],
)
def test_rejects_bad_arguments(frames: torch.Tensor, data_range: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ssim_pairs(frames, data_range)


def test_float32_accuracy_against_float64() -> None:
    """Shifted second moments keep float32 SSIM within 1e-6 of a float64 evaluation
    (float64 ssim_pairs equals torchmetrics to ~1e-15, see test_data_range_255_float64)."""
    x = _frames(5, 3, 64, 64, 0.1, seed=6)
    exact = ssim_pairs(x.double(), 1.0)
    assert torch.allclose(ssim_pairs(x, 1.0).double(), exact, atol=1e-6, rtol=0)


# ------------------------------------------------------------ 8-bit entry points


def _u8_frames(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """uint8 [N, 3, H, W] (channels_last order, as decoded HWC frames stack)."""
    x = _frames(n, 3, h, w, 0.2, seed=seed)
    return (x * 255.0 + 0.5).floor().to(torch.uint8).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def test_opencv_ssim_matches_ssim_between() -> None:
    """ssim_hwc_uint8 (OpenCV, the Scorer's CPU path for motion-compensated SSIM) and
    ssim_between (torch, the device path) agree within 1e-6, masked or not."""
    u8 = _u8_frames(2, 40, 56, seed=8)
    x, y = (u8[i].permute(1, 2, 0).contiguous().numpy() for i in (0, 1))
    mask = np.random.default_rng(0).random((40, 56)) > 0.3
    xt, yt = u8[:1].float() / 255.0, u8[1:].float() / 255.0
    ref = float(ssim_between(xt, yt, 1.0))
    ref_masked = float(ssim_between(xt, yt, 1.0, mask=torch.from_numpy(mask)[None, None]))
    assert ssim_hwc_uint8(x, y) == pytest.approx(ref, abs=1e-6)
    assert ssim_hwc_uint8(x, y, mask) == pytest.approx(ref_masked, abs=1e-6)
    assert float(tm_ssim(xt, yt, data_range=1.0)) == pytest.approx(ssim_hwc_uint8(x, y), abs=1e-5)
    assert ssim_hwc_uint8(x, x) == 1.0 and ssim_hwc_uint8(x, x, mask) == 1.0  # exactly, like the torch paths
    assert ssim_hwc_uint8(x, y, np.zeros((40, 56), bool)) == 0.0
    with pytest.raises(ValueError, match="uint8"):
        ssim_hwc_uint8(x.astype(np.float32), y)
