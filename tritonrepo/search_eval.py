"""The hybrid-search evaluation on held-out Reuters headlines (metrics: scoring.py)."""

from __future__ import annotations

import time

import numpy as np

from .scoring import ndcg, scores


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def best_weight(bm25: list, dense: list, relevant: list, grid=np.linspace(0, 1, 11)) -> float:
    """The BM25 weight (dense gets 1 - w) of the weighted mix with the best nDCG@10."""
    from .services.search import weighted

    def quality(w):
        return np.mean([ndcg([h.doc for h in weighted([b, d], [w, 1 - w])], r) for b, d, r in zip(bm25, dense, relevant)])
    return float(max(grid, key=quality))


def _prior_label(prior: float, sep: str = "") -> str:
    return f"{sep} rank prior {prior:g}" if prior else ""


def evaluate(url: str, *, embed_model: str = "sbert", rerankers=("rerank", "rerank_int8"), depth: int = 100,
             rerank_depth: int = 20, hnsw=None) -> dict:
    """BM25, dense (HNSW over served embeddings), hybrid (RRF; weighted mix with its weight tuned on the valid
    headlines) and hybrid + rerank of the top ``rerank_depth`` by each served reranker, alone and with the search
    pipeline's rank prior (``services.search.RANK_PRIOR``), on the CoNLL-2003 test headlines over the test + valid
    articles. Latency per query and stage, one query at a time."""
    from .clients import EmbeddingClient, RerankClient
    from .datasets import headline_retrieval
    from .services.search import RANK_PRIOR, BM25Retriever, DenseRetriever, HnswParams, rrf, weighted, with_rank_prior

    test, valid = headline_retrieval("test", ("test", "valid")), headline_retrieval("valid", ("test", "valid"))
    docs = test.documents
    bm25 = BM25Retriever(docs)
    with EmbeddingClient(url, embed_model, timeout_s=600) as embedder:
        t0 = time.perf_counter()
        dense = DenseRetriever(embedder.embed(docs), embedder.embed, hnsw or HnswParams())
        index_seconds = time.perf_counter() - t0
        runs: dict[str, dict] = {}

        def retrieve(items):
            out = {"bm25": [], "dense": [], "seconds": {"bm25": [], "embed": [], "hnsw": []}}
            for q in items.queries:
                t = time.perf_counter()
                out["bm25"].append(bm25.search(q, depth))
                t1 = time.perf_counter()
                vector = embedder.embed([q])
                t2 = time.perf_counter()
                out["dense"].append(dense.search_vectors(vector, depth)[0])
                t3 = time.perf_counter()
                for stage, s in zip(("bm25", "embed", "hnsw"), (t1 - t, t2 - t1, t3 - t2)):
                    out["seconds"][stage].append(s)
            return out

        tuning = retrieve(valid)
        weight = best_weight(tuning["bm25"], tuning["dense"], valid.relevant)
        got = retrieve(test)
    fused_rrf = [rrf([b, d])[:depth] for b, d in zip(got["bm25"], got["dense"])]
    fused_weighted = [weighted([b, d], [weight, 1 - weight])[:depth] for b, d in zip(got["bm25"], got["dense"])]
    stages = {k: _percentiles(v) for k, v in got["seconds"].items()}
    for name, ranking in (("bm25", got["bm25"]), ("dense (hnsw)", got["dense"]), ("hybrid rrf", fused_rrf),
                          (f"hybrid weighted (bm25 {weight:.1f})", fused_weighted)):
        runs[name] = scores([[h.doc for h in r] for r in ranking], test.relevant)
    for model in rerankers:
        reranked, seconds = {0.0: [], RANK_PRIOR: []}, []
        with RerankClient(url, model, timeout_s=60) as client:
            for q, hits in zip(test.queries, fused_rrf):
                head = hits[:rerank_depth]
                t = time.perf_counter()
                order = client.rerank(q, [docs[h.doc] for h in head])
                seconds.append(time.perf_counter() - t)
                for prior, out in reranked.items():
                    out.append([head[h.doc].doc for h in with_rank_prior(order, prior)] +
                               [h.doc for h in hits[rerank_depth:]])
        for prior, ranking in reranked.items():
            runs[f"hybrid rrf + {model} top {rerank_depth}{_prior_label(prior, ',')}"] = scores(ranking, test.relevant)
        stages[f"rerank {model} x{rerank_depth}"] = _percentiles(seconds)
    return {"task": "CoNLL-2003 test headlines -> article bodies (test + valid articles)",
            "queries": len(test.queries), "documents": len(docs), "embed_model": embed_model,
            "hnsw": vars(dense.params), "index_seconds": round(index_seconds, 1),
            "weighted_bm25_weight_from_valid": weight, "results": runs, "latency": stages}


def _worst(queries, docs, relevant, before, after) -> dict | None:
    """The query whose nDCG@10 the reranker lowered most, with each ranking's top passage; None if none lost."""
    drops = [ndcg(a, r) - ndcg(b, r) for b, a, r in zip(before, after, relevant)]
    q = int(np.argmin(drops))
    if drops[q] >= 0:
        return None
    top = {name: {"relevant": ranking[q][0] in relevant[q], "passage": docs[ranking[q][0]][:160]}
           for name, ranking in (("stage top", before), ("reranked top", after))}
    return {"query": queries[q], "ndcg@10 change": round(float(drops[q]), 4), **top,
            "queries that lost": int(sum(d < 0 for d in drops)),
            "queries that gained": int(sum(d > 0 for d in drops))}


def evaluate_shapes(url: str, *, embed_model: str = "sbert", rerankers=("rerank", "rerank_int8"),
                    rerank_depth: int = 20, limit: int = 100, depth: int = 100, split: str = "test",
                    priors: tuple[float, ...] | None = None) -> dict:
    """nDCG@10 of each first stage (BM25, dense, hybrid RRF) and of each served reranker reordering that stage's top
    ``rerank_depth`` (alone and with each rank prior of ``priors``, by default the search pipeline's), for every
    passage shape x query shape of ``datasets.shaped_retrieval`` (the first ``limit`` queries of the ``split``
    articles over the test + valid articles; the valid split is where the rank prior was chosen), and as the search
    pipeline serves it (``<model> pipeline``: the pipeline's rank prior, queries over ``RERANK_MAX_WORDS`` words left
    in the stage's order). A reranker that never hurts scores at least its stage in every row; each row also names the
    query it hurt most (``<model>[ rank prior w| pipeline] worst``)."""
    from .clients import EmbeddingClient, Hit, RerankClient
    from .datasets import PASSAGE_SHAPES, QUERY_SHAPES, shaped_retrieval
    from .services.search import RANK_PRIOR, BM25Retriever, DenseRetriever, reranks, rrf, with_rank_prior

    priors = sorted({0.0, *((RANK_PRIOR,) if priors is None else priors)})
    variants = [(m + _prior_label(w), m, w, False) for m in rerankers for w in priors] + [
        (f"{m} pipeline", m, RANK_PRIOR, True) for m in rerankers]  # (name, model, prior, routed)
    rows = []
    with EmbeddingClient(url, embed_model, timeout_s=600) as embedder:
        clients = {m: RerankClient(url, m, timeout_s=120) for m in rerankers}
        try:
            for passages in PASSAGE_SHAPES:
                docs: list[str] = []
                for queries in QUERY_SHAPES:
                    items = shaped_retrieval(passages, queries, query_split=split)
                    if items.documents != docs:  # lead queries index the articles without their lead sentence
                        docs = items.documents
                        bm25, dense = BM25Retriever(docs), DenseRetriever(embedder.embed(docs), embedder.embed)
                    qs, relevant = items.queries[:limit], items.relevant[:limit]
                    first = {"bm25": bm25.search_many(qs, depth), "dense": dense.search_vectors(embedder.embed(qs),
                                                                                                 depth)}
                    first["hybrid rrf"] = [rrf([b, d])[:depth] for b, d in zip(first["bm25"], first["dense"])]
                    pool = [sorted({h.doc for stage in first.values() for h in stage[i][:rerank_depth]})
                            for i in range(len(qs))]
                    scored = {m: [dict(zip(p, c.scores(q, [docs[d] for d in p]))) for q, p in zip(qs, pool)]
                              for m, c in clients.items()}
                    for stage, ranking in first.items():
                        row = {"passages": passages, "queries": queries, "stage": stage, "n_queries": len(qs),
                               "documents": len(docs),
                               "ndcg@10": scores([[h.doc for h in r] for r in ranking], relevant)["ndcg@10"]}
                        before = [[h.doc for h in r] for r in ranking]
                        for name, m, prior, routed in variants:
                            reordered = [[r[h.doc] for h in with_rank_prior([Hit(i, s[d]) for i, d in
                                                                             enumerate(r[:rerank_depth])], prior)]
                                         + r[rerank_depth:] if not routed or reranks(q) else r
                                         for q, r, s in zip(qs, before, scored[m])]
                            row[f"{name} ndcg@10"] = scores(reordered, relevant)["ndcg@10"]
                            row[f"{name} worst"] = _worst(qs, docs, relevant, before, reordered)
                        rows.append(row)
        finally:
            for c in clients.values():
                c.close()
    return {"task": f"CoNLL-2003 {split} articles' headlines, keyword queries and lead sentences (first {limit} "
                    "each) -> passages of the test + valid articles, per passage and query shape",
            "split": split, "rerank_depth": rerank_depth, "priors": priors, "embed_model": embed_model, "rows": rows}
