"""Soak: the ingestion pipeline against the real tritonserver for a bounded time, round after round.

Each round ingests the same real manifest (``tritonrepo.datasets.sample_manifest``: Reuters articles and headlines,
two packaged videos, duplicates and three bad assets) into a fresh store, so every (content, model) pair is computed
again; the server runs without its response cache for the same reason. Reported: requests served, errors (bad input,
expected: one corrupt video per round; anything else is unexpected, goal 0), client p95 per model in the first and
the last minute (drift), and the resident memory of the server with its Python-backend stubs at start and end.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from tritonrepo.datasets import sample_manifest
from tritonrepo.paths import MODEL_REPOSITORY
from tritonrepo.server import TritonServer
from tritonrepo.services.ingest import IngestConfig, ingest, read_manifest
from tritonrepo.services.metrics import IngestMetrics, summarize
from tritonrepo.services.store import SqliteStore
from tritonrepo.targets import Target

from .provenance import provenance, write_result

log = logging.getLogger(__name__)
MODELS = ["sbert_int8", "ner_int8", "video_shots", "transnetv2_int8"]


def server_rss_mb(server: TritonServer) -> float:
    """Resident memory of tritonserver and its child processes (the Python-backend stubs), MB."""
    root = psutil.Process(server.process.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1e6


def _window(samples: list, start: float, end: float) -> dict:
    """Requests, errors and client p95 per model among the samples in [start, end)."""
    out = {}
    for t, model, seconds, outcome in samples:
        if start <= t < end:
            row = out.setdefault(model, {"requests": 0, "errors": 0, "latencies": []})
            row["requests"] += 1
            if outcome == "ok":
                row["latencies"].append(seconds)
            else:
                row["errors"] += 1
    for row in out.values():
        lat = row.pop("latencies")
        row["p95_ms"] = round(float(np.percentile(lat, 95)) * 1e3, 1) if lat else None
    return out


def run(minutes: float = 10.0, documents: int = 100, captions: int = 200, concurrency: int = 8,
        out: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp, \
            TritonServer(MODEL_REPOSITORY, model_config_name=Target.CPU, explicit_models=MODELS) as server:
        manifest, n_assets = sample_manifest(Path(tmp) / "data", documents=documents, captions=captions)
        metrics = IngestMetrics(keep_samples=True)
        config = IngestConfig(url=server.grpc_url, concurrency=concurrency, roots=(manifest.parent,))
        rss_start = server_rss_mb(server)
        start = time.time()
        deadline = start + minutes * 60
        rounds, assets_done, failed = 0, 0, 0
        rss = [(0.0, round(rss_start))]
        logging.getLogger("tritonrepo.services.ingest").setLevel(logging.WARNING)  # no line per asset
        while time.time() < deadline:
            store = SqliteStore(Path(tmp) / f"round{rounds}.db")
            store.add(read_manifest(manifest))
            try:
                summary = asyncio.run(asyncio.wait_for(ingest(store, config, metrics=metrics),
                                                       deadline - time.time()))
            except TimeoutError:  # the time is up mid-round: what finished is counted
                break
            rounds += 1
            assets_done += summary.counts["done"]
            failed += summary.counts["pending"]
            rss.append((round(time.time() - start, 1), round(server_rss_mb(server))))
            log.info("round %d: %s in %.1f s, server rss %d MB", rounds, summary.counts, summary.seconds, rss[-1][1])
        end = time.time()
        rss_end = server_rss_mb(server)
        triton = [vars(r) for r in summarize(server.metrics_url)]
    samples = metrics.samples
    outcomes: dict[str, int] = {}
    for *_, outcome in samples:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    expected = outcomes.get("INVALID_ARGUMENT", 0)
    result = {
        "benchmark": "ingestion soak",
        "provenance": provenance("prometheus_client"),
        "minutes": round((end - start) / 60, 2), "manifest_assets": n_assets, "rounds": rounds,
        "assets_done": assets_done, "assets_left_pending": failed,
        "requests": len(samples), "outcomes": outcomes,
        "errors_expected_bad_input": expected,
        "errors_unexpected": len(samples) - outcomes.get("ok", 0) - expected,
        "retries": metrics.value("ingest_retries_total"),
        "first_minute": _window(samples, start, start + 60), "last_minute": _window(samples, end - 60, end),
        "server_rss_mb": {"start": round(rss_start), "end": round(rss_end), "per_round": rss},
        "triton": triton,
    }
    write_result(result, "soak", out)
    return result
