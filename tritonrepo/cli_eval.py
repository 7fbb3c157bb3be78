"""`tritonrepo eval`: accuracy of the served models."""

from __future__ import annotations

import json
from typing import Optional

import typer

from . import paths
from .cli_app import URL_OPT, console as _console
from .errors import TritonRepoError


def evaluate(model: str = typer.Argument("ner", help="What to evaluate: ner, shots or search."),
             url: Optional[str] = URL_OPT,
             aggregation: str = typer.Option("simple,first,viterbi", help="ner: aggregation strategies of the "
                                             "served decoder, comma-separated (simple, first, average, max, "
                                             "viterbi)."),
             split: str = typer.Option("test", help="ner: CoNLL-2003 split scored (valid: where decoding choices "
                                       "are made)."),
             joins: int = typer.Option(60, help="shots: transitions in the spliced test videos."),
             same_source_cuts: bool = typer.Option(False, help="shots: let consecutive segments come from the same "
                                                   "source video (harder cuts)."),
             rerank_depth: int = typer.Option(20, help="search: hybrid candidates reranked per query."),
             shape_rerankers: str = typer.Option("rerank,rerank_int8", help="search: served rerankers scored per "
                                                 "passage x query shape, comma-separated."),
             shape_queries: int = typer.Option(100, help="search: queries per passage x query shape (0: skip the "
                                               "shapes)."),
             shape_split: str = typer.Option("test", help="search: CoNLL-2003 split the shaped queries come from "
                                             "(valid: where the rank prior is chosen)."),
             rank_priors: str = typer.Option("", help="search: rank prior weights scored per shape besides the "
                                             "reranker alone, comma-separated (default: the search pipeline's).")):
    """Accuracy of the served models. ner: CoNLL-2003 entity F1 (fp32, int8; test split unless --split). shots:
    hard-cut F1 (+-2 frames) on real footage spliced at known frames, H.264 and VP9, fp32 and int8, each decoder.
    search: nDCG@10, MRR@10, recall@100 of BM25, dense, hybrid and hybrid + rerank (fp32, int8) on held-out Reuters
    headlines -> articles, with per-query latency per stage; JSON in perf/results/."""
    from .server import served

    for option, value in (("--split", split), ("--shape-split", shape_split)):
        if value not in ("valid", "test"):
            raise typer.BadParameter(f"{value!r} is not a held-out CoNLL-2003 split: valid or test", param_hint=option)
    from .export.families import FAMILIES, with_dependencies

    loads: dict[str, tuple[str, ...]] = {}  # each evaluation's models: what its families serve
    for family in FAMILIES.values():
        if family.evaluation:
            loads[family.evaluation] = loads.get(family.evaluation, ()) + family.serves
    runs = {"ner": lambda: _eval_ner(aggregation, split), "shots": lambda: _eval_shots(joins, same_source_cuts),
            "search": lambda: _eval_search(rerank_depth, shape_queries, shape_rerankers, shape_split, rank_priors)}
    if model not in loads or model not in runs:  # a family may name an evaluation this command does not have
        raise TritonRepoError(f"unknown model family {model!r}; known: {', '.join(e for e in loads if e in runs)}")
    run = runs[model]()
    with served(url, with_dependencies(loads[model])) as address:
        results = run(address)
    typer.echo(json.dumps(results, indent=2))


def _eval_ner(aggregation: str, split: str):
    from rich.table import Table

    from .ner_eval import served_f1
    from .perf.provenance import provenance, write_result

    strategies = [a.strip() for a in aggregation.split(",") if a.strip()]

    def run(url: str) -> dict:
        rows = [served_f1(url, m, split=split, aggregation=a) for a in strategies for m in ("ner", "ner_int8")]
        table = Table(title=f"Served NER, CoNLL-2003 {split} split as written, lowercased and cut into query "
                            "shapes, entity F1 (seqeval)")
        for col in ("model", "aggregation", "F1", "precision", "recall", "F1 lowercased", "F1 query-shaped",
                    "precision / recall query-shaped", "sentences / queries", "seconds"):
            table.add_column(col, justify="left" if col in ("model", "aggregation") else "right")
        for r in rows:
            c, low, q = r["cased"], r["lowercased"], r["queries"]
            table.add_row(r["model"], r["aggregation"], f"{c['f1']:.4f}", f"{c['precision']:.4f}",
                          f"{c['recall']:.4f}", f"{low['f1']:.4f}", f"{q['f1']:.4f}",
                          f"{q['precision']:.4f} / {q['recall']:.4f}", f"{c['sentences']} / {q['sentences']}",
                          f"{c['seconds'] + low['seconds'] + q['seconds']:.0f}")
        kinds = ("correct", "wrong type", "wrong boundary", "missed", "spurious")
        errors = Table(title=f"Query-shaped {split} split: gold entities by outcome, and spurious served entities")
        for col in ("model", "aggregation", *kinds):
            errors.add_column(col, justify="left" if col in ("model", "aggregation") else "right")
        for r in rows:
            errors.add_row(r["model"], r["aggregation"], *(str(r["queries"]["errors"]["counts"].get(k, 0))
                                                           for k in kinds))
        _console().print(table)
        _console().print(errors)
        return write_result({"rows": rows, **provenance()}, "ner-eval")
    return run


def _eval_search(rerank_depth: int, shape_queries: int, shape_rerankers: str, shape_split: str, rank_priors: str):
    from rich.table import Table

    from .perf.provenance import provenance, write_result
    from .search_eval import evaluate as evaluate_search
    from .search_eval import evaluate_shapes

    if shape_split not in ("test", "valid"):
        raise TritonRepoError(f"--shape-split {shape_split!r}: test or valid")

    def run(url: str) -> dict:
        result = evaluate_search(url, rerank_depth=rerank_depth) | provenance("faiss-cpu", "bm25s")
        if shape_queries:
            rerankers = tuple(m.strip() for m in shape_rerankers.split(",") if m.strip())
            try:
                priors = tuple(float(w) for w in rank_priors.split(",") if w.strip()) or None
            except ValueError:
                raise TritonRepoError(f"--rank-priors {rank_priors!r}: comma-separated numbers, e.g. 0,1,2") from None
            result["shapes"] = evaluate_shapes(url, rerank_depth=rerank_depth, limit=shape_queries,
                                               rerankers=rerankers, split=shape_split, priors=priors)
        table = Table(title=f"{result['task']}: {result['queries']} queries, {result['documents']} documents")
        for col in ("method", "nDCG@10", "MRR@10", "recall@100"):
            table.add_column(col, justify="left" if col == "method" else "right")
        for name, r in result["results"].items():
            table.add_row(name, f"{r['ndcg@10']:.4f}", f"{r['mrr@10']:.4f}", f"{r['recall@100']:.4f}")
        latency = Table(title="Per-query latency by stage (one query at a time, client side)")
        for col in ("stage", "p50 ms", "p95 ms"):
            latency.add_column(col, justify="left" if col == "stage" else "right")
        for stage, p in result["latency"].items():
            latency.add_row(stage, f"{p['p50_ms']:.1f}", f"{p['p95_ms']:.1f}")
        console = _console()
        console.print(table)
        console.print(latency)
        if shape_queries:
            shapes = Table(title=f"nDCG@10 per passage and query shape: {result['shapes']['task']}; each stage's top "
                                 f"{rerank_depth} reranked")
            models = [k for k in result["shapes"]["rows"][0] if k.endswith(" ndcg@10")]
            for col in ("passages", "queries", "stage", "nDCG@10", *models):
                shapes.add_column(col, justify="left" if col in ("passages", "queries", "stage") else "right")
            for r in result["shapes"]["rows"]:
                shapes.add_row(r["passages"], r["queries"], r["stage"], f"{r['ndcg@10']:.4f}",
                               *(f"{r[m]:.4f} ({r[m] - r['ndcg@10']:+.4f})" for m in models))
            deltas = {m: [r[m] - r["ndcg@10"] for r in result["shapes"]["rows"]] for m in models}
            shapes.add_row("all rows", "", "mean change, rows below the stage", "",
                           *(f"{sum(d) / len(d):+.4f}, {sum(x < 0 for x in d)}" for d in deltas.values()))
            console.print(shapes)
        return write_result(result, "search-eval")
    return run


def _eval_shots(joins: int, same_source_cuts: bool):
    from rich.table import Table

    from . import shots_eval
    from .perf.provenance import provenance, write_result

    def run(url: str) -> dict:
        videos = shots_eval.build(paths.RUNS / "spliced", joins=joins, same_source_cuts=same_source_cuts)
        rows = []
        for v in videos:
            decoders = (None, "ffmpeg") if v.codec == "vp9" else (None,)  # vp9: DALI (auto) and FFmpeg side by side
            rows += shots_eval.served_f1(url, [v], decoders=decoders)
        table = Table(title=f"Served video_shots, hard-cut F1 (+-{shots_eval.TOLERANCE} frames), spliced real footage, "
                            f"{joins} joins ({videos[0].frames} frames, {len(videos[0].cuts)} cuts)")
        for col in ("codec", "decoder", "shot model", "F1", "precision", "recall", "frames/s"):
            table.add_column(col)
        for r in rows:
            decoder = r["decoder"] if r["decoder"] != "auto" else ("dali" if r["codec"] == "vp9" else "ffmpeg")
            table.add_row(r["codec"], decoder, r["shot_model"], f"{r['f1']:.4f}", f"{r['precision']:.4f}",
                          f"{r['recall']:.4f}", f"{r['frames'] / r['seconds']:.0f}")
        _console().print(table)
        return write_result({"joins": joins, "same_source_cuts": same_source_cuts, "frames": videos[0].frames,
                             "cuts": len(videos[0].cuts), "tolerance": shots_eval.TOLERANCE, "rows": rows,
                             **provenance()}, "shots-eval")
    return run
