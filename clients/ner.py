"""Named entities in search queries from the served NER ensemble (``ner`` fp32, ``ner_int8``).

Wire format (export/ner.py): input ``QUERY`` BYTES [N, 1] (UTF-8); outputs ``ENTITIES`` BYTES [N, 1], one JSON
array per query of {"type", "score", "start", "end", "text"} (offsets in Unicode code points of the query as sent),
and ``TRUNCATED`` BOOL [N, 1] (the query had more than 128 tokens: entities come from its start only).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import tritonclient.grpc as grpcclient

from tritonrepo import contracts
from tritonrepo.errors import InvalidInputError

from .grpc_core import AsyncClientBase, Deadline, RetryPolicy, SyncClientBase, chunks, encode_texts, traced

log = logging.getLogger(__name__)

QUERY, ENTITIES, TRUNCATED = contracts.QUERY.name, contracts.ENTITIES.name, contracts.TRUNCATED.name
STRATEGIES = ("simple", "first", "average", "max", "viterbi")  # ensembles/ner_decoder.py
MAX_BATCH = 64  # the ensemble's max_batch_size (export/ner.py NER_REQUEST_BATCH)


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


def _requests(queries: Sequence[str], aggregation: str | None, trace_id: str | None, model: str):
    """A call's requests (up to MAX_BATCH queries each) and their keyword arguments."""
    batch = encode_texts(queries, model)
    outputs = [grpcclient.InferRequestedOutput(ENTITIES), grpcclient.InferRequestedOutput(TRUNCATED)]
    requests = []
    for part in chunks(len(batch), MAX_BATCH):
        inp = grpcclient.InferInput(QUERY, list(batch[part].shape), contracts.QUERY.dtype.value)
        inp.set_data_from_numpy(batch[part])
        requests.append(([inp], outputs))
    return requests, traced(trace_id, _parameters(aggregation, model))


def _parameters(aggregation: str | None, model: str) -> dict | None:
    if aggregation is None:
        return None
    if aggregation not in STRATEGIES:
        raise InvalidInputError(f"aggregation {aggregation!r}: use one of {list(STRATEGIES)}", model=model)
    return {"aggregation_strategy": aggregation}


def _results(results: list, model: str) -> list[NerResult]:
    """One NerResult per query of the call, in order; logs the queries that were truncated."""
    out = [NerResult([Entity(**e) for e in json.loads(raw)], bool(cut)) for result in results
           for raw, cut in zip(result.as_numpy(ENTITIES).reshape(-1), result.as_numpy(TRUNCATED).reshape(-1))]
    if cut := [i for i, r in enumerate(out) if r.truncated]:
        log.warning("%s: %d queries longer than the model's 128 tokens were truncated (indices %s)", model, len(cut),
                    cut[:10])
    return out


class NerClient(SyncClientBase):
    """Blocking client. ``entities(queries)`` -> one list of Entity per query, in input order.

    ``analyze`` also says which queries were truncated. ``aggregation`` picks the decoding strategy per call
    (default: the server's, word-level ``viterbi``). ``timeout_s`` is the deadline of one call, retries included.
    Errors are ``tritonrepo.errors.ClientError`` subclasses; an empty, blank or emoji-only query is valid and has no
    entities.
    """

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "ner", *, timeout_s: float | None = 10.0,
                 retry: RetryPolicy = RetryPolicy()):
        super().__init__(url, model, timeout_s=timeout_s, retry=retry)

    def analyze(self, queries: Sequence[str], aggregation: str | None = None, *,
                trace_id: str | None = None) -> list[NerResult]:
        requests, kwargs = _requests(queries, aggregation, trace_id, self.model)
        return _results(self._infer(requests, Deadline(self.timeout_s), **kwargs), self.model)

    def entities(self, queries: Sequence[str], aggregation: str | None = None) -> list[list[Entity]]:
        return [r.entities for r in self.analyze(queries, aggregation)]


class AsyncNerClient(AsyncClientBase):
    """asyncio twin of NerClient; the requests of one large call run concurrently (``max_in_flight``)."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "ner", *, timeout_s: float | None = 10.0,
                 retry: RetryPolicy = RetryPolicy(), max_in_flight: int = 4):
        super().__init__(url, model, timeout_s=timeout_s, retry=retry, max_in_flight=max_in_flight)

    async def analyze(self, queries: Sequence[str], aggregation: str | None = None, *,
                      trace_id: str | None = None) -> list[NerResult]:
        requests, kwargs = _requests(queries, aggregation, trace_id, self.model)
        return _results(await self._infer(requests, Deadline(self.timeout_s), **kwargs), self.model)

    async def entities(self, queries: Sequence[str], aggregation: str | None = None) -> list[list[Entity]]:
        return [r.entities for r in await self.analyze(queries, aggregation)]
