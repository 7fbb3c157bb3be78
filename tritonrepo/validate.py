"""Numeric validation of exported artifacts: collect every failed check, then raise one ValidationError; and the
reference requests and answers (``reference.npz`` in a model's version folder) that `tritonrepo check` replays."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ValidationError

REFERENCE = "reference.npz"


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return (a * b).sum(axis=1)


def neighbour_recall(reference: np.ndarray, candidate: np.ndarray, k: int = 10) -> float:
    """Mean overlap of each row's k nearest neighbours (cosine, itself excluded) under both embeddings."""
    def top_k(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argpartition(-sims, k, axis=1)[:, :k]

    ref, cand = top_k(reference), top_k(candidate)
    return float(np.mean([len(np.intersect1d(r, c)) / k for r, c in zip(ref, cand)]))


@dataclass
class Checks:
    """Accumulates named metrics and failed bounds for one artifact."""

    artifact: str
    metrics: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def at_least(self, name: str, value: float, bound: float) -> None:
        self.metrics[name] = round(float(value), 6)
        if not value >= bound:  # also catches NaN
            self.failures.append(f"{name} = {value:.6f}, needs >= {bound}")

    def at_most(self, name: str, value: float, bound: float) -> None:
        self.metrics[name] = round(float(value), 6)
        if not value <= bound:  # also catches NaN
            self.failures.append(f"{name} = {value:.6f}, needs <= {bound}")

    def raise_if_failed(self) -> None:
        if self.failures:
            raise ValidationError(self.artifact, self.failures)


def embedding_checks(artifact: str, reference: np.ndarray, candidate: np.ndarray, *, min_cos: float,
                     mean_cos: float | None = None, recall_k: int | None = None,
                     min_recall: float | None = None, recall_reference: np.ndarray | None = None) -> Checks:
    checks = Checks(artifact)
    if reference.shape != candidate.shape:
        checks.failures.append(f"shape {candidate.shape} != reference {reference.shape}")
        return checks
    cos = cosine_rows(reference, candidate)
    checks.at_least("cosine_min", cos.min(), min_cos)
    if mean_cos is not None:
        checks.at_least("cosine_mean", cos.mean(), mean_cos)
    else:
        checks.metrics["cosine_mean"] = round(float(cos.mean()), 6)
    checks.metrics["max_abs_diff"] = float(np.abs(reference - candidate).max())
    if recall_k:
        base = reference if recall_reference is None else recall_reference
        checks.at_least(f"recall@{recall_k}", neighbour_recall(base, candidate, recall_k), min_recall or 0.0)
    checks.metrics["sentences"] = len(reference)
    return checks


def compare(checks: Checks, output: str, expected: np.ndarray, got: np.ndarray, tolerance: dict, where: str) -> None:
    """One output against the framework's: rows' cosine >= ``cosine_min`` (embeddings), or element-wise
    ``|got - expected| <= atol + rtol * |expected|``; strings and booleans must be equal. Records the worst
    difference in ``checks.metrics`` and every violation in ``checks.failures``."""
    if expected.shape != got.shape:
        checks.failures.append(f"{where} {output}: shape {list(got.shape)} != framework {list(expected.shape)}")
        return
    if expected.dtype.kind in "OSUb":
        if not np.array_equal(expected, got):
            checks.failures.append(f"{where} {output}: values differ from the framework's")
        return
    if "cosine_min" in tolerance:
        worst = float(cosine_rows(expected.reshape(len(expected), -1), got.reshape(len(got), -1)).min())
        key = f"{output}.cosine_min"
        checks.metrics[key] = min(checks.metrics.get(key, 1.0), round(worst, 6))
        if not worst >= tolerance["cosine_min"]:
            checks.failures.append(f"{where} {output}: cosine {worst:.6f} < {tolerance['cosine_min']}")
        return
    diff = np.abs(got.astype(np.float64) - expected)
    worst = float(diff.max()) if diff.size else 0.0
    key = f"{output}.max_abs_diff"
    checks.metrics[key] = max(checks.metrics.get(key, 0.0), round(worst, 9))
    bad = int((diff > tolerance["atol"] + tolerance["rtol"] * np.abs(expected)).sum())
    if bad or not np.isfinite(got).all():
        checks.failures.append(f"{where} {output}: {bad} of {diff.size} values outside atol {tolerance['atol']} + "
                               f"rtol {tolerance['rtol']} (max |diff| {worst:.3g})")


def save_reference(path: Path, requests: list[dict], answers: list[dict], tolerance: dict) -> None:
    """Requests and the framework model's answers to them, with the tolerance to compare within (``atol`` and
    ``rtol``, or ``cosine_min`` for embeddings). Exporters write it into the model's version folder."""
    arrays = {"__tolerance__": np.array(json.dumps(tolerance))}
    for i, (request, answer) in enumerate(zip(requests, answers)):
        arrays |= {f"{i}/in/{k}": (v.astype(np.bytes_) if v.dtype == object else v) for k, v in request.items()}
        arrays |= {f"{i}/out/{k}": v for k, v in answer.items()}
    np.savez(path, **arrays)


def load_reference(path: Path) -> tuple[dict, list[tuple[dict, dict]]]:
    """(tolerance, [(inputs, expected outputs)]) from a reference.npz."""
    with np.load(path, allow_pickle=False) as data:
        tolerance = json.loads(str(data["__tolerance__"]))
        pairs: dict[int, tuple[dict, dict]] = {}
        for key in data.files:
            if key == "__tolerance__":
                continue
            index, side, name = key.split("/", 2)
            array = data[key]
            pairs.setdefault(int(index), ({}, {}))[0 if side == "in" else 1][name] = (
                array.astype(np.object_) if array.dtype.kind == "S" else array)
    return tolerance, [pairs[i] for i in sorted(pairs)]
