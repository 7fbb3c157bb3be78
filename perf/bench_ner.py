"""Benchmark: served NER (fp32, int8) over gRPC vs the Hugging Face pipeline in-process, single short queries.

Queries: ``tritonrepo.datasets.short_queries``, CoNLL-2003 test sentences of 3-10 words (Reuters headlines and
snippets), every other one lowercased as typed search queries are. One query per request at concurrency 1, 8 and 32:
  baseline  ``pipeline("token-classification")`` with the served default aggregation on the same trained weights,
            called by `concurrency` threads of one process (the usual Python web-worker shape), torch on `threads`
            threads;
  served    perf_analyzer (C++, gRPC) against the ``ner`` / ``ner_int8`` ensembles.
Client-side queries/s, p50 and p95. For each served run, Triton's own statistics of every step (queue, compute
input/infer/output, average batch) say where the time goes; what the steps do not account for is gRPC, the ensemble
scheduler and the hand-offs between steps. Accuracy (test-split entity F1 of the exported graphs) is reported beside.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tritonrepo.datasets import short_queries
from tritonrepo.export.families import with_dependencies
from tritonrepo.export.ner import NER_AGGREGATION
from tritonrepo.server import served

from . import perf_analyzer
from .provenance import provenance, write_result

log = logging.getLogger(__name__)
STEPS = ("ner_tokenizer", "{encoder}", "ner_decoder")
# The pipeline has no ``viterbi``: it labels words as the served default does (first token) without the IOB2 pass.
BASELINE_AGGREGATION = "first"


def hf_baseline(model_dir: Path, queries: list[str], *, concurrency: int, duration_s: float, threads: int) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import pipeline

    torch.set_num_threads(threads)
    ner = pipeline("token-classification", model=str(model_dir), aggregation_strategy=BASELINE_AGGREGATION,
                   device="cpu")
    for q in queries[:20]:
        ner(q)  # warm-up
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s

    def worker(offset: int):
        i, mine = offset, []
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            ner(queries[i % len(queries)])
            mine.append((time.perf_counter() - t) * 1000)
            i += concurrency
        with lock:
            latencies.extend(mine)

    start = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    return {"queries_per_s": len(latencies) / elapsed, "p50_ms": float(np.percentile(latencies, 50)),
            "p95_ms": float(np.percentile(latencies, 95))}


def _stats(client, model: str) -> dict:
    s = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    inf = s["inference_stats"]
    ns = lambda key: int(inf.get(key, {}).get("ns", 0))  # noqa: E731
    return {"requests": int(inf.get("success", {}).get("count", 0)), "executions": int(s.get("execution_count", 0)),
            "queue": ns("queue"), "input": ns("compute_input"), "infer": ns("compute_infer"),
            "output": ns("compute_output")}


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds so far of the server's processes, by role, and of the whole machine."""
    import psutil

    out = {"machine": sum(psutil.cpu_times()[:3])}  # user + nice + system
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if p.info["name"] == "tritonserver":
                key = "tritonserver"
            elif cmd and cmd[0].endswith("triton_python_backend_stub"):
                key = Path(cmd[1]).parent.parent.name  # .../<model>/1/model.py
            else:
                continue
            t = p.cpu_times()
            out[key] = out.get(key, 0.0) + t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            continue
    return out


def cpu_per_query(before: dict, after: dict, queries: int) -> dict:
    """CPU milliseconds per query by role; `other` is everything else on the machine (perf_analyzer, mostly)."""
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    machine = used.pop("machine")
    used["other (load generator, OS)"] = machine - sum(used.values())
    return {k: round(v * 1000 / max(queries, 1), 3) for k, v in used.items()}


def step_profile(before: dict, after: dict) -> dict:
    """Per-request milliseconds in each step between two statistics snapshots, and the average batch."""
    out = {}
    for model in after:
        d = {k: after[model][k] - before[model][k] for k in after[model]}
        n = max(d["requests"], 1)
        out[model] = {"requests": d["requests"], "avg_batch": round(d["requests"] / max(d["executions"], 1), 2),
                      **{f"{k}_ms": round(d[k] / n / 1e6, 3) for k in ("queue", "input", "infer", "output")}}
    return out


def run(*, queries: int = 1000, concurrencies=(1, 8, 32), models=("ner", "ner_int8"), reps: int = 2,
        threads: int = 2, baseline_s: float = 8.0, measurement_ms: int = 3000, url: str | None = None,
        model_dir: Path | None = None, out: Path | None = None) -> dict:
    import tritonclient.grpc as grpcclient

    from tritonrepo.export.ner import NerExport

    cfg = NerExport()
    model_dir = model_dir or cfg.training.out_dir
    texts = short_queries(queries)
    origin = provenance("torch", "transformers", "onnxruntime")
    samples: dict[str, list[float]] = {}
    profiles: dict[str, list[dict]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    with served(url, with_dependencies(models)) as url:
        client = grpcclient.InferenceServerClient(url)
        with tempfile.TemporaryDirectory() as tmp:
            data = perf_analyzer.write_input_data(Path(tmp) / "queries.json", "QUERY", texts)
            for rep in range(reps):
                for c in concurrencies:
                    base = hf_baseline(model_dir, texts, concurrency=c, duration_s=baseline_s, threads=threads)
                    for k, v in base.items():
                        add(f"hf_pipeline|c{c}|{k}", v)
                    log.info("rep %d HF pipeline c=%d: %.0f q/s p95 %.1f ms", rep + 1, c, base["queries_per_s"],
                             base["p95_ms"])
                    for model in models:
                        steps = [s.format(encoder=model.replace("ner", "ner_encoder")) for s in STEPS]
                        before, cpu_before = {s: _stats(client, s) for s in steps}, cpu_snapshot()
                        row = perf_analyzer.run(model, url, data, concurrency=c, measurement_ms=measurement_ms)
                        cpu_after, after = cpu_snapshot(), {s: _stats(client, s) for s in steps}
                        answered = after[steps[0]]["requests"] - before[steps[0]]["requests"]
                        profiles.setdefault(f"{model}|c{c}", []).append(
                            {"steps": step_profile(before, after),
                             "cpu_ms_per_query": cpu_per_query(cpu_before, cpu_after, answered)})
                        add(f"{model}|c{c}|queries_per_s", row.infer_per_s)
                        add(f"{model}|c{c}|p50_ms", row.p50_ms)
                        add(f"{model}|c{c}|p95_ms", row.p95_ms)
                        # perf_analyzer 2.50's CSV has no average: Little's law for a closed loop of c clients
                        add(f"{model}|c{c}|avg_ms", row.avg_ms or 1000.0 * c / row.infer_per_s)
                        add(f"{model}|c{c}|unstable", float(not row.stable))
                        log.info("rep %d %s c=%d: %.0f q/s p95 %.1f ms", rep + 1, model, c, row.infer_per_s,
                                 row.p95_ms)
        client.close()

    medians = {k: statistics.median(v) for k, v in samples.items()}
    validation_path = cfg.out_dir / "validation.json"
    validation = json.loads(validation_path.read_text()) if validation_path.exists() else {}
    result = {
        "benchmark": "ner_short_queries",
        "provenance": origin,
        "setup": {"queries": len(texts), "data": "CoNLL-2003 test sentences of 3-10 words, every other lowercased",
                  "reps": reps, "baseline_threads": threads,
                  "baseline": f"HF pipeline, aggregation {BASELINE_AGGREGATION}, one query per call from `concurrency` "
                  "threads", "served_load": "perf_analyzer gRPC, 1 query/request",
                  "served_aggregation": NER_AGGREGATION,
                  "model_dir": str(model_dir)},
        "medians": medians,
        "samples": samples,
        "step_profiles": profiles,  # last repetition is the most warmed-up
        "speedup_vs_baseline": {f"{m}|c{c}": medians[f"{m}|c{c}|queries_per_s"] /
                                medians[f"hf_pipeline|c{c}|queries_per_s"] for m in models for c in concurrencies},
        "accuracy": {k: validation.get(k) for k in ("fp32", "int8", "training")},
    }
    return write_result(result, "ner", out)


def table(result: dict):
    from rich.table import Table

    m = result["medians"]
    t = Table(title="NER, one short query per request: client queries/s and latency (medians of "
                    f"{result['setup']['reps']} reps)")
    for col in ("path", "concurrency", "queries/s", "p50 ms", "p95 ms", "vs HF pipeline"):
        t.add_column(col, justify="left" if col == "path" else "right")
    concurrencies = sorted({int(k.split("|")[1][1:]) for k in m if k.startswith("hf_pipeline")})
    for c in concurrencies:
        for path in ("hf_pipeline", *sorted({k.split("|")[0] for k in m if not k.startswith("hf_pipeline")})):
            key = f"{path}|c{c}"
            qps = m[f"{key}|queries_per_s"]
            speed = "1.00x" if path == "hf_pipeline" else f"{result['speedup_vs_baseline'][key]:.2f}x"
            t.add_row(path, str(c), f"{qps:.0f}", f"{m[f'{key}|p50_ms']:.1f}", f"{m[f'{key}|p95_ms']:.1f}", speed)
    return t


def profile_table(result: dict, key: str):
    from rich.table import Table

    prof = result["step_profiles"][key][-1]
    model, c = key.split("|")
    t = Table(title=f"Where the time goes: {model} at concurrency {c[1:]} (last rep). Triton statistics, ms per "
                    "request; CPU ms per query by process")
    for col in ("step / process", "avg batch", "queue", "compute input", "compute infer", "compute output", "CPU"):
        t.add_column(col, justify="left" if col == "step / process" else "right")
    cpu = dict(prof["cpu_ms_per_query"])
    for step, p in prof["steps"].items():
        t.add_row(step, f"{p['avg_batch']:.1f}", *(f"{p[k]:.2f}" for k in ("queue_ms", "input_ms", "infer_ms",
                                                                             "output_ms")), f"{cpu.pop(step, 0):.2f}")
    for rest, ms in cpu.items():
        t.add_row(rest, "", "", "", "", "", f"{ms:.2f}")
    t.add_row("client latency (average)", "", f"{result['medians'][f'{key}|avg_ms']:.2f}", "", "", "", "")
    return t
