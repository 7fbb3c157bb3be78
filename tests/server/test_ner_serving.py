"""Served NER through the real tritonserver vs the Hugging Face pipeline on the same weights, bad input, clients."""

import asyncio
import os
import sys
import types

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tritonrepo.clients import AsyncNerClient, NerClient
from tritonrepo.datasets import conll_sentences
from tritonrepo.errors import InvalidInputError
from tritonrepo.export.ner import NER_AGGREGATION

pytestmark = pytest.mark.server

QUERIES = ["Taylor Swift Eras tour Tokyo", "  biden   xi summit,   bali!! ", "Zürich — façade of São Paulo's café",
           "东京 Tokyo 🇯🇵 olympics ⚽ Messi PSG", ""]


@pytest.fixture(scope="module")
def hf(ner_export):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import pipeline

    model_dir = str(ner_export.training.out_dir)
    return lambda strategy: pipeline("token-classification", model=model_dir, aggregation_strategy=strategy,
                                     device="cpu")


@pytest.fixture(scope="module")
def sentences():
    # the HF pipeline reads up to 512 tokens, the served model 128: compare on sentences that fit
    return QUERIES[:-1] + [s for s in conll_sentences("test") if len(s.split()) <= 50][:300]


def _key(entities):
    return [(e.type, e.start, e.end) for e in entities]


def _hf_key(found):
    return [(e["entity_group"], e["start"], e["end"]) for e in found]


def test_fp32_entities_equal_the_hf_pipeline_offsets_included(triton, hf, sentences):
    with NerClient(triton.grpc_url, "ner") as client:
        results = client.analyze(sentences, "simple")  # 304 queries: five requests of at most 64
    reference = hf("simple")(sentences)
    assert not any(r.truncated for r in results)
    total = 0
    for text, got, want in zip(sentences, results, reference):
        assert _key(got.entities) == _hf_key(want), text
        np.testing.assert_allclose([e.score for e in got.entities], [e["score"] for e in want], atol=1e-4)
        assert all(e.text == text[e.start:e.end] for e in got.entities)
        total += len(want)
    assert total >= 200  # the brief model finds entities in most sentences


@pytest.mark.parametrize("strategy", ["first", "average", "max"])
def test_word_aggregation_per_request_matches_the_pipeline(triton, hf, sentences, strategy):
    with NerClient(triton.grpc_url, "ner") as client:
        got = client.entities(sentences[:60], aggregation=strategy)
    want = hf(strategy)(sentences[:60])
    assert [_key(g) for g in got] == [_hf_key(w) for w in want]
    # the request parameter reached the decoder: these sentences decode differently under `simple`
    assert [_hf_key(w) for w in want] != [_hf_key(w) for w in hf("simple")(sentences[:60])]


def _steps(url, queries):
    """The ensemble's first two steps called one by one: (offsets, token kinds, logits) per query."""
    with grpcclient.InferenceServerClient(url) as client:
        text = grpcclient.InferInput("TEXT", [len(queries), 1], "BYTES")
        text.set_data_from_numpy(np.array([[q.encode()] for q in queries], dtype=np.object_))
        tokens = client.infer("ner_tokenizer", [text])
        inputs = []
        for name in ("input_ids", "attention_mask"):
            array = tokens.as_numpy(name)
            inputs.append(grpcclient.InferInput(name, list(array.shape), "INT64"))
            inputs[-1].set_data_from_numpy(array)
        logits = client.infer("ner_encoder", inputs).as_numpy("logits")
    return tokens.as_numpy("offsets"), tokens.as_numpy("token_kind"), logits


def test_default_is_word_level_no_entity_starts_or_ends_inside_a_word(triton, ner_export, sentences):
    queries = ["Nvidia shares record high", "Mount Etna eruption disrupts flights", *sentences[:60]]
    with NerClient(triton.grpc_url, "ner") as client:
        got = client.entities(queries)
        assert [_key(g) for g in got] == [_key(g) for g in client.entities(queries, aggregation=NER_AGGREGATION)]
        first = client.entities(queries, aggregation="first")
    # viterbi with the label bigrams installed beside the labels, replayed here on the served steps' outputs
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    from tritonrepo.ensembles import ner_decoder

    labels, start, transition = ner_decoder.read_labels(ner_export.out_dir / "labels.json")
    assert start is not None and transition is not None
    offsets, kinds, logits = _steps(triton.grpc_url, queries)
    want = [ner_decoder.decode(q, logits[i], offsets[i], kinds[i], labels, "viterbi", start, transition)
            for i, q in enumerate(queries)]
    assert [_key(g) for g in got] == [[(e["type"], e["start"], e["end"]) for e in w] for w in want]
    assert sum(_key(g) != _key(f) for g, f in zip(got, first)) >= 3  # the prior and the IOB2 constraint did act

    def inside(text, i):  # between two letters or digits of one word (CJK characters are words of their own)
        return 0 < i < len(text) and all(c.isascii() and c.isalnum() for c in text[i - 1:i + 1])

    assert not [(q, e.text) for q, found in zip(queries, got) for e in found if inside(q, e.start) or inside(q, e.end)]


def test_int8_agrees_with_fp32_on_most_entities(triton, sentences):
    with NerClient(triton.grpc_url, "ner") as fp32, NerClient(triton.grpc_url, "ner_int8") as int8:
        a, b = fp32.entities(sentences), int8.entities(sentences)
    same = sum(_key(x) == _key(y) for x, y in zip(a, b))
    assert same >= 0.9 * len(sentences)


def test_async_client_matches_sync(triton, sentences):
    async def run():
        async with AsyncNerClient(triton.grpc_url, "ner_int8", max_in_flight=3) as client:
            return await asyncio.gather(client.entities(sentences), client.entities(sentences[::-1]))
    forward, backward = asyncio.run(run())
    with NerClient(triton.grpc_url, "ner_int8") as client:
        sync = client.entities(sentences)
    assert [_key(x) for x in forward] == [_key(x) for x in sync] == [_key(x) for x in backward[::-1]]


def test_degenerate_queries_have_documented_results(triton):
    queries = ["", "   \t\n ", "😀🎉🇯🇵", "Путин и Си Цзиньпин, 習近平 في الرياض", "Angela\x00 Merkel\x07 in\x1b Berlin"]
    with NerClient(triton.grpc_url, "ner") as client:
        results = client.analyze(queries)
    assert results[0].entities == [] and results[1].entities == [] and results[2].entities == []
    assert not any(r.truncated for r in results)
    for text, r in zip(queries, results):  # control characters are dropped by the tokenizer, offsets stay true
        assert all(e.text == text[e.start:e.end] and e.end > e.start for e in r.entities)


def test_huge_query_is_truncated_and_reported(triton, caplog):
    query = "Angela Merkel met Emmanuel Macron in Paris. " + "the talks went on and on " * 4000  # ~100 kB
    with NerClient(triton.grpc_url, "ner_int8") as client:
        (result,) = client.analyze([query])
        after = client.entities(["Bill Clinton visits Moscow"])
    assert len(query.encode()) > 100_000 and result.truncated
    assert all(e.end < 300 for e in result.entities)  # entities come from the first 128 tokens
    assert "truncated" in caplog.text and len(after) == 1


def test_bad_bytes_fail_that_request_and_the_server_keeps_serving(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    batch = np.array([[b"Bill Clinton"], [b"caf\xe9 Paris"]], dtype=np.object_)
    inp = grpcclient.InferInput("QUERY", [2, 1], "BYTES")
    inp.set_data_from_numpy(batch)
    with pytest.raises(Exception, match=r"text 1 is not valid UTF-8"):
        client.infer("ner", [inp])
    with NerClient(triton.grpc_url, "ner") as ner:
        assert len(ner.entities(["Bill Clinton"])) == 1
        with pytest.raises(InvalidInputError, match="aggregation 'none'"):
            ner.entities(["x"], aggregation="none")
        with pytest.raises(InvalidInputError, match=r"texts\[1\] is int"):
            ner.entities(["ok", 3])


def test_wrong_dtype_is_rejected_by_name(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    inp = grpcclient.InferInput("QUERY", [1, 1], "INT32")
    inp.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    with pytest.raises(Exception, match="QUERY"):
        client.infer("ner", [inp])
