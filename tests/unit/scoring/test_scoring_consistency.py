"""Consistency against a reference: weight-free embedding, ORB keypoints, backends."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from scoring.consistency import (
    EmbeddingBackend,
    WeightFreeEmbedding,
    embedding_similarity,
    keypoint_agreement,
    orb_keypoints,
    sample_indices,
    weight_free_features,
)


def _u8(img: np.ndarray) -> np.ndarray:
    return (img * 255.0 + 0.5).astype(np.uint8)


def _sim(a: np.ndarray, b: np.ndarray) -> float:
    ea, eb = torch.from_numpy(weight_free_features(a)), torch.from_numpy(weight_free_features(b))
    return float(embedding_similarity(ea, eb[None])[0])


def test_embedding_is_unit_norm_and_self_similar(texture_factory: Callable[..., np.ndarray]) -> None:
    img = _u8(texture_factory(96, 128))
    e = weight_free_features(img)
    assert np.isclose(np.linalg.norm(e), 1.0)
    assert _sim(img, img) == pytest.approx(1.0)


def test_embedding_ranks_same_scene_above_other_scene(texture_factory: Callable[..., np.ndarray]) -> None:
    ref = _u8(texture_factory(128, 128))
    moved = _u8(texture_factory(128, 128, 6.0, 2.0))
    other = _u8(texture_factory(128, 128, seed=7))
    recoloured = ref[..., ::-1].copy()  # same structure, different palette
    s_moved, s_other, s_recol = _sim(ref, moved), _sim(ref, other), _sim(ref, recoloured)
    assert s_moved > 0.95
    assert s_moved > s_other + 0.05
    assert s_moved > s_recol + 0.05


def test_keypoints_match_same_scene_not_other(texture_factory: Callable[..., np.ndarray]) -> None:
    ref = orb_keypoints(_u8(texture_factory(256, 256)))
    assert ref.count >= 100
    same = keypoint_agreement(ref, orb_keypoints(_u8(texture_factory(256, 256, 4.0, 0.0))))
    other = keypoint_agreement(ref, orb_keypoints(_u8(texture_factory(256, 256, seed=7))))
    assert keypoint_agreement(ref, ref) == pytest.approx(1.0)
    assert same > 0.4
    assert other < 0.1


def test_flat_reference_has_no_keypoints() -> None:
    flat = np.full((64, 64, 3), 128, np.uint8)
    kp = orb_keypoints(flat)
    assert kp.count == 0
    assert keypoint_agreement(kp, kp) == 0.0


def test_embedding_similarity_clamps_and_spreads() -> None:
    ref = torch.tensor([1.0, 0.0])
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.99, (1 - 0.99**2) ** 0.5]])
    sim = embedding_similarity(ref, emb)
    assert sim[0] == pytest.approx(1.0)
    assert sim[1] == pytest.approx(0.0)
    assert sim[2] == 0.0
    assert sim[3] == pytest.approx(0.9, abs=1e-6)


def test_weight_free_backend_satisfies_protocol(texture_factory: Callable[..., np.ndarray]) -> None:
    backend = WeightFreeEmbedding()
    assert isinstance(backend, EmbeddingBackend)
    frames = torch.from_numpy(np.stack([texture_factory(64, 64), texture_factory(64, 64, seed=3)]))
    out = backend.embed(frames.permute(0, 3, 1, 2).float())
    assert out.shape[0] == 2 and out.ndim == 2 and torch.isfinite(out).all()
    direct = weight_free_features(_u8(texture_factory(64, 64)))
    assert np.allclose(out[0].numpy(), direct, atol=1e-6)


def test_sample_indices() -> None:
    assert sample_indices(5, 8, reference_is_first_frame=True) == [1, 2, 3, 4]
    assert sample_indices(5, 8, reference_is_first_frame=False) == [0, 1, 2, 3, 4]
    idx = sample_indices(100, 8, reference_is_first_frame=True)
    assert len(idx) == 8 and idx[0] == 1 and idx[-1] == 99
