"""The served cross-encoder against its PyTorch model, its client's limits, and hybrid search over served models."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonrepo.clients import AsyncRerankClient, EmbeddingClient, RerankClient
from tritonrepo.datasets import conll_sentences, headline_retrieval
from tritonrepo.errors import InvalidInputError
from tritonrepo.services import BM25Retriever, DenseRetriever, HybridRetriever, SearchPipeline

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def valid_pairs():
    """Real pairs: valid-split headlines with their own article and two other articles."""
    items = headline_retrieval("valid", ("valid",))
    queries, passages = [], []
    for q in range(0, 60, 3):
        own = min(items.relevant[q])
        for d in (own, (own + 7) % len(items.documents), (own + 31) % len(items.documents)):
            queries.append(items.queries[q])
            passages.append(items.documents[d])
    return queries, passages


def _by_query(queries, passages):
    groups: dict[str, list[str]] = {}
    for q, p in zip(queries, passages):
        groups.setdefault(q, []).append(p)
    return groups


def test_served_fp32_scores_equal_the_pytorch_models(triton, rerank_export, valid_pairs):
    from transformers import AutoModelForSequenceClassification

    from tritonrepo.export.rerank_train import score_pairs, torch_scores

    model_dir = rerank_export.training.out_dir
    queries, passages = valid_pairs
    queries, passages = queries + ["", "economy"], passages + ["an empty query scores the passage alone", ""]
    reference = score_pairs(torch_scores(AutoModelForSequenceClassification.from_pretrained(str(model_dir))),
                            model_dir, queries, passages)
    with RerankClient(triton.grpc_url, "rerank") as client:
        served = np.concatenate([client.scores(q, ps) for q, ps in _by_query(queries, passages).items()])
    np.testing.assert_allclose(served, reference, atol=2e-3)


def test_int8_ranks_like_fp32(triton, valid_pairs):
    queries, passages = valid_pairs
    groups = _by_query(queries, passages)
    with RerankClient(triton.grpc_url, "rerank") as fp32, RerankClient(triton.grpc_url, "rerank_int8") as int8:
        agree = [fp32.rerank(q, ps, top_k=1)[0].doc == int8.rerank(q, ps, top_k=1)[0].doc for q, ps in groups.items()]
    assert np.mean(agree) >= 0.9


def test_an_obviously_relevant_passage_ranks_first(triton):
    passages = [
        "Dutch bonds ended higher on Friday as traders took profits after a week of gains, dealers said.",
        "Pakistan were 225 for five at lunch on the second day of the first test against New Zealand.",
        "Two goals in the last six minutes gave holders Japan an uninspiring 2-1 Asian Cup victory over Syria.",
        "The European Commission said on Thursday it disagreed with German advice to consumers to shun British lamb.",
    ]
    with RerankClient(triton.grpc_url, "rerank") as client:
        best = client.rerank("SOCCER - LATE GOALS GIVE JAPAN WIN OVER SYRIA.", passages, top_k=2)
    assert best[0].doc == 2 and best[0].score > best[1].score


def test_bad_input_gets_a_clear_answer_and_the_server_keeps_serving(triton):
    sentences = conll_sentences("test")[:250]
    with RerankClient(triton.grpc_url, "rerank_int8", timeout_s=300) as client:
        assert client.rerank("anything", []) == [] and client.scores("anything", []).shape == (0,)
        many = [sentences[i % len(sentences)] for i in range(10_000)]  # chunked into requests of 64
        scores = client.scores("Germany economy", many)
        assert scores.shape == (10_000,) and np.allclose(scores[:250], scores[250:500], atol=0.05)
        with pytest.raises(InvalidInputError, match="10001 passages in one call; the limit is 10000"):
            client.scores("Germany economy", many + ["one more"])
        huge = ("German economic growth slowed in the second quarter. " * 20_000)[:1_000_000]  # 1 MB, 256 tokens read
        a, b = client.scores("German growth", [huge, huge[:5000]])
        assert abs(a - b) < 1e-3
        with pytest.raises(InvalidInputError, match="PASSAGE: text 0 is 1100000 bytes; the limit is 1048576 bytes"):
            client.scores("German growth", [huge + huge[:100_000]])
        with pytest.raises(InvalidInputError, match=r"passages\[1\] is int"):
            client.scores("q", ["fine", 3])
    raw = grpcclient.InferenceServerClient(triton.grpc_url)
    inputs = []
    for name, value in (("QUERY", b"query"), ("PASSAGE", b"caf\xe9 latin-1")):
        inp = grpcclient.InferInput(name, [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[value]], dtype=np.object_))
        inputs.append(inp)
    with pytest.raises(InferenceServerException, match="PASSAGE: text 0 is not valid UTF-8"):
        raw.infer("rerank", inputs)
    with RerankClient(triton.grpc_url, "rerank") as client:  # still serving
        assert client.scores("q", ["p"]).shape == (1,)


def test_async_client_matches_the_sync_client(triton, valid_pairs):
    queries, passages = valid_pairs
    with RerankClient(triton.grpc_url, "rerank") as client:
        expected = client.scores(queries[0], passages[:3])

    async def run():
        async with AsyncRerankClient(triton.grpc_url, "rerank") as client:
            return await asyncio.gather(*(client.scores(queries[0], passages[:3]) for _ in range(4)))

    for got in asyncio.run(run()):
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_hybrid_search_with_served_embeddings_and_rerank_finds_the_article(triton):
    items = headline_retrieval("valid", ("valid",))
    with EmbeddingClient(triton.grpc_url, "sbert_int8") as embedder, \
            RerankClient(triton.grpc_url, "rerank") as reranker:
        dense = DenseRetriever.build(items.documents, embedder.embed)
        search = SearchPipeline(HybridRetriever([BM25Retriever(items.documents), dense]), items.documents,
                                reranker=reranker, rerank_depth=10)
        found = [search.search(items.queries[q], k=10) for q in range(0, 40, 4)]
    hits = [bool({h.doc for h in r.hits} & items.relevant[q]) for q, r in zip(range(0, 40, 4), found)]
    assert np.mean(hits) >= 0.9
    assert all(set(r.seconds) == {"retrieve", "rerank"} and len(r.hits) == 10 for r in found)
