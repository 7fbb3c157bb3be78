"""Benchmark: served SBERT (fp32, int8) over gRPC vs sentence-transformers ``encode`` in-process.

Same real sentences (CoNLL-2003 test split, Reuters), same machine, run alternately (baseline, served, baseline,
served...) and reported as medians over repetitions. Two client shapes:
  query  one sentence per request (the search service), load from perf_analyzer at concurrency 1, 4, 16;
  batch  32 sentences per request (ingestion), load from the project's AsyncEmbeddingClient at the same concurrency.
Throughput is sentences/s; latency is client-side p95. The export's accuracy figures are reported beside them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from tritonrepo.clients import AsyncEmbeddingClient
from tritonrepo.datasets import conll_sentences
from tritonrepo.paths import ROOT, SBERT_WEIGHTS
from tritonrepo.server import served

from . import perf_analyzer
from .provenance import provenance, write_result

log = logging.getLogger(__name__)
BATCH_REQUEST = 32


def st_baseline(sentences: list[str], *, threads: int, batch_size: int = 32, queries: int = 200) -> dict:
    """sentence-transformers in-process: batch throughput and single-query p95 latency."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    st = _st_model(SentenceTransformer)
    st.encode(sentences[:64], batch_size=batch_size, show_progress_bar=False)  # warm-up
    t0 = time.perf_counter()
    st.encode(sentences, batch_size=batch_size, show_progress_bar=False)
    throughput = len(sentences) / (time.perf_counter() - t0)
    latencies = []
    for s in sentences[:queries]:
        t = time.perf_counter()
        st.encode([s], show_progress_bar=False)
        latencies.append((time.perf_counter() - t) * 1000)
    return {"sentences_per_s": throughput, "query_p95_ms": float(np.percentile(latencies, 95))}


_ST_CACHE: dict = {}


def _st_model(cls):
    if "model" not in _ST_CACHE:
        _ST_CACHE["model"] = cls(str(SBERT_WEIGHTS), device="cpu")
    return _ST_CACHE["model"]


async def _batch_load(url: str, model: str, sentences: list[str], concurrency: int, duration_s: float) -> dict:
    chunks = [sentences[i:i + BATCH_REQUEST] for i in range(0, len(sentences) - BATCH_REQUEST + 1, BATCH_REQUEST)]
    latencies: list[float] = []
    done = 0
    async with AsyncEmbeddingClient(url, model, max_in_flight=concurrency, timeout_s=60) as client:
        await client.embed(chunks[0])  # warm-up, fetches the model config

        async def worker(offset: int, stop_at: float):
            nonlocal done
            i = offset
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                await client.embed(chunks[i % len(chunks)])
                latencies.append((time.perf_counter() - t) * 1000)
                done += BATCH_REQUEST
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k, start + duration_s) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"sentences_per_s": done / elapsed, "p95_ms": float(np.percentile(latencies, 95))}


def run(*, sentences: int = 2000, reps: int = 2, concurrencies=(1, 4, 16), models=("sbert", "sbert_int8"),
        threads: int = 2, url: str | None = None, batch_duration_s: float = 8.0, out: Path | None = None) -> dict:
    texts = conll_sentences("test")[:sentences]
    origin = provenance("torch", "sentence-transformers", "transformers")  # taken before the run, not after
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    with served(url, None) as url, tempfile.TemporaryDirectory() as tmp:
        data = perf_analyzer.write_input_data(Path(tmp) / "sentences.json", "TEXT", texts)
        for rep in range(reps):
            log.info("repetition %d/%d: sentence-transformers baseline", rep + 1, reps)
            base = st_baseline(texts, threads=threads)
            add("baseline|batch|sentences_per_s", base["sentences_per_s"])
            add("baseline|query|p95_ms", base["query_p95_ms"])
            log.info("sentence-transformers: %.0f sentences/s (batch 32), single query p95 %.1f ms",
                     base["sentences_per_s"], base["query_p95_ms"])
            for model in models:
                for c in concurrencies:
                    row = perf_analyzer.run(model, url, data, concurrency=c)
                    add(f"{model}|query|c{c}|sentences_per_s", row.infer_per_s)
                    add(f"{model}|query|c{c}|p95_ms", row.p95_ms)
                    add(f"{model}|query|c{c}|server_queue_ms", row.server_queue_ms)
                    add(f"{model}|query|c{c}|server_compute_ms", row.server_compute_ms)
                    add(f"{model}|query|c{c}|unstable", float(not row.stable))
                    got = asyncio.run(_batch_load(url, model, texts, c, batch_duration_s))
                    add(f"{model}|batch|c{c}|sentences_per_s", got["sentences_per_s"])
                    add(f"{model}|batch|c{c}|p95_ms", got["p95_ms"])
                    log.info("%s c=%d: query %.0f/s p95 %.1f ms | batch %.0f/s p95 %.1f ms", model, c,
                             row.infer_per_s, row.p95_ms, got["sentences_per_s"], got["p95_ms"])

    medians = {k: statistics.median(v) for k, v in samples.items()}
    validation = json.loads((ROOT / ".assets/artifacts/sbert/validation.json").read_text())
    result = {
        "benchmark": "sbert_embeddings",
        "provenance": origin,
        "setup": {"sentences": len(texts), "data": "CoNLL-2003 test split, unique sentences", "reps": reps,
                  "threads": threads, "batch_request_size": BATCH_REQUEST, "baseline_batch_size": 32,
                  "query_load": "perf_analyzer gRPC, 1 sentence/request", "batch_load": "AsyncEmbeddingClient"},
        "medians": medians,
        "samples": samples,
        "accuracy": {"fp32": validation["fp32"], "int8": validation["int8"], "data": validation["data"]},
        "speedup_vs_baseline": {
            k.replace("|sentences_per_s", ""): v / medians["baseline|batch|sentences_per_s"]
            for k, v in medians.items() if k.endswith("sentences_per_s") and not k.startswith("baseline")
        },
    }
    return write_result(result, "embeddings", out)


def table(result: dict):
    """A rich Table of the medians."""
    from rich.table import Table

    m = result["medians"]
    base = m["baseline|batch|sentences_per_s"]
    t = Table(title=f"SBERT embeddings, {result['provenance']['machine']['cpu']} "
                    f"({result['setup']['threads']} threads), medians of {result['setup']['reps']} reps")
    for col in ("model", "client", "concurrency", "sentences/s", "x baseline", "p95 ms", "accuracy vs ST"):
        t.add_column(col, justify="right" if col not in ("model", "client", "accuracy vs ST") else "left")
    t.add_row("sentence-transformers", "in-process, batch 32", "-", f"{base:.0f}", "1.00",
              f"{m['baseline|query|p95_ms']:.1f} (1 query)", "reference")
    acc = result["accuracy"]
    def order(key):
        model, client, conc, _ = key.split("|")
        return model, client, int(conc[1:])

    for key in sorted((k for k in m if k.endswith("sentences_per_s") and not k.startswith("baseline")), key=order):
        model, client, conc, _ = key.split("|")
        a = acc["int8" if model.endswith("int8") else "fp32"]
        note = f"cos>={a['cosine_min']:.4f}" + (f" r@10 {a['recall@10']:.3f}" if "recall@10" in a else "")
        t.add_row(model, client, conc[1:], f"{m[key]:.0f}", f"{m[key] / base:.2f}",
                  f"{m[key.replace('sentences_per_s', 'p95_ms')]:.1f}", note)
    return t
