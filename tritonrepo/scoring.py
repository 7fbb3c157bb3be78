"""The metrics every evaluation shares: entity F1 (NER), nDCG/MRR/recall (search), cut-matching F1 (shots)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def entity_f1(sentences, predictions) -> dict:
    """Entity-level F1, precision and recall (seqeval, IOB2) of predicted tags against the sentences' tags."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold = [tags for _, tags in sentences]
    return {"f1": round(f1_score(gold, predictions), 4), "precision": round(precision_score(gold, predictions), 4),
            "recall": round(recall_score(gold, predictions), 4), "sentences": len(sentences)}


def ndcg(ranked: Sequence[int], relevant: frozenset[int], k: int = 10) -> float:
    dcg = sum(1.0 / np.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def mrr(ranked: Sequence[int], relevant: frozenset[int], k: int = 10) -> float:
    return next((1.0 / (i + 1) for i, d in enumerate(ranked[:k]) if d in relevant), 0.0)


def recall(ranked: Sequence[int], relevant: frozenset[int], k: int = 100) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def scores(rankings: Sequence[Sequence[int]], relevant: Sequence[frozenset[int]]) -> dict[str, float]:
    """nDCG@10, MRR@10 and recall@100, averaged over queries."""
    return {name: round(float(np.mean([fn(r, rel) for r, rel in zip(rankings, relevant)])), 4)
            for name, fn in (("ndcg@10", ndcg), ("mrr@10", mrr), ("recall@100", recall))}


def match_f1(truth, found, tolerance: int) -> tuple[int, int, float]:
    """(matched, found, F1): greedy one-to-one matching of sorted frame indices within `tolerance`."""
    truth, used, hits = list(truth), set(), 0
    for f in found:
        best = min((abs(f - t), i) for i, t in enumerate(truth) if i not in used) if len(used) < len(truth) else None
        if best is not None and best[0] <= tolerance:
            used.add(best[1])
            hits += 1
    if not truth and not found:
        return 0, 0, 1.0
    return hits, len(found), 2 * hits / (len(truth) + len(found))
