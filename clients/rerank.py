"""Relevance scores of (query, passage) pairs from the served cross-encoder (``rerank`` fp32, ``rerank_int8``).

Wire format (export/rerank.py): inputs ``QUERY`` and ``PASSAGE`` BYTES [N, 1] (UTF-8, one pair per row, N <= 64 per
request); output ``SCORE`` FP32 [N, 1], the relevance logit (higher is more relevant; compare within one query).
A call's passages are sent as requests of 64 pairs, ``max_in_flight`` at a time, so the server's dynamic batcher
packs them with other callers' pairs. Passages are read up to 256 tokens with the query (the query up to 64).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient

from tritonrepo import contracts
from tritonrepo.errors import InvalidInputError

from .grpc_core import AsyncClientBase, Deadline, RetryPolicy, SyncClientBase, chunks, encode_texts, traced

QUERY, PASSAGE, SCORE = contracts.QUERY.name, contracts.PASSAGE.name, contracts.SCORE.name
MAX_BATCH = 64  # the ensemble's max_batch_size (export/rerank.py RERANK_REQUEST_BATCH)
MAX_PASSAGES = 10_000  # per call: a larger candidate list is a caller bug (rerank the head of a retrieval)


@dataclass(frozen=True)
class Hit:
    doc: int  # position of the document in the indexed corpus (or of the passage in a rerank call)
    score: float


def _pairs(query: str, passages: Sequence[str], model: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(query, str):
        raise InvalidInputError(f"query is {type(query).__name__}, expected str", model=model)
    if len(passages) > limit:
        raise InvalidInputError(f"{len(passages)} passages in one call; the limit is {limit}: rerank the top of a "
                                "retrieval, or split the call", model=model)
    texts = encode_texts(passages, model, "passages")
    return encode_texts([query], model, "query").repeat(len(texts), axis=0), texts


def _requests(query: str, passages: Sequence[str], model: str, limit: int):
    """A call's requests: the pairs in requests of MAX_BATCH."""
    queries, texts = _pairs(query, passages, model, limit)
    requests = []
    for part in chunks(len(texts), MAX_BATCH):
        inputs = []
        for name, data in ((QUERY, queries[part]), (PASSAGE, texts[part])):
            inp = grpcclient.InferInput(name, list(data.shape), "BYTES")
            inp.set_data_from_numpy(data)
            inputs.append(inp)
        requests.append((inputs, None))
    return requests


def _scores(results: list) -> np.ndarray:
    return np.concatenate([r.as_numpy(SCORE)[:, 0] for r in results]) if results else np.empty(0, np.float32)


def ranked(scores: np.ndarray, top_k: int | None) -> list[Hit]:
    order = np.argsort(-scores, kind="stable")[: top_k if top_k is not None else len(scores)]
    return [Hit(int(i), float(scores[i])) for i in order]


class RerankClient(SyncClientBase):
    """Blocking client. ``scores(query, passages)`` -> float32 [len(passages)] in input order;
    ``rerank(query, passages, top_k)`` -> ``Hit(doc=passage index, score)`` best first (a ``services.search.Reranker``).
    ``timeout_s`` is the deadline of one call, retries included."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "rerank_int8", *, timeout_s: float | None = 10.0,
                 retry: RetryPolicy = RetryPolicy(), max_in_flight: int = 4, max_passages: int = MAX_PASSAGES):
        super().__init__(url, model, timeout_s=timeout_s, retry=retry, max_in_flight=max_in_flight)
        self.max_passages = max_passages

    def scores(self, query: str, passages: Sequence[str], *, trace_id: str | None = None) -> np.ndarray:
        requests = _requests(query, passages, self.model, self.max_passages)
        return _scores(self._infer(requests, Deadline(self.timeout_s), **traced(trace_id)))

    def rerank(self, query: str, passages: Sequence[str], top_k: int | None = None, *,
               trace_id: str | None = None) -> list[Hit]:
        return ranked(self.scores(query, passages, trace_id=trace_id), top_k)


class AsyncRerankClient(AsyncClientBase):
    """asyncio twin of RerankClient."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "rerank_int8", *, timeout_s: float | None = 10.0,
                 retry: RetryPolicy = RetryPolicy(), max_in_flight: int = 4, max_passages: int = MAX_PASSAGES):
        super().__init__(url, model, timeout_s=timeout_s, retry=retry, max_in_flight=max_in_flight)
        self.max_passages = max_passages

    async def scores(self, query: str, passages: Sequence[str], *, trace_id: str | None = None) -> np.ndarray:
        requests = _requests(query, passages, self.model, self.max_passages)
        return _scores(await self._infer(requests, Deadline(self.timeout_s), **traced(trace_id)))

    async def rerank(self, query: str, passages: Sequence[str], top_k: int | None = None, *,
                     trace_id: str | None = None) -> list[Hit]:
        return ranked(await self.scores(query, passages, trace_id=trace_id), top_k)
