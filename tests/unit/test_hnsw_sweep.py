"""The HNSW sweep's pieces on small data: exact search, recall, the Pareto front, recommendations and settings."""

from __future__ import annotations

import numpy as np

from tritonrepo.perf import hnsw
from tritonrepo.perf.hnsw import Row


def _unit(rng, n, d=32):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_top_k_in_blocks_equals_a_full_sort():
    rng = np.random.default_rng(0)
    base, queries = _unit(rng, 1000), _unit(rng, 20)
    expected = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    assert (hnsw.exact_top_k(base, queries, block=64) == expected).all()


def test_sweep_recall_grows_with_ef_search_and_is_exact_when_ef_covers_the_set():
    rng = np.random.default_rng(1)
    rows = hnsw.sweep(_unit(rng, 2000), _unit(rng, 50), grid_m=(8,), grid_efc=(32,), grid_efs=(10, 2000))
    assert rows[0].recall <= rows[1].recall and rows[1].recall >= 0.99
    assert rows[0].memory_mb > 2000 * 32 * 4 / 2**20  # vectors + links


def _row(recall, p95, m=16, efs=64, memory=10.0):
    return Row(vectors=1000, m=m, ef_construction=128, ef_search=efs, recall=recall, p50_ms=p95 / 2, p95_ms=p95,
               build_s=1.0, memory_mb=memory)


def test_pareto_front_and_recommendation():
    rows = [_row(0.90, 0.1), _row(0.96, 0.2), _row(0.95, 0.3), _row(0.99, 0.5), _row(0.995, 0.4, m=32, memory=20)]
    front = hnsw.pareto(rows)
    assert [(r.recall, r.p95_ms) for r in front] == [(0.90, 0.1), (0.96, 0.2), (0.995, 0.4)]
    assert hnsw.recommend(rows, 0.95).recall == 0.96
    assert hnsw.recommend(rows, 0.99).m == 32
    assert hnsw.recommend(rows, 0.999) is None


def test_index_settings_carry_the_parameters_for_opensearch_and_elasticsearch():
    s = hnsw.index_settings(_row(0.99, 0.5, m=24, efs=96), 384)
    method = s["opensearch"]["mappings"]["properties"]["embedding"]["method"]
    assert method == {"name": "hnsw", "engine": "faiss", "space_type": "innerproduct",
                      "parameters": {"m": 24, "ef_construction": 128, "ef_search": 96}}
    es = s["elasticsearch"]
    assert es["mappings"]["properties"]["embedding"]["index_options"] == {"type": "hnsw", "m": 24,
                                                                           "ef_construction": 128}
    assert es["query_time"]["knn"]["num_candidates"] == 96


def test_synthetic_vectors_are_unit_length_and_stay_near_the_real_ones():
    rng = np.random.default_rng(2)
    real = _unit(rng, 100, 384)
    syn = hnsw.synthetic(real, 500, noise=0.03, seed=0)
    assert syn.shape == (500, 384) and np.allclose(np.linalg.norm(syn, axis=1), 1, atol=1e-5)
    assert (syn @ real.T).max(axis=1).min() > 0.7  # each point sits close to a real embedding
