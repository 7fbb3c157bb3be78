"""HNSW tuning for the search team: a sweep over M, ef_construction and ef_search (faiss ``IndexHNSWFlat``, the
implementation behind OpenSearch's faiss engine) on real served embeddings, plus a synthetic scale curve.

Real set: every unique sentence of the CoNLL-2003 files (Reuters) embedded by the served SBERT ensemble; 1,000 of them
are held out as queries. Each configuration is measured for recall@10 against exact inner-product search, single-
thread query latency p50/p95 (one query per call, as a search service sends them), build time (2 threads) and index
memory (faiss's serialized size: vectors + graph links). The recall/latency Pareto front is plotted, and the cheapest
configuration meeting each recall target becomes OpenSearch (faiss engine) and Elasticsearch index settings.

Synthetic scale: real embeddings perturbed by Gaussian noise and re-normalised (``noise`` per dimension), so points
keep the real set's cluster structure; queries are held-out real embeddings perturbed the same way. Isotropic
random vectors would have no neighbourhood structure at all and overstate how hard the search is. It shows how
build time, memory, latency and recall grow with size at fixed parameters; it is not a recall claim for real data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonrepo.paths import RUNS

log = logging.getLogger(__name__)

GRID_M = (8, 16, 32, 48)
GRID_EF_CONSTRUCTION = (64, 128, 256)
GRID_EF_SEARCH = (16, 32, 64, 128, 256)
TARGETS = (0.95, 0.99)
K = 10


@dataclass(frozen=True)
class Row:
    vectors: int
    m: int
    ef_construction: int
    ef_search: int
    recall: float
    p50_ms: float
    p95_ms: float
    build_s: float
    memory_mb: float


def served_embeddings(url: str, model: str = "sbert_int8") -> tuple[list[str], np.ndarray]:
    """Every unique CoNLL-2003 sentence (all splits) and its served embedding (cached in .runs/hnsw/)."""
    from tritonrepo.clients import EmbeddingClient
    from tritonrepo.datasets import conll_sentences

    texts = list(dict.fromkeys(s for split in ("train", "valid", "test") for s in conll_sentences(split)))
    key = hashlib.sha256(("\n".join(texts) + model).encode()).hexdigest()[:12]
    cache = RUNS / "hnsw" / f"embeddings-{model}-{key}.npy"
    if cache.exists():
        return texts, np.load(cache)
    with EmbeddingClient(url, model, timeout_s=3600) as client:
        vectors = client.embed(texts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return texts, vectors


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int = K, block: int = 100_000) -> np.ndarray:
    """Exact inner-product top k, in blocks of the base (bounded memory at a million vectors)."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(base), block):
        sims = queries @ base[start:start + block].T
        part = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
        i = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(-s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    return best_i


def _build(base: np.ndarray, m: int, ef_construction: int, threads: int):
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexHNSWFlat(base.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    t0 = time.perf_counter()
    index.add(base)
    return index, time.perf_counter() - t0


def _measure(index, queries: np.ndarray, truth: np.ndarray, ef_search: int) -> tuple[float, np.ndarray]:
    import faiss

    faiss.omp_set_num_threads(1)
    index.hnsw.efSearch = ef_search
    found = np.empty_like(truth)
    seconds = np.empty(len(queries))
    for i in range(len(queries)):
        t = time.perf_counter()
        found[i] = index.search(queries[i:i + 1], K)[1][0]
        seconds[i] = time.perf_counter() - t
    recall = np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth)])
    return float(recall), seconds * 1000


def sweep(base: np.ndarray, queries: np.ndarray, *, grid_m=GRID_M, grid_efc=GRID_EF_CONSTRUCTION,
          grid_efs=GRID_EF_SEARCH, build_threads: int = 2) -> list[Row]:
    import faiss

    truth = exact_top_k(base, queries)
    rows = []
    for m in grid_m:
        for efc in grid_efc:
            index, build_s = _build(base, m, efc, build_threads)
            memory = len(faiss.serialize_index(index)) / 2**20
            for efs in grid_efs:
                recall, ms = _measure(index, queries, truth, efs)
                rows.append(Row(len(base), m, efc, efs, round(recall, 4), round(float(np.percentile(ms, 50)), 4),
                                round(float(np.percentile(ms, 95)), 4), round(build_s, 2), round(memory, 1)))
                log.info("%s", rows[-1])
    return rows


def pareto(rows: list[Row]) -> list[Row]:
    """Configurations no other beats on both recall (higher) and p95 latency (lower)."""
    front = [r for r in rows if not any(o.recall >= r.recall and o.p95_ms < r.p95_ms or
                                        o.recall > r.recall and o.p95_ms <= r.p95_ms for o in rows)]
    return sorted(front, key=lambda r: r.p95_ms)


def recommend(rows: list[Row], target: float) -> Row | None:
    """The lowest p95 latency meeting the recall target; ties go to less memory, then faster builds."""
    ok = [r for r in rows if r.recall >= target]
    return min(ok, key=lambda r: (r.p95_ms, r.memory_mb, r.build_s)) if ok else None


def index_settings(row: Row, dimension: int) -> dict:
    """The recommended parameters as OpenSearch (faiss engine) and Elasticsearch mappings. Vectors are
    L2-normalised, so inner product is cosine similarity."""
    return {
        "opensearch": {
            "settings": {"index": {"knn": True}},
            "mappings": {"properties": {"embedding": {
                "type": "knn_vector", "dimension": dimension,
                "method": {"name": "hnsw", "engine": "faiss", "space_type": "innerproduct",
                           "parameters": {"m": row.m, "ef_construction": row.ef_construction,
                                          "ef_search": row.ef_search}}}}},
        },
        "elasticsearch": {
            "mappings": {"properties": {"embedding": {
                "type": "dense_vector", "dims": dimension, "index": True, "similarity": "dot_product",
                "index_options": {"type": "hnsw", "m": row.m, "ef_construction": row.ef_construction}}}},
            "query_time": {"knn": {"k": K, "num_candidates": max(row.ef_search, K)}},
        },
    }


def synthetic(real: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        rows = min(100_000, n - start)
        part = real[rng.integers(0, len(real), rows)] + rng.normal(0, noise, (rows, real.shape[1])).astype(np.float32)
        out[start:start + rows] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


def scale_curve(real_base: np.ndarray, real_queries: np.ndarray, sizes, *, m: int, ef_construction: int,
                grid_efs=(32, 64, 128, 256, 512), noise: float = 0.03) -> list[Row]:
    rows = []
    queries = synthetic(real_queries, len(real_queries), noise, seed=1)
    for n in sizes:
        base = synthetic(real_base, n, noise, seed=0)
        rows += sweep(base, queries, grid_m=(m,), grid_efc=(ef_construction,), grid_efs=grid_efs)
        del base
    return rows


def plot(rows: list[Row], front: list[Row], picks: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for m in sorted({r.m for r in rows}):
        sub = [r for r in rows if r.m == m]
        ax.scatter([r.p95_ms for r in sub], [r.recall for r in sub], s=14, alpha=0.6, label=f"M={m}")
    ax.plot([r.p95_ms for r in front], [r.recall for r in front], "k-", lw=1, label="Pareto front")
    for target, r in picks.items():
        if r:
            ax.annotate(f"recall>={target}: M={r.m} efC={r.ef_construction} efS={r.ef_search}",
                        (r.p95_ms, r.recall), textcoords="offset points", xytext=(10, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("query latency p95, ms (1 thread, one query per call)")
    ax.set_ylabel(f"recall@{K} vs exact search")
    ax.set_title(f"HNSW (faiss) on {rows[0].vectors:,} real served embeddings")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run(vectors: np.ndarray, *, model: str = "sbert_int8", queries: int = 1000,
        sizes=(100_000, 300_000, 1_000_000), out_dir: Path | None = None) -> dict:
    """On ``served_embeddings``: the real-data sweep, its Pareto front and recommendations, the synthetic scale
    curve; JSON, PNG and the index settings files in ``out_dir`` (default perf/results/hnsw-<time>/)."""
    from .provenance import ROOT, provenance

    out_dir = out_dir or ROOT / "perf" / "results" / f"hnsw-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(len(vectors))
    q, base = vectors[order[:queries]], np.ascontiguousarray(vectors[order[queries:]])
    t0 = time.perf_counter()
    rows = sweep(base, q)
    front = pareto(rows)
    picks = {t: recommend(rows, t) for t in TARGETS}
    best = picks[TARGETS[0]] or front[-1]
    scale = scale_curve(base, q, sizes, m=best.m, ef_construction=best.ef_construction) if sizes else []
    # At the largest synthetic size, the same graph parameters need a larger ef_search: that is the production pick.
    largest = [r for r in scale if r.vectors == max(sizes)] if scale else []
    at_scale = {t: recommend(largest, t) for t in TARGETS} if largest else {}
    settings = {}
    for label, chosen in (("", picks), (f"-{max(sizes) if sizes else 0}vectors", at_scale)):
        for target, r in chosen.items():
            if r:
                settings[f"{target}{label}"] = index_settings(r, vectors.shape[1])
                (out_dir / f"index-settings-recall{target}{label}.json").write_text(
                    json.dumps(settings[f"{target}{label}"], indent=2))
    result = {
        "data": f"{len(base)} unique CoNLL-2003 sentences embedded by the served {model}; {queries} held-out queries",
        "k": K, "rows": [vars(r) for r in rows], "pareto": [vars(r) for r in front],
        "recommended": {str(t): (vars(r) if r else None) for t, r in picks.items()},
        "recommended_at_scale": {str(t): (vars(r) if r else None) for t, r in at_scale.items()},
        "index_settings": settings,
        "scale": {"noise_per_dim": 0.03, "m": best.m, "ef_construction": best.ef_construction,
                  "rows": [vars(r) for r in scale]},
        "seconds": round(time.perf_counter() - t0, 1),
    } | provenance("faiss-cpu")
    result["plot"] = str(plot(rows, front, picks, out_dir / "pareto.png"))
    (out_dir / "hnsw.json").write_text(json.dumps(result, indent=2))
    result["output"] = str(out_dir)
    return result
