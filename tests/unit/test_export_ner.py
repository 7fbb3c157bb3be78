"""NER export and training mechanics on tiny randomly initialised models: ONNX parity for BERT and DistilBERT,
IOB2 conversion, and a fine-tuning run that is killed mid-way and resumes to the same weights."""

import json

import numpy as np
import pytest

from tritonrepo import datasets
from tritonrepo.export import ner, ner_train
from tritonrepo.export.ner import NER_LABELS
from tritonrepo.paths import SBERT_WEIGHTS


def _tiny_checkpoint(path, kind):
    import torch
    from transformers import (AutoTokenizer, BertConfig, BertForTokenClassification, DistilBertConfig,
                              DistilBertForTokenClassification)

    torch.manual_seed(0)
    labels = dict(enumerate(NER_LABELS))
    common = {"num_labels": len(labels), "id2label": labels, "label2id": {v: k for k, v in labels.items()}}
    if kind == "distilbert":
        model = DistilBertForTokenClassification(DistilBertConfig(vocab_size=30522, dim=32, n_layers=2, n_heads=2,
                                                                  hidden_dim=64, **common))
    else:
        model = BertForTokenClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                      num_attention_heads=2, intermediate_size=64, **common))
    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(str(SBERT_WEIGHTS)).save_pretrained(str(path))
    return path


@pytest.mark.parametrize("kind", ["distilbert", "bert"])
def test_token_classifier_exports_with_logit_parity(tmp_path, kind):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    src = _tiny_checkpoint(tmp_path / kind, kind)
    onnx_path = tmp_path / "model.onnx"
    ner.export_onnx(src, onnx_path)
    model = AutoModelForTokenClassification.from_pretrained(str(src)).eval()
    sentences = datasets.read_conll("test")[:200]
    diff = ner.max_logit_diff(ner_train.torch_logits(model), ner.onnx_logits(onnx_path),
                              AutoTokenizer.from_pretrained(str(src)), sentences)
    assert diff < 1e-4


def test_iob1_tags_become_iob2():
    assert datasets.iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    words, tags = datasets.read_conll("train")[0]
    assert words[:3] == ["EU", "rejects", "German"] and tags[:3] == ["B-ORG", "O", "B-MISC"]


def test_label_bigrams_are_the_training_tags_log_probabilities():
    index = {label: i for i, label in enumerate(NER_LABELS)}
    sentences = [(["Bill", "Clinton", "won"], ["B-PER", "I-PER", "O"]), (["Salem", "Bitar"], ["B-PER", "I-PER"]),
                 (["in", "Paris"], ["O", "B-LOC"]), ([], [])]
    prior = ner_train.label_bigrams(sentences)
    start, transition = np.exp(prior["start_logp"]), np.exp(prior["transition_logp"])
    assert start.sum() == pytest.approx(1, abs=1e-5) and np.allclose(transition.sum(axis=1), 1, atol=1e-5)
    n = len(index)  # add-one smoothing: every pair keeps a probability, the counted ones lead their rows
    assert start[index["B-PER"]] == pytest.approx(3 / (3 + n), abs=1e-5)
    assert transition[index["B-PER"]].argmax() == index["I-PER"]
    assert transition[index["B-PER"], index["I-PER"]] == pytest.approx(3 / (2 + n), abs=1e-5)
    assert transition[index["O"], index["B-LOC"]] == pytest.approx(2 * transition[index["O"], index["O"]])  # 1 vs 0


def test_query_shaped_examples_come_from_one_draw_unless_more_are_asked_for():
    train = datasets.read_conll("train")
    one, _ = ner_train.training_sentences(ner_train.NerTraining(), tokenizer=None)
    pooled, _ = ner_train.training_sentences(ner_train.NerTraining(query_shaped_fraction=4.0, query_shaped_draws=3),
                                             tokenizer=None)
    draw = datasets.query_shaped(train, seed=ner_train.NerTraining().seed)
    assert one[:len(train)] == train and pooled[:len(train)] == train
    assert sorted(map(repr, one[len(train):])) == sorted(map(repr, draw))  # fraction 2.0: all of one draw, once
    extra = pooled[len(train):]
    assert len(extra) == int(4.0 * len(train)) > 2 * len(draw)  # more than two draws hold: a third was pooled
    assert ner_train.NerTraining().fingerprint() != ner_train.NerTraining(query_shaped_draws=3).fingerprint()


def test_one_conll_reader_gives_every_view_of_a_split():
    documents = datasets.conll_documents("valid")
    sentences = datasets.read_conll("valid")
    assert len(documents) == 216 and len(sentences) == 3250 == sum(map(len, documents))
    articles = datasets.conll_articles("valid")
    assert [len(a) for a in articles] == [len(d) for d in documents]
    assert articles[0][0] == datasets.detokenize(documents[0][0][0])
    texts = datasets.conll_sentences("valid", min_tokens=1, unique=False)
    assert texts == [datasets.detokenize(words) for words, _ in sentences]
    assert datasets.conll_sentences("valid") == list(dict.fromkeys(t for t, (words, _) in zip(texts, sentences)
                                                                   if len(words) >= 3))


class _Killed(Exception):
    pass


def test_training_resumes_where_it_was_killed(tmp_path, monkeypatch):
    import torch
    from safetensors.numpy import load_file

    backbone = _tiny_checkpoint(tmp_path / "backbone", "bert")
    cfg = dict(backbone=backbone, max_steps=6, batch_size=8, checkpoint_every=2, threads=1, lr=1e-3)
    straight = ner_train.train(ner_train.NerTraining(out_dir=tmp_path / "straight", **cfg), progress=False)

    real_clip, calls = torch.nn.utils.clip_grad_norm_, []

    def dies_at_step_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise _Killed()
        return real_clip(*args, **kwargs)

    resumed_cfg = ner_train.NerTraining(out_dir=tmp_path / "resumed", **cfg)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", dies_at_step_5)
    with pytest.raises(_Killed):
        ner_train.train(resumed_cfg, progress=False)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", real_clip)
    assert not (tmp_path / "resumed").exists()  # nothing half-written where the finished model goes
    resumed = ner_train.train(resumed_cfg, progress=False)  # resumes from the step-4 checkpoint

    assert straight["steps"] == resumed["steps"] == 6 and straight["fingerprint"] == resumed["fingerprint"]
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    saved = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert saved["id2label"]["1"] == "B-PER"  # the HF pipeline needs id2label to aggregate
    cached = ner_train.train(resumed_cfg, progress=False)  # same fingerprint: no training
    assert cached == resumed
