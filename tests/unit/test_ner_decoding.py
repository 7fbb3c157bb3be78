"""The NER tokenizer and decoder steps' logic, outside Triton, against the Hugging Face token-classification pipeline.

A tiny randomly initialised classifier labels tokens almost at random: every grouping rule (B-/I- runs, type changes,
subwords, O gaps) is exercised on each text, so the decoder must agree with the pipeline entity by entity, for all
four aggregation strategies, with offsets into texts full of unicode, extra spaces and punctuation. ``viterbi`` (not
in the pipeline) is checked against a brute-force search over every label sequence.
"""

import importlib
import itertools
import json
import sys
import types

import numpy as np
import pytest

from tritonrepo.export.ner import NER_LABELS
from tritonrepo.paths import SBERT_WEIGHTS

TEXTS = [
    "Taylor Swift Eras tour Tokyo",
    "  biden   xi summit,   bali!! ",
    "Zürich — Ünïcödé façade, naïve café in São Paulo",
    "Olaf Scholz trifft Emmanuel Macron in Paris (AFP)",
    "東京 Tokyo 🇯🇵 olympics 2021 ⚽ Messi's PSG-move",
    "U.S. President Bill Clinton met NATO's Javier Solana on Tuesday.",
    "unbelievably-hyphenated-compound-words and antidisestablishmentarianism",
    "",
    "   ",
]


def _load(name):
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    return importlib.import_module(f"tritonrepo.ensembles.{name}")  # a package member: its helpers import relatively


@pytest.fixture(scope="module")
def tokenizer_step(tmp_path_factory):
    module = _load("text_tokenizer")
    version = tmp_path_factory.mktemp("ner_tokenizer") / "1"
    version.mkdir()
    (version / "tokenizer.json").write_bytes((SBERT_WEIGHTS / "tokenizer.json").read_bytes())
    config = {"input": [{"name": "TEXT"}], "output": [{"name": n} for n in
                                                      ("input_ids", "attention_mask", "offsets", "token_kind",
                                                       "truncated")],
              "parameters": {"max_length": {"string_value": "32"}, "pad_to_multiple_of": {"string_value": "8"}}}
    step = module.TritonPythonModel()
    step.initialize({"model_config": json.dumps(config), "model_repository": str(version.parent),
                     "model_version": "1"})
    return step


@pytest.fixture(scope="module")
def pipeline_and_model():
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification, pipeline

    torch.manual_seed(3)
    labels = dict(enumerate(NER_LABELS))
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=len(labels), id2label=labels,
                        label2id={v: k for k, v in labels.items()})
    model = BertForTokenClassification(config).eval()
    with torch.no_grad():  # large logits: confident, varied labels instead of near-uniform noise
        model.classifier.weight.mul_(40)
    tokenizer = AutoTokenizer.from_pretrained(str(SBERT_WEIGHTS))
    return model, tokenizer, lambda strategy: pipeline("token-classification", model=model, tokenizer=tokenizer,
                                                       aggregation_strategy=strategy, device="cpu")


def _served(tokenizer_step, decoder, model, texts, strategy):
    import torch

    encodings = tokenizer_step.tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, e in enumerate(encodings):
        ids[i, : len(e.ids)], mask[i, : len(e.ids)] = e.ids, 1
    offsets, kinds, _ = tokenizer_step._word_info(texts, encodings, width, [False] * len(texts))
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    return [decoder.decode(t, logits[i], offsets[i], kinds[i], NER_LABELS, strategy)
            for i, t in enumerate(texts)]


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
def test_decoder_matches_the_hf_pipeline(tokenizer_step, pipeline_and_model, strategy):
    decoder = _load("ner_decoder")
    model, _, make = pipeline_and_model
    hf = make(strategy)
    served = _served(tokenizer_step, decoder, model, TEXTS, strategy)
    total = 0
    for text, got in zip(TEXTS, served):
        want = hf(text) if text.strip() else []
        assert [(e["type"], e["start"], e["end"]) for e in got] == \
               [(e["entity_group"], e["start"], e["end"]) for e in want], text
        np.testing.assert_allclose([e["score"] for e in got], [e["score"] for e in want], atol=1e-5)
        assert all(e["text"] == text[e["start"]:e["end"]] for e in got)
        total += len(got)
    assert total >= 10  # the random classifier did produce entities to compare


def test_word_kinds_offsets_and_truncation(tokenizer_step):
    texts = ["Scholz  unbelievably, Zürich", "x " * 100]
    encodings = tokenizer_step.tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encodings)
    offsets, kinds, truncated = tokenizer_step._word_info(texts, encodings, width, [False, False])
    tokens = encodings[0].tokens
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and kinds[0, 0] == 0 and kinds[0, len(tokens) - 1] == 0
    assert (kinds[0, len(tokens):] == 0).all()  # padding
    for t, token in enumerate(tokens[1:-1], start=1):
        assert kinds[0, t] == (2 if token.startswith("##") else 1), token
    words = ["".join(texts[0][s:e] for s, e in offsets[0, t:t + 1]) for t in range(1, len(tokens) - 1)]
    assert "".join(words) == "Scholzunbelievably,Zürich"  # offsets index the original text, case and accents kept
    assert truncated[:, 0].tolist() == [False, True]  # 100 words > max_length 32


def test_decoder_on_hand_made_logits():
    decoder = _load("ner_decoder")
    labels = NER_LABELS
    text = "Bill Clinton visits New York"
    spans = [(0, 4), (5, 12), (13, 19), (20, 23), (24, 28)]
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]
    logits = np.full((7, len(labels)), -5.0, dtype=np.float32)
    offsets = np.zeros((7, 2), dtype=np.int32)
    kinds = np.zeros(7, dtype=np.int8)
    for t, (span, tag) in enumerate(zip(spans, tags), start=1):
        logits[t, labels.index(tag)] = 5.0
        offsets[t], kinds[t] = span, 1
    got = decoder.decode(text, logits, offsets, kinds, labels)
    assert [(e["type"], e["text"]) for e in got] == [("PER", "Bill Clinton"), ("LOC", "New York")]
    assert all(0.99 < e["score"] <= 1 for e in got)
    assert decoder.decode("", logits[:2] * 0, offsets[:2] * 0, kinds[:2] * 0, labels) == []


def _valid_iob2(labels, path):
    return all(not labels[j].startswith("I-") or (i is not None and labels[i][2:] == labels[j][2:] and labels[i] != "O")
               for i, j in zip([None, *path[:-1]], path))


def test_viterbi_path_is_the_most_probable_valid_iob2_sequence():
    decoder = _load("ner_decoder")
    labels = NER_LABELS
    rng = np.random.default_rng(5)
    repaired = moved = 0
    for words in [1, 2, 3, 4] * 25:
        probs = rng.dirichlet(np.full(len(labels), 0.3), size=words)
        path = decoder.best_iob2_path(probs, labels)
        best = max((p for p in itertools.product(range(len(labels)), repeat=words) if _valid_iob2(labels, p)),
                   key=lambda p: np.log(probs[np.arange(words), p]).sum())
        assert _valid_iob2(labels, path) and tuple(path) == best
        greedy = list(probs.argmax(axis=1))
        if _valid_iob2(labels, greedy):
            assert path == greedy  # a valid argmax sequence is kept as it is
        repaired += path != greedy
        # with label bigram log probabilities: the valid sequence of the largest total score
        start = np.log(rng.dirichlet(np.ones(len(labels))))
        transition = np.log(rng.dirichlet(np.ones(len(labels)), size=len(labels)))
        with_prior = decoder.best_iob2_path(probs, labels, start, transition)
        best = max((p for p in itertools.product(range(len(labels)), repeat=words) if _valid_iob2(labels, p)),
                   key=lambda p: np.log(probs[np.arange(words), p]).sum() + start[p[0]]
                   + sum(transition[a, b] for a, b in zip(p, p[1:])))
        assert tuple(with_prior) == best
        moved += with_prior != path
    assert repaired >= 20 and moved >= 20  # the random draws did exercise invalid argmax sequences and the prior


def _three_words(probs, text):
    """Logits, offsets and kinds of [CLS] w1 w2 w3 [SEP], each word one token with the given label probabilities."""
    labels = NER_LABELS
    logits = np.full((5, len(labels)), -30.0, dtype=np.float32)
    for t, row in enumerate(probs, start=1):
        for label, p in row.items():
            logits[t, labels.index(label)] = np.log(p)
    ends = np.cumsum([len(w) + 1 for w in text.split()]) - 1
    offsets = np.array([(0, 0), *zip([0, *(ends[:-1] + 1)], ends), (0, 0)], dtype=np.int32)
    return logits, offsets, np.array([0, 1, 1, 1, 0], dtype=np.int8)


def test_viterbi_keeps_a_name_whole_where_first_splits_it():
    decoder = _load("ner_decoder")
    labels = NER_LABELS
    text = "Bill Clinton visits"
    logits, offsets, kinds = _three_words([{"B-PER": 0.9, "B-ORG": 0.1}, {"I-ORG": 0.5, "I-PER": 0.4, "O": 0.1},
                                           {"O": 1.0}], text)
    first = decoder.decode(text, logits, offsets, kinds, labels, "first")
    viterbi = decoder.decode(text, logits, offsets, kinds, labels, "viterbi")
    assert [(e["type"], e["text"]) for e in first] == [("PER", "Bill"), ("ORG", "Clinton")]
    assert [(e["type"], e["text"]) for e in viterbi] == [("PER", "Bill Clinton")]
    assert viterbi[0]["score"] == pytest.approx((0.9 + 0.4) / 2, abs=1e-6)


def test_label_bigrams_keep_a_two_word_name_whole(tmp_path):
    decoder = _load("ner_decoder")
    labels = list(NER_LABELS)
    text = "Salem Bitar scored"
    logits, offsets, kinds = _three_words([{"B-PER": 1.0}, {"B-PER": 0.6, "I-PER": 0.4}, {"O": 1.0}], text)
    transition = np.full((len(labels), len(labels)), np.log(0.1))
    transition[labels.index("B-PER"), labels.index("I-PER")] = np.log(0.8)  # names run on more often than not
    start = np.log(np.full(len(labels), 1 / len(labels)))
    (tmp_path / "labels.json").write_text(json.dumps({"labels": labels, "start_logp": start.tolist(),
                                                      "transition_logp": transition.tolist()}))
    read = decoder.read_labels(tmp_path / "labels.json")
    assert read[0] == labels and np.allclose(read[2], transition)
    plain = decoder.decode(text, logits, offsets, kinds, labels, "viterbi")
    assert [(e["type"], e["text"]) for e in plain] == [("PER", "Salem"), ("PER", "Bitar")]
    with_prior = decoder.decode(text, logits, offsets, kinds, labels, "viterbi", *read[1:])
    assert [(e["type"], e["text"]) for e in with_prior] == [("PER", "Salem Bitar")]
    assert decoder.decode(text, logits, offsets, kinds, labels, "first", *read[1:]) == plain  # viterbi's only

    (tmp_path / "labels.json").write_text(json.dumps(labels))  # a plain list: no prior
    assert decoder.read_labels(tmp_path / "labels.json") == (labels, None, None)
    (tmp_path / "labels.json").write_text(json.dumps({"labels": labels, "start_logp": [0.0],
                                                      "transition_logp": transition.tolist()}))
    with pytest.raises(ValueError, match=r"start_logp \[1\] and transition_logp \[9, 9\] must be \[9\]"):
        decoder.read_labels(tmp_path / "labels.json")


def test_served_spans_map_back_to_word_tags():
    from tritonrepo.clients import Entity
    from tritonrepo.ner_eval import word_tags

    words = ["Bill", "Clinton", "visits", "New", "York", "."]  # sent as "Bill Clinton visits New York ."
    found = [Entity("PER", 0.9, 0, 12, "Bill Clinton"), Entity("LOC", 0.8, 20, 28, "New York"),
             Entity("ORG", 0.5, 13, 15, "vi")]  # a sub-word entity tags its whole word
    assert word_tags(words, found) == ["B-PER", "I-PER", "B-ORG", "B-LOC", "I-LOC", "O"]
