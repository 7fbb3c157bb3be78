"""What every client shares: gRPC error translation, retries with backoff inside one deadline, text encoding, and
the blocking and asyncio cores that send a call's requests."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpc
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.utils import InferenceServerException

from tritonrepo.errors import (
    ClientError, DeadlineExceededError, InvalidInputError, ModelNotFoundError, ServerInternalError,
    ServerOverloadedError, ServerUnavailableError, StubRestartError,
)

log = logging.getLogger(__name__)

_BY_STATUS = {
    "INVALID_ARGUMENT": InvalidInputError,
    "NOT_FOUND": ModelNotFoundError,
    "UNAVAILABLE": ServerUnavailableError,
    "DEADLINE_EXCEEDED": DeadlineExceededError,
    "RESOURCE_EXHAUSTED": ServerOverloadedError,
    "INTERNAL": ServerInternalError,
    "UNKNOWN": ServerInternalError,
}


def translate(e: InferenceServerException, model: str) -> ClientError:
    """Map a tritonclient exception to the project's error for what the caller should do."""
    status = (e.status() or "").rsplit(".", 1)[-1]  # "StatusCode.UNAVAILABLE" -> "UNAVAILABLE"
    message = e.message() or str(e)
    cls = _BY_STATUS.get(status, ClientError)
    lowered = message.lower()
    if "unknown model" in lowered or ("is not found" in lowered and "model" in lowered) or "not ready" in lowered:
        cls = ModelNotFoundError
    elif "exceeds maximum queue size" in lowered or "timeout expired" in lowered:  # queue full, queued too long
        cls = ServerOverloadedError
    elif status in ("INTERNAL", "UNKNOWN") and "stub process" in lowered and "not healthy" in lowered:
        cls = StubRestartError  # python_backend's answer while it restarts a dead stub
    return cls(message, model=model, status=status or None)


def channel_args() -> list[tuple[str, int]]:
    """tritonclient's channel options plus a short reconnect backoff: after a server restart the channel reconnects
    within ~2 s (gRPC's default backoff grows to 120 s, so retries would fail long after the server is back)."""
    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def traced(trace_id: str | None, parameters: dict | None = None) -> dict:
    """infer() keyword arguments that carry ``trace_id`` as Triton's request id (it appears in the server's
    trace of every step) and as the request parameter ``trace_id`` (Python-backend models can read it)."""
    if not trace_id:
        return {"parameters": parameters}
    return {"request_id": trace_id, "parameters": {**(parameters or {}), "trace_id": trace_id}}


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of retriable errors (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, a Python-backend stub being
    restarted), all within one deadline."""

    attempts: int = 3
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def delay(self, attempt: int) -> float:  # exponential with full jitter
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))


def encode_texts(texts, model: str, what: str = "texts") -> np.ndarray:
    """Validate and UTF-8 encode a sequence of str into a BYTES [N, 1] array; errors name the bad item."""
    if isinstance(texts, (str, bytes)):
        raise InvalidInputError(f"{what} must be a list of strings, not a single string (wrap it: [text])",
                                model=model)
    encoded = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(f"{what}[{i}] is {type(t).__name__}, expected str", model=model)
        try:
            encoded.append(t.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise InvalidInputError(f"{what}[{i}] cannot be encoded as UTF-8: {e.reason}", model=model) from e
    return np.array(encoded, dtype=np.object_).reshape(-1, 1)


def chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class Deadline:
    def __init__(self, seconds: float | None):
        self.end = None if seconds is None else time.monotonic() + seconds

    def remaining(self, model: str) -> float | None:
        if self.end is None:
            return None
        left = self.end - time.monotonic()
        if left <= 0:
            raise DeadlineExceededError("deadline exceeded before the request could be sent", model=model,
                                        status="DEADLINE_EXCEEDED")
        return left


def call_with_retry(fn, *, model: str, deadline: Deadline, retry: RetryPolicy):
    """fn(timeout_s) with retries of retriable errors; the deadline bounds all attempts together."""
    for attempt in range(retry.attempts):
        try:
            return fn(deadline.remaining(model))
        except InferenceServerException as e:
            err = translate(e, model)
            if not err.retriable or attempt == retry.attempts - 1:
                raise err from e
            pause = retry.delay(attempt)
            log.debug("%s: %s; retry %d in %.3f s", model, err, attempt + 1, pause)
            time.sleep(pause)


async def call_with_retry_async(fn, *, model: str, deadline: Deadline, retry: RetryPolicy):
    for attempt in range(retry.attempts):
        try:
            return await fn(deadline.remaining(model))
        except InferenceServerException as e:
            err = translate(e, model)
            if not err.retriable or attempt == retry.attempts - 1:
                raise err from e
            await asyncio.sleep(retry.delay(attempt))


Request = tuple[list, list | None]  # inputs, requested outputs (None: all of them)


class SyncClientBase:
    """The blocking clients' core: a tritonclient gRPC client, calls retried inside one deadline, and a call's
    requests sent ``max_in_flight`` at a time (in order when 1). A client builds its requests and parses the results
    with functions its asyncio twin shares; only the sending differs."""

    def __init__(self, url: str, model: str, *, timeout_s: float | None, retry: RetryPolicy = RetryPolicy(),
                 max_in_flight: int = 1):
        self.url, self.model, self.timeout_s, self.retry = url, model, timeout_s, retry
        self._client = grpcclient.InferenceServerClient(url, channel_args=channel_args())
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix=model) if max_in_flight > 1 else None

    def _call(self, fn, deadline: Deadline):
        """``fn(client, timeout_s)`` with retries, all of them inside ``deadline``."""
        return call_with_retry(lambda t: fn(self._client, t), model=self.model, deadline=deadline, retry=self.retry)

    def _infer(self, requests: list[Request], deadline: Deadline, **kwargs) -> list:
        """Each request's result, in order; the first error raises (the deadline bounds the requests still out)."""
        def one(request: Request):
            inputs, outputs = request
            return self._call(lambda c, t: c.infer(self.model, inputs, outputs=outputs, client_timeout=t, **kwargs),
                              deadline)
        if self._pool is None:
            return [one(r) for r in requests]
        return [future.result() for future in [self._pool.submit(one, r) for r in requests]]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncClientBase:
    """The asyncio clients' core (see SyncClientBase): a call's requests run concurrently, ``max_in_flight`` at a
    time across the client."""

    def __init__(self, url: str, model: str, *, timeout_s: float | None, retry: RetryPolicy = RetryPolicy(),
                 max_in_flight: int = 4):
        self.url, self.model, self.timeout_s, self.retry = url, model, timeout_s, retry
        self._client = aiogrpc.InferenceServerClient(url, channel_args=channel_args())
        self._slots = asyncio.Semaphore(max_in_flight)

    async def _call(self, fn, deadline: Deadline):
        return await call_with_retry_async(lambda t: fn(self._client, t), model=self.model, deadline=deadline,
                                           retry=self.retry)

    async def _infer(self, requests: list[Request], deadline: Deadline, **kwargs) -> list:
        async def one(request: Request):
            inputs, outputs = request
            async with self._slots:
                return await self._call(
                    lambda c, t: c.infer(self.model, inputs, outputs=outputs, client_timeout=t, **kwargs), deadline)
        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
