"""Observability: the ingestion client's Prometheus metrics, a per-model summary of Triton's /metrics, and one
request's path through Triton's trace file."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from tritonrepo.errors import ServerUnavailableError


class IngestMetrics:
    """The pipeline's metrics in their own registry (serve them with ``serve`` or write them with
    ``prometheus_client.write_to_textfile``)."""

    def __init__(self, registry: CollectorRegistry | None = None, keep_samples: bool = False):
        self.registry = registry or CollectorRegistry()
        # (unix time, model, seconds, outcome) of every call when asked (soak tests: p95 per time window)
        self.samples: list[tuple[float, str, float, str]] | None = [] if keep_samples else None
        r = self.registry
        self.requests = Counter("ingest_requests", "Triton requests by model and outcome (ok or gRPC status)",
                                ["model", "outcome"], registry=r)
        self.retries = Counter("ingest_retries", "Requests retried after a retriable error", ["model", "status"],
                               registry=r)
        self.latency = Histogram("ingest_request_seconds", "Latency of successful Triton requests", ["model"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300),
                                 registry=r)
        self.computed = Counter("ingest_computed", "Results computed by a model (not from the cache)", ["task"],
                                registry=r)
        self.dedup = Counter("ingest_dedup_hits", "Results reused: from the store (earlier runs or assets) or from "
                             "an identical asset in flight", ["task", "source"], registry=r)
        self.assets = Counter("ingest_assets", "Assets finished by status (done, dead, failed)", ["status"],
                              registry=r)
        self.captions = Counter("ingest_caption_requests", "Caption provider requests by outcome (ok, HTTP status, "
                                "timeout, connection, malformed)", ["outcome"], registry=r)
        self.caption_tokens = Counter("ingest_caption_tokens", "Tokens paid for captions", ["direction"], registry=r)
        self.caption_usd = Counter("ingest_caption_usd", "US$ paid for captions (provider price table)", registry=r)
        self.limit = Gauge("ingest_concurrency_limit", "Requests allowed in flight (adaptive: halves on overload)",
                           registry=r)

    def serve(self, port: int, host: str = "127.0.0.1"):
        """Serve the metrics for Prometheus at ``host:port`` (loopback unless another address is named: anyone who
        reaches the port reads them); returns the HTTP server (``server_address``, ``shutdown()``)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server

    def observe(self, model: str, seconds: float, outcome: str) -> None:
        self.requests.labels(model, outcome).inc()
        if outcome == "ok":
            self.latency.labels(model).observe(seconds)
        if self.samples is not None:
            self.samples.append((time.time(), model, seconds, outcome))

    def value(self, name: str, **labels) -> float:
        """Current value of a counter sample (summed over unspecified labels); 0 when never set."""
        total = 0.0
        for family in self.registry.collect():
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total


# ---- Triton's /metrics -----------------------------------------------------------------------------------------


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, dict[str, float]]:
    """metric name -> model -> value (summed over versions), for the nv_* per-model metrics of Triton's /metrics."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            text = r.read().decode()
    except OSError as e:
        raise ServerUnavailableError(f"cannot read Triton metrics at {url}: {e}") from e
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            model = s.labels.get("model")
            if model is not None and "quantile" not in s.labels:
                # the parser names counter samples NAME_total; keep Triton's names (as on /metrics)
                out[family.name if family.type in ("counter", "gauge") else s.name][model] += s.value
    return out


@dataclass(frozen=True)
class ModelLoad:
    """One model over a scrape interval (or since start)."""

    model: str
    requests: float  # successful requests
    failures: float
    inferences: float  # batch rows executed (cache hits excluded)
    executions: float  # model executions (batches)
    cache_hits: float
    queue_ms: float  # mean queue time per request
    compute_ms: float  # mean compute (infer) time per execution
    seconds: float  # interval length (0: since the server started)

    @property
    def avg_batch(self) -> float:
        return self.inferences / self.executions if self.executions else 0.0

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def summarize(url: str, interval_s: float = 0.0) -> list[ModelLoad]:
    """Per-model load from Triton's metrics: cumulative, or over ``interval_s`` seconds (two scrapes)."""
    first = scrape(url) if interval_s else None
    if interval_s:
        time.sleep(interval_s)
    last = scrape(url)

    def get(name: str, model: str) -> float:
        value = last.get(name, {}).get(model, 0.0)
        return value - (first.get(name, {}).get(model, 0.0) if first else 0.0)

    rows = []
    for model in sorted(last.get("nv_inference_request_success", {})):
        requests, execs = get("nv_inference_request_success", model), get("nv_inference_exec_count", model)
        rows.append(ModelLoad(
            model=model, requests=requests, failures=get("nv_inference_request_failure", model),
            inferences=get("nv_inference_count", model), executions=execs,
            cache_hits=get("nv_cache_num_hits_per_model", model),
            queue_ms=get("nv_inference_queue_duration_us", model) / 1000 / requests if requests else 0.0,
            compute_ms=get("nv_inference_compute_infer_duration_us", model) / 1000 / execs if execs else 0.0,
            seconds=interval_s))
    return rows


# ---- Triton's trace file (tritonrepo serve --trace-file) ---------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """One model's handling of a request: the ensemble and each of its steps are separate spans."""

    id: int
    model: str
    parent: int | None
    start_ns: int
    queue_us: float
    compute_us: float
    total_us: float
    cache_hit: bool  # the request ended without being computed (Triton's response cache answered)


def follow_trace(trace_file: str | Path, request_id: str) -> list[Span]:
    """Every span of the requests sent with ``request_id`` (the ingestion trace id), from the trace file and its
    numbered parts (``--trace-config log_frequency`` writes ``FILE.0``, ``FILE.1``, ...), in start order."""
    path = Path(trace_file)
    parts = [p for p in [path, *path.parent.glob(path.name + ".*")] if p.is_file()]
    meta: dict[int, dict] = {}
    stamps: dict[int, dict[str, int]] = defaultdict(dict)
    for part in parts:
        try:
            entries = json.loads(part.read_text() or "[]")
        except json.JSONDecodeError:
            continue  # a part still being written
        for e in entries:
            if "model_name" in e:
                meta[e["id"]] = e
            for t in e.get("timestamps", ()):
                stamps[e["id"]][t["name"]] = int(t["ns"])
    spans = []
    for i, m in meta.items():
        if m.get("request_id") != request_id:
            continue
        ts = stamps[i]
        start, end = ts.get("REQUEST_START", 0), ts.get("REQUEST_END", 0)
        composed = any(s.get("parent_id") == i for s in meta.values())  # an ensemble: its steps have the times
        queue = 0 if composed else ts.get("COMPUTE_START", end) - ts.get("QUEUE_START", start)
        compute = ts.get("COMPUTE_END", 0) - ts.get("COMPUTE_START", 0)
        spans.append(Span(i, m["model_name"], m.get("parent_id"), start, queue / 1e3, compute / 1e3,
                          (end - start) / 1e3, cache_hit="COMPUTE_START" not in ts and not composed))
    return sorted(spans, key=lambda s: s.start_ns)
