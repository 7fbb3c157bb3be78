"""Served embeddings through the real tritonserver vs sentence-transformers, and the clients around them."""

import asyncio
import os

import numpy as np
import pytest

from tritonrepo.clients import AsyncEmbeddingClient, EmbeddingClient
from tritonrepo.datasets import conll_sentences
from tritonrepo.errors import DeadlineExceededError, InvalidInputError, ModelNotFoundError, ServerUnavailableError
from tritonrepo.paths import SBERT_WEIGHTS
from tritonrepo.server import free_port

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def sentences():
    # tricky-but-valid text first: unicode, extra spaces, punctuation, the empty string
    return ["", "  Taylor   Swift Eras tour, Tokyo!!  ", "Zürich — Ünïcödé façade, naïve café", "biden xi summit bali",
            *conll_sentences("test")[:150]]


@pytest.fixture(scope="module")
def reference(sentences):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(SBERT_WEIGHTS), device="cpu").encode(sentences, batch_size=32,
                                                                          show_progress_bar=False)


def _cos(a, b):
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_fp32_served_embeddings_match_sentence_transformers(triton, sentences, reference):
    with EmbeddingClient(triton.grpc_url, "sbert") as client:
        got = client.embed(sentences)  # 154 texts: three requests of at most 64
    assert got.shape == (len(sentences), 384) and got.dtype == np.float32
    assert _cos(got, reference).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_int8_served_embeddings_stay_close(triton, sentences, reference):
    with EmbeddingClient(triton.grpc_url, "sbert_int8") as client:
        got = client.embed(sentences)
    cos = _cos(got, reference)
    assert cos.min() >= 0.97 and cos.mean() >= 0.99


def test_async_client_matches_sync_and_keeps_order(triton, sentences):
    async def run():
        async with AsyncEmbeddingClient(triton.grpc_url, "sbert", max_in_flight=3) as client:
            whole, parts = await asyncio.gather(client.embed(sentences), client.embed(sentences[::-1]))
            return whole, parts
    whole, reversed_ = asyncio.run(run())
    with EmbeddingClient(triton.grpc_url, "sbert") as client:
        sync = client.embed(sentences)
    np.testing.assert_allclose(whole, sync, atol=1e-5)
    np.testing.assert_allclose(reversed_[::-1], sync, atol=1e-5)


def test_empty_input_returns_an_empty_matrix(triton):
    with EmbeddingClient(triton.grpc_url) as client:
        assert client.embed([]).shape == (0, 384)


def test_client_errors_are_typed(triton):
    with pytest.raises(ModelNotFoundError, match="nope"):
        EmbeddingClient(triton.grpc_url, "nope").embed(["x"])
    with pytest.raises(ServerUnavailableError):
        EmbeddingClient(f"127.0.0.1:{free_port()}", timeout_s=3).embed(["x"])
    with pytest.raises(DeadlineExceededError):
        EmbeddingClient(triton.grpc_url, timeout_s=1e-4).embed(["x"] * 64)
    with pytest.raises(InvalidInputError, match="single string"):
        EmbeddingClient(triton.grpc_url).embed("not a list")


def test_prometheus_metrics_report_queue_and_compute_per_model(triton):
    import urllib.request

    EmbeddingClient(triton.grpc_url, "sbert_int8").embed(["metrics please"])
    text = urllib.request.urlopen(triton.metrics_url, timeout=10).read().decode()
    for metric in ("nv_inference_request_success", "nv_inference_queue_duration_us",
                   "nv_inference_compute_infer_duration_us", "nv_inference_exec_count"):
        assert f'{metric}{{model="sbert_encoder_int8",version="1"}}' in text, metric
