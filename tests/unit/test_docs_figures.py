"""The headline figures of the docs' results tables are the figures in the committed JSON each table cites, and a
page that cites a JSON recorded from a modified tree (its commit ends in ``-dirty``) says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REFERENCE = "perf/reference/"


def _row(rows: list[dict], **match) -> dict:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def _ner(model: str, agg: str, part: str):
    return lambda d: _row(d["rows"], model=model, aggregation=agg)[part]["f1"]


def _pipeline_mean(rows: list[dict], model: str) -> float:
    return sum(r[f"{model} pipeline ndcg@10"] - r["ndcg@10"] for r in rows) / len(rows)


# (JSON, value in it, how the docs write it): each written so in a page that cites that JSON
FIGURES = [
    ("ner-eval-cpu-2core.json", _ner("ner", "viterbi", "cased"), "{:.4f}"),
    ("ner-eval-cpu-2core.json", _ner("ner_int8", "viterbi", "cased"), "{:.4f}"),
    ("ner-eval-cpu-2core.json", _ner("ner", "viterbi", "queries"), "{:.4f}"),
    ("ner-eval-cpu-2core.json", _ner("ner_int8", "viterbi", "queries"), "{:.4f}"),
    ("ner-eval-cpu-2core.json", _ner("ner", "first", "queries"), "{:.4f}"),
    ("ner-eval-valid-cpu-2core.json", _ner("ner", "viterbi", "cased"), "{:.4f}"),
    ("ner-eval-valid-cpu-2core.json", _ner("ner", "viterbi", "queries"), "{:.4f}"),
    ("ner-eval-seed13-cpu-2core.json", _ner("ner", "viterbi", "cased"), "{:.4f}"),
    ("ner-eval-seed13-cpu-2core.json", _ner("ner", "viterbi", "queries"), "{:.4f}"),
    ("ner-eval-seed13-cpu-2core.json", _ner("ner", "first", "queries"), "{:.4f}"),
    ("ner-eval-seed13-valid-cpu-2core.json", _ner("ner", "viterbi", "cased"), "{:.4f}"),
    ("ner-eval-seed13-valid-cpu-2core.json", _ner("ner", "viterbi", "queries"), "{:.4f}"),
    ("ner-priors-valid-cpu-2core.json", lambda d: _row(d["rows"], set="conll")["case_prior"], "{:.4f}"),
    ("ner-priors-valid-cpu-2core.json", lambda d: _row(d["rows"], set="queries")["case_prior"], "{:.4f}"),
    ("ner-priors-valid-cpu-2core.json", lambda d: _row(d["rows"], set="queries")["bigram_weight"]["0.5"], "{:.4f}"),
    ("ner-priors-valid-cpu-2core.json",
     lambda d: _row(d["rows"], set="queries")["by_query_style"]["other"]["case_prior"], "{:.4f}"),
    ("ner-eval-qs4x5-valid-cpu-2core.json", _ner("ner", "viterbi", "cased"), "{:.4f}"),
    ("ner-eval-qs4x5-valid-cpu-2core.json", _ner("ner", "viterbi", "queries"), "{:.4f}"),
    ("ner-eval-qs4x5-cpu-2core.json", _ner("ner", "viterbi", "cased"), "{:.4f}"),
    ("ner-eval-qs4x5-cpu-2core.json", _ner("ner", "viterbi", "queries"), "{:.4f}"),
    ("ner-cpu-2core.json", lambda d: d["speedup_vs_baseline"]["ner_int8|c8"], "{:.2f}x"),
    ("ner-cpu-2core.json", lambda d: d["medians"]["ner_int8|c8|p95_ms"], "p95 {:.1f} ms"),
    ("ner-cpu-2core.json", lambda d: d["medians"]["hf_pipeline|c8|p95_ms"], "p95 {:.1f} ms"),
    ("embeddings-cpu-2core.json", lambda d: d["speedup_vs_baseline"]["sbert_int8|query|c16"], "({:.2f}x)"),
    ("embeddings-cpu-2core.json", lambda d: d["speedup_vs_baseline"]["sbert_int8|batch|c16"], "({:.2f}x)"),
    ("embeddings-cpu-2core.json", lambda d: d["medians"]["baseline|batch|sentences_per_s"], "**{:.0f} sentences/s**"),
    ("search-eval-cpu-2core.json", lambda d: d["results"]["hybrid rrf"]["ndcg@10"], "{:.4f}"),
    ("search-eval-cpu-2core.json", lambda d: d["results"]["hybrid rrf + rerank top 20, rank prior 2"]["ndcg@10"],
     "{:.4f}"),
    ("search-eval-cpu-2core.json",
     lambda d: d["results"]["hybrid rrf + rerank_int8 top 20, rank prior 2"]["ndcg@10"], "{:.4f}"),
    ("search-eval-cpu-2core.json", lambda d: _pipeline_mean(d["shapes"]["rows"], "rerank"), "mean {:+.3f}, 2 below"),
    ("search-shapes-valid-pipeline-cpu-2core.json", lambda d: _pipeline_mean(d["shapes"]["rows"], "rerank_int8"),
     "gains {:+.3f} on average"),
    ("shots-cpu-2core.json", lambda d: _row(d["files"], file="test.mp4")["speedup_int8_vs_cli"], "**{:.2f}**"),
    ("shots-cpu-2core.json", lambda d: _row(d["files"], file="bbb-1080p-60s.mp4")["speedup_int8_vs_cli"],
     "**{:.2f}**"),
    ("shots-memory-cpu-2core.json", lambda d: _row(d["memory"], seconds=240, sent_as="one request")[
        "video_shots_peak_rss_mb"], "{:.0f} MB |"),
    ("shots-eval-cpu-2core.json", lambda d: min(r["f1"] for r in d["rows"]), "{:.3f} (1.000 / 1.000)"),
    ("shots-eval-same-source-cpu-2core.json", lambda d: max(r["f1"] for r in d["rows"]), "F1 {:.3f}"),
    ("soak-cpu-2core.json", lambda d: d["requests"], "{:,} client"),
    ("soak-cpu-2core.json", lambda d: d["errors_unexpected"], "**{} unexpected errors**"),
    ("batch-invariance-cpu-2core.json", lambda d: _row(d["rows"], model="ner_int8")["changed"],
     "| `ner_int8` | 27 / 200 (entity scores; no entity flipped) | 0.0167 | {} / 200 |"),
    ("batch-invariance-before-cpu-2core.json", lambda d: _row(d["rows"], model="rerank_int8")["changed"],
     "| `rerank_int8` | {} / 200 |"),
]


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _citing(name: str) -> list[Path]:
    return [page for page in PAGES if REFERENCE + name in _text(page)]


def _commit(data) -> str | None:
    if isinstance(data, dict):
        if isinstance(data.get("commit"), str):
            return data["commit"]
        return next((c for v in data.values() if (c := _commit(v))), None)
    return None


def test_headline_figures_are_those_of_the_json_they_cite():
    problems = []
    for name, value, written in FIGURES:
        text = written.format(value(json.loads((ROOT / REFERENCE / name).read_text(encoding="utf-8"))))
        pages = _citing(name)
        if not any(text in _text(page) for page in pages):
            where = ", ".join(str(p.relative_to(ROOT)) for p in pages) or "no page cites it"
            problems.append(f"{name}: {text!r} is in none of the pages citing it ({where})")
    assert not problems, "figures that differ from their JSON:\n" + "\n".join(problems)


def test_a_json_from_a_modified_tree_is_cited_as_such():
    problems = []
    for path in sorted((ROOT / REFERENCE).glob("*.json")):
        commit = _commit(json.loads(path.read_text(encoding="utf-8"))) or ""
        for page in _citing(path.name) if commit.endswith("-dirty") else []:
            if not re.search(r"modified tree|-dirty", _text(page)):
                problems.append(f"{page.relative_to(ROOT)} cites {path.name} ({commit}) without saying so")
    assert not problems, "\n".join(problems)


def test_every_figure_check_can_fail():
    name, value, written = FIGURES[0]
    data = json.loads((ROOT / REFERENCE / name).read_text(encoding="utf-8"))
    assert written.format(value(data)) != written.format(value(data) + 0.0001)
    assert _commit({"provenance": {"commit": "abc-dirty"}}) == "abc-dirty" and _commit({"x": 1}) is None
