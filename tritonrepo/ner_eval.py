"""Entity F1 of the *served* NER models on the CoNLL-2003 test split (as written, lowercased, and cut into
search-query shapes: ``datasets.query_shaped``), through NerClient.

Each sentence is sent as its words joined by single spaces, so every served entity span maps back onto whole words:
the first word an entity overlaps gets B-<type>, the rest I-<type>, every other word O; seqeval scores the word tags
against the gold IOB2 tags. Aggregation ``first`` labels whole words by their first sub-token, as training's
evaluation does, so served F1 is comparable with the export report's (the offline ONNX Runtime figure); the served
default ``viterbi`` starts from the same word labels.
"""

from __future__ import annotations

import time
from collections import Counter

from .clients import NerClient
from .datasets import entity_spans, lowercased, query_shaped, read_conll
from .scoring import entity_f1


def word_tags(words: list[str], entities) -> list[str]:
    tags, starts, pos = ["O"] * len(words), [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    for e in entities:
        inside = [i for i, s in enumerate(starts) if s < e.end and s + len(words[i]) > e.start]
        for j, i in enumerate(inside):
            tags[i] = ("B-" if j == 0 else "I-") + e.type
    return tags


def _typed(tags: list[str]) -> dict[tuple[int, int], str]:
    return {(a, b): tags[a][2:] for a, b in entity_spans(tags)}


def error_breakdown(data, predictions, examples: int = 3) -> dict:
    """Each gold entity as ``correct``, ``wrong type`` (same words), ``wrong boundary`` (a predicted entity overlaps
    it) or ``missed``, and each predicted entity overlapping no gold one as ``spurious``; with the first ``examples``
    queries of each kind: the query, its gold and its served entities as ``words (TYPE)``."""
    counts: Counter[str] = Counter()
    shown: dict[str, list[dict]] = {}
    for (words, gold_tags), predicted in zip(data, predictions):
        gold, served = _typed(gold_tags), _typed(predicted)
        kinds = ["correct" if served.get(g) == t else "wrong type" if g in served else
                 "wrong boundary" if any(a < g[1] and g[0] < b for a, b in served) else "missed"
                 for g, t in gold.items()]
        kinds += ["spurious" for a, b in served if not any(a < y and x < b for x, y in gold)]
        counts.update(kinds)
        for kind in set(kinds) - {"correct"}:
            if len(shown.setdefault(kind, [])) < examples:
                shown[kind].append({"query": " ".join(words), **{
                    name: [f"{' '.join(words[a:b])} ({t})" for (a, b), t in spans.items()]
                    for name, spans in (("gold", gold), ("served", served))}})
    return {"counts": dict(counts), "examples": shown}


def served_f1(url: str, model: str, *, split: str = "test", aggregation: str = "first", limit: int | None = None
              ) -> dict:
    sentences = read_conll(split)[:limit]
    out = {}
    with NerClient(url, model, timeout_s=600) as client:
        for name, data in (("cased", sentences), ("lowercased", lowercased(sentences)),
                           ("queries", query_shaped(sentences))):
            t0 = time.perf_counter()
            results = client.entities([" ".join(words) for words, _ in data], aggregation=aggregation)
            predicted = [word_tags(words, found) for (words, _), found in zip(data, results)]
            out[name] = entity_f1(data, predicted) | {"seconds": round(time.perf_counter() - t0, 1)}
            if name == "queries":
                out[name]["errors"] = error_breakdown(data, predicted)
    return {"model": model, "split": split, "aggregation": aggregation, **out}
