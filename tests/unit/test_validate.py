import numpy as np
import pytest

from tritonrepo.errors import ValidationError
from tritonrepo.validate import embedding_checks, neighbour_recall


def _unit(rows, dim=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_embeddings_pass_every_check():
    ref = _unit(50)
    checks = embedding_checks("a", ref, ref.copy(), min_cos=0.9999, mean_cos=0.99, recall_k=5, min_recall=0.95)
    checks.raise_if_failed()
    assert checks.metrics["recall@5"] == 1.0 and checks.metrics["cosine_min"] >= 0.9999


def test_every_failed_bound_is_reported_at_once():
    ref = _unit(50)
    noisy = ref + np.random.default_rng(1).normal(scale=0.3, size=ref.shape).astype(np.float32)
    checks = embedding_checks("model.int8.onnx", ref, noisy, min_cos=0.9999, mean_cos=0.99, recall_k=5,
                              min_recall=0.95)
    with pytest.raises(ValidationError) as e:
        checks.raise_if_failed()
    assert len(e.value.failures) == 3
    assert "model.int8.onnx" in str(e.value) and "cosine_min" in str(e.value) and "recall@5" in str(e.value)


def test_shape_mismatch_and_nan_fail():
    ref = _unit(10)
    assert embedding_checks("a", ref, ref[:5], min_cos=0.9).failures
    bad = ref.copy()
    bad[3] = np.nan
    assert embedding_checks("a", ref, bad, min_cos=0.9).failures


def test_neighbour_recall_drops_when_neighbours_change():
    ref = _unit(100)
    shuffled = ref[np.random.default_rng(2).permutation(100)]
    assert neighbour_recall(ref, ref) == 1.0
    assert neighbour_recall(ref, shuffled) < 0.3
