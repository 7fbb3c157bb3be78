"""Sentence embeddings from the served SBERT ensemble (``sbert`` fp32, ``sbert_int8``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonrepo import contracts

from .grpc_core import AsyncClientBase, Deadline, RetryPolicy, SyncClientBase, chunks, encode_texts, traced, translate

TEXT, EMBEDDING = contracts.TEXT.name, contracts.EMBEDDING.name


def _shape_from_config(config: dict, model: str) -> tuple[int, int]:
    """(max batch per request, embedding dimension) from the model's config as served."""
    cfg = config.get("config", config)
    max_batch = int(cfg.get("max_batch_size", 0)) or 1
    out = next((o for o in cfg.get("output", []) if o["name"] == EMBEDDING), None)
    if out is None:
        raise translate(InferenceServerException(f"model has no {EMBEDDING} output", "StatusCode.NOT_FOUND"), model)
    return max_batch, int(out["dims"][-1])


def _config(client, timeout_s: float | None, model: str):
    return client.get_model_config(model, as_json=True, client_timeout=timeout_s)


def _requests(batch: np.ndarray, max_batch: int) -> list:
    requests = []
    for part in chunks(len(batch), max_batch):
        inp = grpcclient.InferInput(TEXT, list(batch[part].shape), contracts.TEXT.dtype.value)
        inp.set_data_from_numpy(batch[part])
        requests.append(([inp], None))
    return requests


def _embeddings(results: list, dim: int) -> np.ndarray:
    return np.concatenate([r.as_numpy(EMBEDDING) for r in results]) if results else np.empty((0, dim), np.float32)


class EmbeddingClient(SyncClientBase):
    """Blocking client. ``embed(texts)`` -> float32 [len(texts), dim], L2-normalised, in input order.

    Inputs larger than the model's max batch are split into requests of that size. ``timeout_s`` is the deadline of
    one ``embed`` call, retries included. Errors are ``tritonrepo.errors.ClientError`` subclasses.
    """

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "sbert", *, timeout_s: float | None = 30.0,
                 retry: RetryPolicy = RetryPolicy()):
        super().__init__(url, model, timeout_s=timeout_s, retry=retry)
        self._shape: tuple[int, int] | None = None

    def embed(self, texts: Sequence[str], *, trace_id: str | None = None) -> np.ndarray:
        batch = encode_texts(texts, self.model)
        deadline = Deadline(self.timeout_s)
        if self._shape is None:
            self._shape = _shape_from_config(self._call(lambda c, t: _config(c, t, self.model), deadline), self.model)
        max_batch, dim = self._shape
        return _embeddings(self._infer(_requests(batch, max_batch), deadline, **traced(trace_id)), dim)


class AsyncEmbeddingClient(AsyncClientBase):
    """asyncio twin of EmbeddingClient; the requests of one large ``embed`` run concurrently (``max_in_flight``)."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "sbert", *, timeout_s: float | None = 30.0,
                 retry: RetryPolicy = RetryPolicy(), max_in_flight: int = 4):
        super().__init__(url, model, timeout_s=timeout_s, retry=retry, max_in_flight=max_in_flight)
        self._shape: tuple[int, int] | None = None

    async def embed(self, texts: Sequence[str], *, trace_id: str | None = None) -> np.ndarray:
        batch = encode_texts(texts, self.model)
        deadline = Deadline(self.timeout_s)
        if self._shape is None:
            config = await self._call(lambda c, t: _config(c, t, self.model), deadline)
            self._shape = _shape_from_config(config, self.model)
        max_batch, dim = self._shape
        return _embeddings(await self._infer(_requests(batch, max_batch), deadline, **traced(trace_id)), dim)
