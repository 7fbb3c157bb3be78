"""Entity F1 of the *served* NER models on the CoNLL-2003 test split (as written, lowercased, and cut into
search-query shapes: ``datasets.query_shaped``), through NerClient.

Each sentence is sent as its words joined by single spaces, so every served entity span maps back onto whole words:
the first word an entity overlaps gets B-<type>, the rest I-<type>, every other word O; seqeval scores the word tags
against the gold IOB2 tags. Aggregation ``first`` labels whole words by their first sub-token, as training's
evaluation does, so served F1 is comparable with the export report's (the offline ONNX Runtime figure).
"""

from __future__ import annotations

import time

from .clients import NerClient
from .datasets import query_shaped
from .export.ner_train import entity_f1, lowercased, read_conll


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


def served_f1(url: str, model: str, *, split: str = "test", aggregation: str = "first", limit: int | None = None
              ) -> dict:
    sentences = read_conll(split)[:limit]
    out = {}
    with NerClient(url, model, timeout_s=600) as client:
        for name, data in (("cased", sentences), ("lowercased", lowercased(sentences)),
                           ("queries", query_shaped(sentences))):
            t0 = time.perf_counter()
            results = client.entities([" ".join(words) for words, _ in data], aggregation=aggregation)
            out[name] = entity_f1(data, [word_tags(words, found) for (words, _), found in zip(data, results)])
            out[name]["seconds"] = round(time.perf_counter() - t0, 1)
    return {"model": model, "split": split, "aggregation": aggregation, **out}
