"""What two priors on top of the NER model's word probabilities are worth, measured offline on the CoNLL-2003 valid
split: the weight of ``viterbi``'s label bigrams, and a letter-case prior (docs/models.md, NER).

    .venv/bin/python -m tritonrepo.perf.ner_priors     # about 1 min here; JSON in perf/results/ner-priors-*.json

Word probabilities come from the trained checkpoint in PyTorch, each word's first token as ``first`` and ``viterbi``
take them served, on the valid split's CoNLL sentences, their lowercased copy and their query shapes
(``datasets.query_shaped``). Every figure is entity F1 (seqeval) of the ``viterbi`` decoder (ensembles/ner_decoder).

- Bigram weight: the label bigrams' log probabilities scaled by each weight (1: the served decoder; 0: only the IOB2
  rule).
- Case prior: the backbone lowercases, so the model never sees case. The prior adds ``w[style, class, label]`` to
  each word's log probabilities: style is the query's (no capitals, all capitals, every word capitalised, other),
  class the word's (no letters, lowercase, all capitals, capitalised, capitalised first word, other). ``w`` is fitted
  by cross-entropy with an L2 penalty on the first half of each set and scored on the second half, then the halves
  swap: no sentence is scored by a prior fitted on it. The test split is not read.
"""

from __future__ import annotations

import sys
import types

import numpy as np

from tritonrepo.datasets import lowercased, query_shaped, read_conll
from tritonrepo.export.ner_train import LABELS, NER_ARTIFACTS
from tritonrepo.scoring import entity_f1

from .provenance import provenance, write_result

WEIGHTS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
STYLES = ("no capitals", "all capitals", "every word capitalised", "other")
CLASSES = 6
L2 = 3.0


def word_probabilities(model, tokenizer, sentences, batch_size: int = 64) -> list[np.ndarray]:
    """[words, labels] softmax probabilities of each word's first token (words cut at 128 tokens: O)."""
    import torch

    enc = tokenizer([w for w, _ in sentences], is_split_into_words=True, truncation=True, max_length=128)
    out: list[np.ndarray] = [np.zeros(0)] * len(sentences)
    order = sorted(range(len(sentences)), key=lambda r: len(enc["input_ids"][r]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(enc["input_ids"][r]) for r in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for j, r in enumerate(idx):
            n = len(enc["input_ids"][r])
            ids[j, :n], mask[j, :n] = torch.tensor(enc["input_ids"][r]), 1
        with torch.inference_mode():
            probs = torch.softmax(model(input_ids=ids, attention_mask=mask).logits.double(), -1).numpy()
        for j, r in enumerate(idx):
            words = np.zeros((len(sentences[r][0]), len(LABELS)))
            words[:, 0], previous = 1.0, None
            for t, word in enumerate(enc.word_ids(r)):
                if word is not None and word != previous:
                    words[word] = probs[j, t]
                previous = word
            out[r] = words
    return out


def query_style(words: list[str]) -> int:
    letters = [c for w in words for c in w if c.isalpha()]
    if not any(c.isupper() for c in letters):
        return 0
    if not any(c.islower() for c in letters):
        return 1
    return 2 if all(w[0].isupper() for w in words if any(c.isalpha() for c in w)) else 3


def word_class(word: str, first: bool) -> int:
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return 0
    if all(c.islower() for c in letters):
        return 1
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return 2
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return 4 if first else 3
    return 5


def case_features(words: list[str]) -> np.ndarray:
    style = query_style(words)
    return np.array([style * CLASSES + word_class(w, i == 0) for i, w in enumerate(words)], dtype=np.int64)


def fit_case_prior(probs, features, gold) -> np.ndarray:
    """w [styles * classes, labels] maximising the words' log likelihood of softmax(log p + w), L2-penalised."""
    import torch

    w = torch.zeros(len(STYLES) * CLASSES, len(LABELS), dtype=torch.float64, requires_grad=True)
    logp = torch.log(torch.tensor(np.concatenate(probs)).clamp_min(1e-30))
    f, y = torch.tensor(np.concatenate(features)), torch.tensor(np.concatenate(gold))
    optimizer = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logp + w[f], y, reduction="sum") + L2 * (w ** 2).sum()
        loss.backward()
        return loss
    optimizer.step(closure)
    return w.detach().numpy()


def run(model_dir=NER_ARTIFACTS / "model", labels_file=NER_ARTIFACTS / "export" / "labels.json") -> dict:
    import json

    from transformers import AutoModelForTokenClassification, AutoTokenizer

    # the decoder's server-side import; the decoding functions used here do not touch it
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    from tritonrepo.ensembles.ner_decoder import best_iob2_path

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForTokenClassification.from_pretrained(str(model_dir)).eval()
    bigrams = json.loads(labels_file.read_text())
    start, transition = np.array(bigrams["start_logp"]), np.array(bigrams["transition_logp"])
    index = {label: i for i, label in enumerate(LABELS)}
    valid = read_conll("valid")
    sets = {name: {"data": data, "probs": word_probabilities(model, tokenizer, data),
                   "features": [case_features(words) for words, _ in data],
                   "gold": [np.array([index[t] for t in tags]) for _, tags in data]}
            for name, data in (("conll", valid), ("lowercased", lowercased(valid)), ("queries", query_shaped(valid)))}

    def f1(data, probs, weight=1.0):
        tags = [[LABELS[i] for i in best_iob2_path(p, LABELS, weight * start, weight * transition)] for p in probs]
        return round(entity_f1(data, tags)["f1"], 4)

    halves = {name: (range(len(s["data"]) // 2), range(len(s["data"]) // 2, len(s["data"])))
              for name, s in sets.items()}
    with_prior = {name: [None] * len(s["data"]) for name, s in sets.items()}
    for fit_half in (0, 1):
        w = fit_case_prior(*([s[key][i] for name, s in sets.items() for i in halves[name][fit_half]]
                             for key in ("probs", "features", "gold")))
        for name, s in sets.items():
            for i in halves[name][1 - fit_half]:
                p = s["probs"][i] * np.exp(w[s["features"][i]])
                with_prior[name][i] = p / p.sum(axis=1, keepdims=True)

    rows = []
    for name, s in sets.items():
        by_style = {}
        for style, label in enumerate(STYLES):
            picked = [i for i, (words, _) in enumerate(s["data"]) if query_style(words) == style]
            if any(t != "O" for i in picked for t in s["data"][i][1]):
                data = [s["data"][i] for i in picked]
                by_style[label] = {"sentences": len(picked), "viterbi": f1(data, [s["probs"][i] for i in picked]),
                                   "case_prior": f1(data, [with_prior[name][i] for i in picked])}
        rows.append({"set": name, "sentences": len(s["data"]),
                     "bigram_weight": {str(weight): f1(s["data"], s["probs"], weight) for weight in WEIGHTS},
                     "case_prior": f1(s["data"], with_prior[name]), "by_query_style": by_style})
    return {"benchmark": "ner-priors", "split": "valid", "model": str(model_dir), "l2": L2, "rows": rows,
            **provenance("torch", "transformers")}


def table(result: dict) -> str:
    lines = ["| valid set | " + " | ".join(f"bigrams x{w}" for w in WEIGHTS) + " | case prior |",
             "|---" * (len(WEIGHTS) + 2) + "|"]
    for row in result["rows"]:
        lines.append(f"| {row['set']} | " + " | ".join(str(v) for v in row["bigram_weight"].values()) +
                     f" | {row['case_prior']} |")
    lines += ["", "| valid set, query style | sentences | viterbi | with the case prior |", "|---|---|---|---|"]
    for row in result["rows"]:
        lines += [f"| {row['set']}, {style} | {v['sentences']} | {v['viterbi']} | {v['case_prior']} |"
                  for style, v in row["by_query_style"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    found = write_result(run(), "ner-priors")
    print(table(found))
    print(f"JSON: {found['output']}")
