"""Fine-tune a token classifier on CoNLL-2003 English: resumable, cached by fingerprint, F1 reported with seqeval.

`train(NerTraining(...))` trains any local Hugging Face checkpoint directory whose model type has a token
classification head (BERT, DistilBERT, ...). Defaults: the packaged all-MiniLM-L6-v2 encoder, IOB2 tags on every
token (a word's first token gets its tag, the others the I- tag of its type), dynamic padding over length-bucketed
batches (CoNLL sentences are short: padding to 128 would waste ~80 % of the compute on this 2-core machine).

A checkpoint (model, optimizer, scheduler, RNG, step) is written every `checkpoint_every` steps; a killed run
resumes from it to the same weights. The finished model (`config.json` with id2label, weights, tokenizer) and
`metrics.json` land in `out_dir`; a later call with the same fingerprint returns the cached metrics without training.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tritonrepo.datasets import lowercased, query_shaped, read_conll
from tritonrepo.paths import ASSETS, CONLL_DIR, SBERT_WEIGHTS
from tritonrepo.scoring import entity_f1

from .artifacts import cached, publish, staging_dir
from .hf import Fit, recipe_fingerprint, start_training

log = logging.getLogger(__name__)

NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")  # IOB2
LABELS = NER_LABELS
NER_ARTIFACTS = ASSETS / "artifacts" / "ner"
TRAIN_VERSION = 1  # bump when the recipe changes: cached models are retrained


@dataclass(frozen=True, kw_only=True)
class NerTraining:
    backbone: Path = SBERT_WEIGHTS
    out_dir: Path = NER_ARTIFACTS / "model"
    epochs: float = 5
    max_steps: int = 0  # > 0: stop after this many optimizer steps (brief models for tests)
    batch_size: int = 32
    lr: float = 1e-4
    warmup: float = 0.06
    weight_decay: float = 0.01
    max_length: int = 128
    lowercase_fraction: float = 0.0  # share of training sentences lowercased (mixed-case augmentation)
    # query-shaped examples (datasets.query_shaped of the train split: short spans around entities, adjacent entities
    # without context) added, as a share of the train sentences, at most all of the draws' (27,010 each); None: none.
    # Test F1 query-shaped / CoNLL, seed 13: none 0.7494 / 0.8694 (served), 1.0 0.8309 / 0.8779, 2.0 (all of one
    # draw) 0.8407 / 0.8736 (offline; docs/models.md, NER)
    query_shaped_fraction: float | None = 2.0
    # draws of datasets.query_shaped pooled before sampling, seeds seed, seed + 1, ...; None: one. Fraction 4.0 of 3
    # draws: fewer boundary errors, more wrong types, served test F1 lower on both sets (docs/models.md, NER)
    query_shaped_draws: int | None = None
    # Label every token, not only each word's first: the served decoder sees raw queries, where punctuation inside
    # a CoNLL word ("U.S.", "1996-08-22") starts new pre-tokenizer words; trained on first tokens only, those pieces
    # get untrained labels (served test F1 0.855 vs 0.8665 offline, precision -2 points).
    label_all_tokens: bool = True
    # weight init of the head, data order, query-shaped draw and sampling; 13 and 14 measured (docs/models.md, NER)
    seed: int = 14
    checkpoint_every: int = 200
    threads: int = field(default=0, compare=False)  # torch intra-op threads; 0 = torch's default

    def fingerprint(self) -> str:
        return recipe_fingerprint(TRAIN_VERSION, self, CONLL_DIR / "train.txt")


def _lowercases(tokenizer) -> bool:
    return tokenizer("Reuters BRUSSELS")["input_ids"] == tokenizer("reuters brussels")["input_ids"]


def training_sentences(cfg: NerTraining, tokenizer) -> tuple[list, bool]:
    """The recipe's training examples (CoNLL train, lowercased copies, query-shaped spans), and whether the lowercase
    augmentation applied (not for a tokenizer that lowercases anyway)."""
    sentences = read_conll("train")
    augment = cfg.lowercase_fraction > 0 and not _lowercases(tokenizer)
    if cfg.lowercase_fraction > 0 and not augment:
        log.info("tokenizer lowercases its input: lowercase augmentation would change nothing, skipped")
    rng = random.Random(cfg.seed)
    if augment:
        picked = rng.sample(range(len(sentences)), int(cfg.lowercase_fraction * len(sentences)))
        sentences = sentences + lowercased([sentences[i] for i in picked])
    if cfg.query_shaped_fraction:
        shaped = [q for draw in range(cfg.query_shaped_draws or 1)
                  for q in query_shaped(read_conll("train"), seed=cfg.seed + draw)]
        count = min(len(shaped), int(cfg.query_shaped_fraction * len(read_conll("train"))))
        sentences = sentences + [shaped[i] for i in sorted(rng.sample(range(len(shaped)), count))]
    return sentences, augment


def label_bigrams(sentences) -> dict:
    """Log probabilities of each sentence's first label and of each label given the one before it, over LABELS,
    counted in IOB2 tag sequences with add-one smoothing: the ``viterbi`` decoder's prior (ensembles/ner_decoder)."""
    index = {label: i for i, label in enumerate(LABELS)}
    start, transition = np.ones(len(LABELS)), np.ones((len(LABELS), len(LABELS)))
    for _, tags in sentences:
        if tags:
            start[index[tags[0]]] += 1
        for before, after in zip(tags, tags[1:]):
            transition[index[before], index[after]] += 1
    return {"start_logp": np.log(start / start.sum()).round(6).tolist(),
            "transition_logp": np.log(transition / transition.sum(axis=1, keepdims=True)).round(6).tolist()}


def _encode(tokenizer, sentences, max_length: int, all_tokens: bool) -> list[dict]:
    """Token ids with labels on each word's first token; with all_tokens, its other tokens get the I- tag of the
    word's type (O stays O), else -100 (ignored by the loss)."""
    label_id = {label: i for i, label in enumerate(LABELS)}
    batch = tokenizer([w for w, _ in sentences], is_split_into_words=True, truncation=True, max_length=max_length)
    rows = []
    for i, (_, tags) in enumerate(sentences):
        labels, previous = [], None
        for word in batch.word_ids(i):
            if word is None:
                labels.append(-100)
            elif word != previous:
                labels.append(label_id[tags[word]])
            else:
                labels.append(label_id["I-" + tags[word][2:]] if all_tokens and tags[word] != "O" else
                              label_id["O"] if all_tokens else -100)
            previous = word
        rows.append({"input_ids": batch["input_ids"][i], "labels": labels})
    return rows


def _batches(rows: list[dict], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Length-bucketed batches in random order: chunks of 50 batches are sorted by length, then cut."""
    order = list(range(len(rows)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda r: len(rows[r]["input_ids"]))
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(rows: list[dict], pad_id: int):
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for j, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[j, :n], mask[j, :n], labels[j, :n] = torch.tensor(r["input_ids"]), 1, torch.tensor(r["labels"])
    return ids, mask, labels


def torch_logits(model):
    """logits_fn for predict_words: a PyTorch token classifier in eval mode."""
    import torch

    model.eval()

    def run(ids, mask):
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
    return run


def predict_words(logits_fn, tokenizer, sentences, *, max_length: int = 128, batch_size: int = 64) -> list[list[str]]:
    """Word-level IOB2 tags from each word's first sub-token (words cut by truncation are tagged O).
    logits_fn(input_ids, attention_mask) -> logits [batch, seq, labels], int64 numpy in, numpy out."""
    enc = tokenizer([w for w, _ in sentences], is_split_into_words=True, truncation=True, max_length=max_length)
    predictions: list[list[str]] = [["O"] * len(words) for words, _ in sentences]
    order = sorted(range(len(sentences)), key=lambda r: len(enc["input_ids"][r]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(enc["input_ids"][r]) for r in idx)
        ids = np.full((len(idx), width), tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for j, r in enumerate(idx):
            n = len(enc["input_ids"][r])
            ids[j, :n], mask[j, :n] = enc["input_ids"][r], 1
        best = logits_fn(ids, mask).argmax(-1)
        for j, r in enumerate(idx):
            previous = None
            for t, word in enumerate(enc.word_ids(r)):
                if word is not None and word != previous:
                    predictions[r][word] = LABELS[best[j, t]]
                previous = word
    return predictions


def evaluate(logits_fn, tokenizer, split: str = "test", max_length: int = 128) -> dict:
    """Entity-level F1 (seqeval) on a split as written, on its lowercased copy and cut into query shapes."""
    sentences = read_conll(split)
    return {name: entity_f1(data, predict_words(logits_fn, tokenizer, data, max_length=max_length))
            for name, data in (("cased", sentences), ("lowercased", lowercased(sentences)),
                               ("queries", query_shaped(sentences)))}


def train(cfg: NerTraining = NerTraining(), *, force: bool = False, progress: bool = True) -> dict:
    """Train (or resume, or return the cached result). Returns metrics.json as a dict."""
    fingerprint = cfg.fingerprint()
    metrics_path = cfg.out_dir / "metrics.json"
    if not force and (metrics := cached(metrics_path, fingerprint)):
        log.info("NER model up to date in %s (test F1 %.4f)", cfg.out_dir, metrics["test"]["cased"]["f1"])
        return metrics

    work = start_training(cfg, fingerprint, force)
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    checkpoint = work / "checkpoint.pt"
    tokenizer = AutoTokenizer.from_pretrained(str(cfg.backbone))
    model = AutoModelForTokenClassification.from_pretrained(
        str(cfg.backbone), num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)})

    train_sentences, augment = training_sentences(cfg, tokenizer)
    rows = _encode(tokenizer, train_sentences, cfg.max_length, cfg.label_all_tokens)

    def loss(batch):
        ids, mask, labels = _collate([rows[r] for r in batch], tokenizer.pad_token_id)
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    fit = Fit(model, cfg, per_epoch=-(-len(rows) // cfg.batch_size), checkpoint=checkpoint, what="NER")
    fit.run(lambda epoch: _batches(rows, cfg.batch_size, random.Random(cfg.seed * 1000 + epoch)), loss,
            progress=progress)
    step, seconds = fit.step, fit.seconds

    log.info("evaluating on CoNLL-2003 valid and test")
    t1 = time.perf_counter()
    valid_sentences = read_conll("valid")
    valid = entity_f1(valid_sentences, predict_words(torch_logits(model), tokenizer, valid_sentences,
                                                     max_length=cfg.max_length))
    metrics = {
        "fingerprint": fingerprint, "backbone": str(cfg.backbone), "model_type": model.config.model_type,
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("backbone", "out_dir", "threads")},
        "steps": step, "train_sentences": len(train_sentences), "lowercase_augmentation_applied": augment,
        "train_seconds": round(seconds, 1), "torch_threads": torch.get_num_threads(),
        "valid": valid, "test": evaluate(torch_logits(model), tokenizer, "test", cfg.max_length),
        "eval_seconds": round(time.perf_counter() - t1, 1),
    }
    final = staging_dir(cfg.out_dir)
    model.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))
    (final / "metrics.json").write_text(json.dumps(metrics, indent=2))
    publish(final, cfg.out_dir)
    shutil.rmtree(work, ignore_errors=True)
    log.info("NER model in %s: test F1 %.4f (lowercased %.4f), %d steps in %.0f s", cfg.out_dir,
             metrics["test"]["cased"]["f1"], metrics["test"]["lowercased"]["f1"], step, seconds)
    return metrics
