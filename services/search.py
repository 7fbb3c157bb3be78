"""Hybrid search reference for the search team: small typed interfaces and one implementation of each.

    bm25 = BM25Retriever(texts)                                        # lexical (bm25s)
    dense = DenseRetriever.build(texts, EmbeddingClient(url).embed)    # HNSW (faiss) over served embeddings
    search = SearchPipeline(HybridRetriever([bm25, dense]), texts, reranker=RerankClient(url), rerank_depth=20)
    search.search("biden xi summit", k=10).hits                       # [Hit(doc=17, score=9.1), ...]

A ``Retriever`` maps a query to scored document ids (positions in the indexed corpus); a ``Reranker`` scores
(query, passage) pairs. Plug another engine (OpenSearch, Elasticsearch, Vespa) in by implementing ``search``.
Fusion: reciprocal rank fusion (``rrf``, rank-based, needs no score calibration) or a weighted mix of min-max
normalised scores (``weighted``). Every stage's wall time is returned with the hits, for latency budgets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from tritonrepo.clients.rerank import Hit


class Retriever(Protocol):
    def search(self, query: str, k: int) -> list[Hit]: ...


class Reranker(Protocol):
    def rerank(self, query: str, passages: Sequence[str], top_k: int | None = None) -> list[Hit]:
        """Hits over ``passages`` (Hit.doc = index in passages), best first."""
        ...


class BM25Retriever:
    """Okapi BM25 (bm25s, Lucene's scoring variant) over the corpus, English stop words removed."""

    def __init__(self, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75, stopwords: str | None = "en"):
        import bm25s

        self._bm25s, self.stopwords, self.size = bm25s, stopwords, len(texts)
        self.index = bm25s.BM25(k1=k1, b=b)
        self.index.index(bm25s.tokenize(list(texts), stopwords=stopwords, show_progress=False), show_progress=False)

    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        k = min(k, self.size)
        tokens = self._bm25s.tokenize(list(queries), stopwords=self.stopwords, show_progress=False)
        docs, scores = self.index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [[Hit(int(d), float(s)) for d, s in zip(row_d, row_s) if s > 0] for row_d, row_s in zip(docs, scores)]

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_many([query], k)[0]


@dataclass(frozen=True, kw_only=True)
class HnswParams:
    """faiss IndexHNSWFlat parameters (OpenSearch's faiss engine: m, ef_construction, ef_search)."""

    m: int = 16
    ef_construction: int = 128
    ef_search: int = 64


class DenseRetriever:
    """Inner-product HNSW index (faiss) over L2-normalised embeddings, so scores are cosine similarities.
    ``embed``: texts -> float32 [n, dim] (e.g. ``EmbeddingClient(url, "sbert_int8").embed``)."""

    def __init__(self, vectors: np.ndarray, embed: Callable[[list[str]], np.ndarray], params: HnswParams = HnswParams()):
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.embed, self.params = embed, params
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], params.m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = params.ef_construction
        self.index.hnsw.efSearch = params.ef_search
        self.index.add(vectors)

    @classmethod
    def build(cls, texts: Sequence[str], embed: Callable[[list[str]], np.ndarray],
              params: HnswParams = HnswParams()) -> "DenseRetriever":
        return cls(embed(list(texts)), embed, params)

    def search_vectors(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        k = min(k, self.index.ntotal)
        self.index.hnsw.efSearch = max(self.params.ef_search, k)  # faiss returns at most ef_search results
        scores, docs = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return [[Hit(int(d), float(s)) for d, s in zip(rd, rs) if d >= 0] for rd, rs in zip(docs, scores)]

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_vectors(self.embed([query]), k)[0]


def rrf(rankings: Sequence[Sequence[Hit]], k: int = 60, weights: Sequence[float] | None = None) -> list[Hit]:
    """Reciprocal rank fusion: score(d) = sum_i w_i / (k + rank_i(d)), ranks from 1 (Cormack et al. 2009)."""
    fused: dict[int, float] = {}
    for ranking, w in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.doc] = fused.get(hit.doc, 0.0) + w / (k + rank)
    return sorted((Hit(d, s) for d, s in fused.items()), key=lambda h: -h.score)


def weighted(rankings: Sequence[Sequence[Hit]], weights: Sequence[float]) -> list[Hit]:
    """Weighted sum of each list's scores min-max normalised to [0, 1]; a document missing from a list gets 0."""
    fused: dict[int, float] = {}
    for ranking, w in zip(rankings, weights):
        if not ranking:
            continue
        scores = np.array([h.score for h in ranking])
        low, span = scores.min(), scores.max() - scores.min()
        for hit, s in zip(ranking, scores):
            fused[hit.doc] = fused.get(hit.doc, 0.0) + w * ((s - low) / span if span > 0 else 1.0)
    return sorted((Hit(d, s) for d, s in fused.items()), key=lambda h: -h.score)


@dataclass
class HybridRetriever:
    """Candidates from every retriever (``depth`` each), fused by ``rrf`` or ``weighted``."""

    retrievers: Sequence[Retriever]
    fusion: str = "rrf"
    weights: Sequence[float] | None = None
    depth: int = 100
    rrf_k: int = 60

    def __post_init__(self):
        if self.fusion not in ("rrf", "weighted"):
            raise ValueError(f"fusion={self.fusion!r}: use 'rrf' or 'weighted'")
        if self.weights is not None and len(self.weights) != len(self.retrievers):
            raise ValueError(f"{len(self.weights)} weights for {len(self.retrievers)} retrievers")

    def search(self, query: str, k: int) -> list[Hit]:
        lists = [r.search(query, max(k, self.depth)) for r in self.retrievers]
        if self.fusion == "rrf":
            return rrf(lists, self.rrf_k, self.weights)[:k]
        return weighted(lists, self.weights or [1.0] * len(lists))[:k]


# Weight of the retrieval rank in the reranked head: a candidate's reranker score minus RANK_PRIOR x ln(its rank in
# the stage); 0 is the reranker's order alone. Chosen on the CoNLL-2003 *valid* articles (every passage x query shape
# of datasets.shaped_retrieval, BM25, dense and hybrid stages, rerank_int8, top 20;
# perf/reference/search-shapes-valid-cpu-2core.json): mean nDCG@10 change over the stage +0.018 against -0.006 for
# the reranker alone, 6 of 27 rows below their stage against 10, the worst -0.025 against -0.132.
RANK_PRIOR = 2.0
# Longer queries keep their stage's order. The longest CoNLL-2003 valid headline has 12 words; sentence-length
# queries (an article's lead sentence, "more like this") are a paraphrase task where the reranker scored below the
# dense order it reranks over whole articles on the valid split, with or without the rank prior
# (perf/reference/search-shapes-valid-cpu-2core.json, article x lead rows).
RERANK_MAX_WORDS = 12


def reranks(query: str, max_words: int | None = RERANK_MAX_WORDS) -> bool:
    """Whether the search pipeline reranks ``query``: up to ``max_words`` words (None: every query)."""
    return max_words is None or len(query.split()) <= max_words


def with_rank_prior(reranked: Sequence[Hit], weight: float) -> list[Hit]:
    """Reranker hits over a retrieved head (``doc``: position in the head, 0 = the stage's first) reordered by
    ``score - weight * ln(position + 1)``, the returned scores; the stage's order stays a prior the reranker's
    evidence must outweigh."""
    return sorted((Hit(h.doc, h.score - weight * float(np.log1p(h.doc))) for h in reranked), key=lambda h: -h.score)


@dataclass
class SearchResult:
    hits: list[Hit]
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage: retrieve, rerank


@dataclass
class SearchPipeline:
    """Retrieve, then (optionally) rerank the top ``rerank_depth`` candidates with their passages, the retrieval rank
    weighing in with ``rank_prior`` (``with_rank_prior``). Candidates below the reranked head keep their retrieval
    order after it; a query of more than ``rerank_max_words`` words keeps the retrieval order (``reranks``)."""

    retriever: Retriever
    passages: Sequence[str]  # passage text per document id, what the reranker reads
    reranker: Reranker | None = None
    rerank_depth: int = 20
    rank_prior: float = RANK_PRIOR
    rerank_max_words: int | None = RERANK_MAX_WORDS

    def search(self, query: str, k: int = 10) -> SearchResult:
        t0 = time.perf_counter()
        hits = self.retriever.search(query, max(k, self.rerank_depth if self.reranker else k))
        seconds = {"retrieve": time.perf_counter() - t0}
        if self.reranker is not None and hits and reranks(query, self.rerank_max_words):
            head = hits[: self.rerank_depth]
            t1 = time.perf_counter()
            order = with_rank_prior(self.reranker.rerank(query, [self.passages[h.doc] for h in head]),
                                    self.rank_prior)
            seconds["rerank"] = time.perf_counter() - t1
            hits = [Hit(head[h.doc].doc, h.score) for h in order] + hits[len(head):]
        return SearchResult(hits[:k], seconds)
