"""Sentence embeddings from the served SBERT ensemble (``sbert`` fp32, ``sbert_int8``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpc
from tritonclient.utils import InferenceServerException

from tritonrepo import contracts

from ._grpc import (
    AsyncClientBase, Deadline, RetryPolicy, SyncClientBase, call_with_retry, call_with_retry_async, channel_args,
    chunks, encode_texts, traced, translate,
)

TEXT, EMBEDDING = contracts.TEXT.name, contracts.EMBEDDING.name


def _request(batch: np.ndarray) -> list[grpcclient.InferInput]:
    inp = grpcclient.InferInput(TEXT, list(batch.shape), contracts.TEXT.dtype.value)
    inp.set_data_from_numpy(batch)
    return [inp]


def _shape_from_config(config: dict, model: str) -> tuple[int, int]:
    """(max batch per request, embedding dimension) from the model's config as served."""
    cfg = config.get("config", config)
    max_batch = int(cfg.get("max_batch_size", 0)) or 1
    out = next((o for o in cfg.get("output", []) if o["name"] == EMBEDDING), None)
    if out is None:
        raise translate(InferenceServerException(f"model has no {EMBEDDING} output", "StatusCode.NOT_FOUND"), model)
    return max_batch, int(out["dims"][-1])


class EmbeddingClient(SyncClientBase):
    """Blocking client. ``embed(texts)`` -> float32 [len(texts), dim], L2-normalised, in input order.

    Inputs larger than the model's max batch are split into requests of that size. ``timeout_s`` is the deadline of
    one ``embed`` call, retries included. Errors are ``tritonrepo.errors.ClientError`` subclasses.
    """

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "sbert", *, timeout_s: float | None = 30.0,
                 retry: RetryPolicy = RetryPolicy()):
        self.url, self.model, self.timeout_s, self.retry = url, model, timeout_s, retry
        self._client = grpcclient.InferenceServerClient(url, channel_args=channel_args())
        self._shape: tuple[int, int] | None = None

    def _model_shape(self, deadline: Deadline) -> tuple[int, int]:
        if self._shape is None:
            config = call_with_retry(
                lambda t: self._client.get_model_config(self.model, as_json=True, client_timeout=t),
                model=self.model, deadline=deadline, retry=self.retry)
            self._shape = _shape_from_config(config, self.model)
        return self._shape

    def embed(self, texts: Sequence[str], *, trace_id: str | None = None) -> np.ndarray:
        batch = encode_texts(texts, self.model)
        deadline = Deadline(self.timeout_s)
        max_batch, dim = self._model_shape(deadline)
        out = np.empty((len(batch), dim), dtype=np.float32)
        for part in chunks(len(batch), max_batch):
            result = call_with_retry(
                lambda t, part=part: self._client.infer(self.model, _request(batch[part]), client_timeout=t,
                                                        **traced(trace_id)),
                model=self.model, deadline=deadline, retry=self.retry)
            out[part] = result.as_numpy(EMBEDDING)
        return out


class AsyncEmbeddingClient(AsyncClientBase):
    """asyncio twin of EmbeddingClient; the requests of one large ``embed`` run concurrently (``max_in_flight``)."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "sbert", *, timeout_s: float | None = 30.0,
                 retry: RetryPolicy = RetryPolicy(), max_in_flight: int = 4):
        self.url, self.model, self.timeout_s, self.retry = url, model, timeout_s, retry
        self._client = aiogrpc.InferenceServerClient(url, channel_args=channel_args())
        self._shape: tuple[int, int] | None = None
        self._slots = asyncio.Semaphore(max_in_flight)

    async def _model_shape(self, deadline: Deadline) -> tuple[int, int]:
        if self._shape is None:
            config = await call_with_retry_async(
                lambda t: self._client.get_model_config(self.model, as_json=True, client_timeout=t),
                model=self.model, deadline=deadline, retry=self.retry)
            self._shape = _shape_from_config(config, self.model)
        return self._shape

    async def embed(self, texts: Sequence[str], *, trace_id: str | None = None) -> np.ndarray:
        batch = encode_texts(texts, self.model)
        deadline = Deadline(self.timeout_s)
        max_batch, dim = await self._model_shape(deadline)
        out = np.empty((len(batch), dim), dtype=np.float32)

        async def one(part: slice) -> None:
            async with self._slots:
                result = await call_with_retry_async(
                    lambda t: self._client.infer(self.model, _request(batch[part]), client_timeout=t,
                                                 **traced(trace_id)),
                    model=self.model, deadline=deadline, retry=self.retry)
            out[part] = result.as_numpy(EMBEDDING)

        await asyncio.gather(*(one(part) for part in chunks(len(batch), max_batch)))
        return out
