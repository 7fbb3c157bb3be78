"""Named entities in search queries from the served NER ensemble (``ner`` fp32, ``ner_int8``).

Wire format (tritonrepo.models): input ``QUERY`` BYTES [N, 1] (UTF-8); outputs ``ENTITIES`` BYTES [N, 1], one JSON
array per query of {"type", "score", "start", "end", "text"} (offsets in Unicode code points of the query as sent),
and ``TRUNCATED`` BOOL [N, 1] (the query had more than 128 tokens: entities come from its start only).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpc

from tritonrepo import contracts
from tritonrepo.errors import InvalidInputError

from ._grpc import (
    AsyncClientBase, Deadline, RetryPolicy, SyncClientBase, call_with_retry, call_with_retry_async, channel_args,
    chunks, encode_texts, traced,
)

log = logging.getLogger(__name__)

QUERY, ENTITIES, TRUNCATED = contracts.QUERY.name, contracts.ENTITIES.name, contracts.TRUNCATED.name
STRATEGIES = ("simple", "first", "average", "max", "viterbi")  # ensembles/ner_decoder.py
MAX_BATCH = 64  # the ensemble's max_batch_size (tritonrepo.models.NER_REQUEST_BATCH)


@dataclass(frozen=True)
class Entity:
    type: str  # PER, ORG, LOC, MISC
    score: float
    start: int  # query[start:end] == text
    end: int
    text: str


@dataclass(frozen=True)
class NerResult:
    entities: list[Entity]
    truncated: bool


def _request(batch: np.ndarray):
    inp = grpcclient.InferInput(QUERY, list(batch.shape), contracts.QUERY.dtype.value)
    inp.set_data_from_numpy(batch)
    return [inp], [grpcclient.InferRequestedOutput(ENTITIES), grpcclient.InferRequestedOutput(TRUNCATED)]


def _parameters(aggregation: str | None, model: str) -> dict | None:
    if aggregation is None:
        return None
    if aggregation not in STRATEGIES:
        raise InvalidInputError(f"aggregation {aggregation!r}: use one of {list(STRATEGIES)}", model=model)
    return {"aggregation_strategy": aggregation}


def _results(result) -> list[NerResult]:
    found = result.as_numpy(ENTITIES).reshape(-1)
    truncated = result.as_numpy(TRUNCATED).reshape(-1)
    return [NerResult([Entity(**e) for e in json.loads(raw)], bool(cut)) for raw, cut in zip(found, truncated)]


def _warn_truncated(results: list[NerResult], model: str) -> None:
    cut = [i for i, r in enumerate(results) if r.truncated]
    if cut:
        log.warning("%s: %d queries longer than the model's 128 tokens were truncated (indices %s)", model, len(cut),
                    cut[:10])


class NerClient(SyncClientBase):
    """Blocking client. ``entities(queries)`` -> one list of Entity per query, in input order.

    ``analyze`` also says which queries were truncated. ``aggregation`` picks the decoding strategy per call
    (default: the server's, word-level ``viterbi``). ``timeout_s`` is the deadline of one call, retries included.
    Errors are ``tritonrepo.errors.ClientError`` subclasses; an empty, blank or emoji-only query is valid and has no
    entities.
    """

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "ner", *, timeout_s: float | None = 10.0,
                 retry: RetryPolicy = RetryPolicy()):
        self.url, self.model, self.timeout_s, self.retry = url, model, timeout_s, retry
        self._client = grpcclient.InferenceServerClient(url, channel_args=channel_args())

    def analyze(self, queries: Sequence[str], aggregation: str | None = None, *,
                trace_id: str | None = None) -> list[NerResult]:
        batch = encode_texts(queries, self.model)
        kwargs = traced(trace_id, _parameters(aggregation, self.model))
        deadline = Deadline(self.timeout_s)
        results: list[NerResult] = []
        for part in chunks(len(batch), MAX_BATCH):
            inputs, outputs = _request(batch[part])
            result = call_with_retry(
                lambda t: self._client.infer(self.model, inputs, outputs=outputs, client_timeout=t, **kwargs),
                model=self.model, deadline=deadline, retry=self.retry)
            results += _results(result)
        _warn_truncated(results, self.model)
        return results

    def entities(self, queries: Sequence[str], aggregation: str | None = None) -> list[list[Entity]]:
        return [r.entities for r in self.analyze(queries, aggregation)]


class AsyncNerClient(AsyncClientBase):
    """asyncio twin of NerClient; the requests of one large call run concurrently (``max_in_flight``)."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "ner", *, timeout_s: float | None = 10.0,
                 retry: RetryPolicy = RetryPolicy(), max_in_flight: int = 4):
        self.url, self.model, self.timeout_s, self.retry = url, model, timeout_s, retry
        self._client = aiogrpc.InferenceServerClient(url, channel_args=channel_args())
        self._slots = asyncio.Semaphore(max_in_flight)

    async def analyze(self, queries: Sequence[str], aggregation: str | None = None, *,
                      trace_id: str | None = None) -> list[NerResult]:
        batch = encode_texts(queries, self.model)
        kwargs = traced(trace_id, _parameters(aggregation, self.model))
        deadline = Deadline(self.timeout_s)

        async def one(part: slice) -> list[NerResult]:
            inputs, outputs = _request(batch[part])
            async with self._slots:
                result = await call_with_retry_async(
                    lambda t: self._client.infer(self.model, inputs, outputs=outputs, client_timeout=t,
                                                 **kwargs),
                    model=self.model, deadline=deadline, retry=self.retry)
            return _results(result)

        parts = await asyncio.gather(*(one(part) for part in chunks(len(batch), MAX_BATCH)))
        results = [r for part in parts for r in part]
        _warn_truncated(results, self.model)
        return results

    async def entities(self, queries: Sequence[str], aggregation: str | None = None) -> list[list[Entity]]:
        return [r.entities for r in await self.analyze(queries, aggregation)]
