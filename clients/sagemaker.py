"""A transport for SageMaker's Triton, which answers only HTTP ``POST /invocations`` (gRPC and metrics are off there).

    client = InvocationsClient(endpoint_name="sbert-int8", region="us-east-1")  # through boto3 sagemaker-runtime
    client = InvocationsClient("http://127.0.0.1:8080")  # a container run locally (`serve`), or a tunnel
    client.embed(["Biden meets Xi in Bali"])  # the same answers as EmbeddingClient over gRPC

Requests are KServe v2 inference requests with binary tensors: the JSON header followed by the raw tensors, sent as
``application/vnd.sagemaker-triton.binary+json;json-header-size=N`` (SageMaker forbids the custom header Triton uses
elsewhere); responses come back the same way. The endpoint serves one model (``SAGEMAKER_TRITON_DEFAULT_MODEL_NAME``)
and the helpers build its request and parse its answer with the gRPC clients' own code. Errors are the project's
``ClientError`` types (HTTP 400 -> InvalidInputError; 5xx, throttling and connection failures are retried).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import numpy as np
import tritonclient.http as httpclient

from tritonrepo import contracts
from tritonrepo.errors import (
    ClientError, DeadlineExceededError, InvalidInputError, ServerInternalError, ServerOverloadedError,
    ServerUnavailableError,
)

from .grpc_core import RetryPolicy, chunks, encode_texts
from .embedding import EMBEDDING, TEXT
from .ner import ENTITIES, MAX_BATCH as NER_BATCH, QUERY, TRUNCATED, Entity, _results
from .video import OUTPUTS as SHOT_OUTPUTS, ShotResult, _file_result, read_video

BINARY_JSON = "application/vnd.sagemaker-triton.binary+json;json-header-size="
EMBED_BATCH = 64  # the sbert ensembles' max_batch_size


def _status_error(status: int, message: str, model: str) -> ClientError:
    if status == 400:
        return InvalidInputError(message, model=model, status="HTTP 400")
    if status in (429, 507):
        return ServerOverloadedError(message, model=model, status=f"HTTP {status}")
    if status in (502, 503, 504):
        return ServerUnavailableError(message, model=model, status=f"HTTP {status}")
    return ServerInternalError(message, model=model, status=f"HTTP {status}")


class InvocationsClient:
    """Blocking client of one SageMaker Triton endpoint (``url`` for a local container, or ``endpoint_name`` through
    boto3). ``timeout_s`` bounds each request; retriable errors are retried within ``retry``."""

    def __init__(self, url: str | None = None, *, endpoint_name: str | None = None, region: str | None = None,
                 model: str = "sagemaker", timeout_s: float = 60.0, retry: RetryPolicy = RetryPolicy()):
        if (url is None) == (endpoint_name is None):
            raise InvalidInputError("give either url (a local container) or endpoint_name (SageMaker)")
        self.url = url.rstrip("/") + "/invocations" if url else None
        self.endpoint_name, self.model, self.timeout_s, self.retry = endpoint_name, model, timeout_s, retry
        self._runtime = None
        if endpoint_name:
            import boto3  # only for real endpoints

            self._runtime = boto3.client("sagemaker-runtime", region_name=region or os.environ.get("AWS_REGION"))

    def infer(self, inputs: list[httpclient.InferInput],
              outputs: Sequence[str] = ()) -> httpclient.InferResult:
        requested = [httpclient.InferRequestedOutput(name, binary_data=True) for name in outputs] or None
        body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=requested)
        content_type = BINARY_JSON + str(json_size) if json_size is not None else "application/json"
        for attempt in range(self.retry.attempts):
            try:
                data, answer_type = self._post(body, content_type)
                break
            except ClientError as e:
                if not e.retriable or attempt == self.retry.attempts - 1:
                    raise
                time.sleep(self.retry.delay(attempt))
        header = int(answer_type.split("json-header-size=")[1]) if "json-header-size=" in answer_type else None
        return httpclient.InferenceServerClient.parse_response_body(data, header_length=header)

    def _post(self, body: bytes, content_type: str) -> tuple[bytes, str]:
        if self._runtime is not None:
            return self._invoke_endpoint(body, content_type)
        request = urllib.request.Request(self.url, data=body, method="POST", headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as r:
                return r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            raw = e.read().decode(errors="replace")
            try:
                message = json.loads(raw).get("error", raw)
            except ValueError:
                message = raw
            raise _status_error(e.code, message, self.model) from e
        except TimeoutError as e:
            raise DeadlineExceededError(f"no answer within {self.timeout_s} s", model=self.model) from e
        except (urllib.error.URLError, ConnectionError) as e:
            raise ServerUnavailableError(f"cannot reach {self.url}: {getattr(e, 'reason', e)}", model=self.model) from e

    def _invoke_endpoint(self, body: bytes, content_type: str) -> tuple[bytes, str]:
        from botocore.exceptions import BotoCoreError, ClientError as BotoError

        try:
            answer = self._runtime.invoke_endpoint(EndpointName=self.endpoint_name, ContentType=content_type,
                                                   Body=body)
        except BotoError as e:
            info = e.response.get("Error", {})
            status = int(e.response.get("OriginalStatusCode") or e.response["ResponseMetadata"]["HTTPStatusCode"])
            if info.get("Code") == "ThrottlingException":
                status = 429
            raise _status_error(status, info.get("Message", str(e)), self.model) from e
        except BotoCoreError as e:
            raise ServerUnavailableError(str(e), model=self.model) from e
        return answer["Body"].read(), answer.get("ContentType", "")

    # ---- the served models, as the gRPC clients call them ----------------------------------------------------

    def embed(self, texts: Sequence[str], input_name: str = TEXT, output: str = EMBEDDING) -> np.ndarray:
        batch = encode_texts(texts, self.model)
        parts = [self.infer([_input(input_name, batch[part])], [output]).as_numpy(output)
                 for part in chunks(len(batch), EMBED_BATCH)]
        return np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)

    def entities(self, queries: Sequence[str]) -> list[list[Entity]]:
        batch = encode_texts(queries, self.model)
        results = [self.infer([_input(QUERY, batch[part])], [ENTITIES, TRUNCATED])
                   for part in chunks(len(batch), NER_BATCH)]
        return [r.entities for r in _results(results, self.model)]

    def shots(self, video) -> ShotResult:
        data = read_video(video, self.model)
        result = self.infer([_input(contracts.VIDEO.name, np.frombuffer(data, dtype=np.uint8))], SHOT_OUTPUTS)
        return _file_result(result, probabilities=False)


def _input(name: str, array: np.ndarray) -> httpclient.InferInput:
    dtype = "BYTES" if array.dtype == np.object_ else {np.dtype(np.uint8): "UINT8"}[array.dtype]
    inp = httpclient.InferInput(name, list(array.shape), dtype)
    inp.set_data_from_numpy(array, binary_data=True)
    return inp
