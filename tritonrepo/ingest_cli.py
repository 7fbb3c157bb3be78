"""`tritonrepo ingest ...`, `tritonrepo metrics`, `tritonrepo trace`: thin commands over services.ingest / metrics."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Optional

import typer

from . import paths
from .cli_app import App
from .errors import TritonRepoError

ingest_app = App(no_args_is_help=True, help="Resilient ingestion of assets through the served models.")

STORE_OPT = typer.Option(paths.RUNS / "ingest.db", "--store", help="SQLite store: ledger, results, dead letters.")
URL_OPT = typer.Option("127.0.0.1:8001", "--url", help="Triton gRPC address.")


def _json_logs(log_file: Path) -> None:
    """Structured JSON lines (with asset_id and trace_id) to ``log_file``; the console keeps the progress bar."""
    from .services.ingest import JsonFormatter

    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(JsonFormatter())
    for name in ("tritonrepo.services", "tritonrepo.clients"):  # the pipeline, and the clients' retries
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _Progress:
    """A rich progress bar fed by outcomes."""

    def __init__(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                            TimeRemainingColumn())
        self.task = self.bar.add_task("", total=total)
        self.counts = {"done": 0, "dead": 0, "pending": 0}

    def __call__(self, outcome) -> None:
        status = "done" if outcome.error is None else "dead" if outcome.permanent else "pending"
        self.counts[status] += 1
        self.bar.update(self.task, advance=1, description=" ".join(f"{k} {v}" for k, v in self.counts.items()))


def _config(url: str, concurrency: int, workers: int, embed_model: str, ner_model: str, shots_model: str,
            manifest: Path, allow_root: list[Path], allow_host: list[str], fetch_deadline: float, captions=None):
    from .services.ingest import IngestConfig

    roots = (manifest.resolve().parent, *(Path(r).resolve() for r in allow_root))
    return IngestConfig(url=url, concurrency=concurrency, assets_in_flight=workers, embed_model=embed_model,
                        ner_model=ner_model, shots_model=shots_model, captions=captions, roots=roots,
                        allow_hosts=tuple(allow_host), fetch_deadline_s=fetch_deadline)


def _captions(base_url: Optional[str], model: str, provider: str, key_env: str, rpm: float, tpm: float,
              concurrency: int):
    from .services.captions import CaptionConfig

    if not base_url:
        return None
    return CaptionConfig(base_url=base_url, model=model, provider=provider, api_key_env=key_env,
                         requests_per_minute=rpm, tokens_per_minute=tpm, concurrency=concurrency)


MODEL_OPTS = dict(
    embed_model=typer.Option("sbert_int8", help="Embedding model."),
    ner_model=typer.Option("ner_int8", help="NER model."),
    shots_model=typer.Option("video_shots", help="Shot-boundary model."),
)
ALLOW_ROOT_OPT = typer.Option([], "--allow-root", help="A folder (repeat) local paths may be read from besides the "
                              "manifest's own; anything else (.., absolute paths, symlinks out) is dead-lettered.")
ALLOW_HOST_OPT = typer.Option([], "--allow-host", help="A host name or IP (repeat) URLs may be fetched from although "
                              "it resolves to a loopback, private, link-local or other non-public address.")
FETCH_DEADLINE_OPT = typer.Option(300.0, help="Seconds a whole URL download may take, redirects included.")


def _summary(added: int, summary, store) -> None:
    from .services.fetch import redact

    typer.echo(f"{added} new assets, {summary.processed} processed in {summary.seconds:.1f} s; "
               f"ledger: {summary.counts}")
    for asset_id, source, error in store.dead_letters()[:20]:
        typer.echo(f"  dead: {asset_id} ({redact(source)}): {error}")


@ingest_app.command("run")
def ingest_run(manifest: Path = typer.Argument(..., help="JSON-lines manifest (services/ingest.py)."),
               store_path: Path = STORE_OPT, url: str = URL_OPT,
               concurrency: int = typer.Option(8, help="Triton requests in flight at most (adaptive below)."),
               workers: int = typer.Option(16, help="Assets processed at once."),
               embed_model: str = MODEL_OPTS["embed_model"], ner_model: str = MODEL_OPTS["ner_model"],
               shots_model: str = MODEL_OPTS["shots_model"],
               retry_dead: bool = typer.Option(False, help="Also retry dead-lettered assets."),
               allow_root: list[Path] = ALLOW_ROOT_OPT, allow_host: list[str] = ALLOW_HOST_OPT,
               fetch_deadline: float = FETCH_DEADLINE_OPT,
               metrics_port: int = typer.Option(0, help="Serve the client metrics for Prometheus on this port."),
               metrics_host: str = typer.Option("127.0.0.1", help="Address the metrics port binds (0.0.0.0: every "
                                                "interface, e.g. for a Prometheus container)."),
               metrics_file: Optional[Path] = typer.Option(None, help="Write the client metrics here at the end."),
               log_file: Path = typer.Option(paths.RUNS / "ingest.log.jsonl", help="JSON log lines, one per event."),
               caption_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL (e.g. "
                                                         "https://api.openai.com/v1): caption images and keyframes."),
               caption_model: str = typer.Option("gpt-4o-mini", help="Caption model."),
               caption_provider: str = typer.Option("openai", help="Provider name (price table, cache key)."),
               caption_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the key."),
               caption_rpm: float = typer.Option(500, help="Caption requests per minute at most."),
               caption_tpm: float = typer.Option(200_000, help="Caption tokens per minute at most."),
               caption_concurrency: int = typer.Option(8, help="Caption requests in flight at most.")):
    """Ingest a manifest: embeddings + entities for text, shots for video, captions for images and shots (with
    --caption-url); resumable, deduplicated, retried."""
    from prometheus_client import write_to_textfile

    from .services.ingest import ingest, read_manifest
    from .services.metrics import IngestMetrics
    from .services.store import SqliteStore

    config = _config(url, concurrency, workers, embed_model, ner_model, shots_model, manifest, allow_root,
                     allow_host, fetch_deadline, _captions(caption_url, caption_model, caption_provider,
                                                           caption_key_env, caption_rpm, caption_tpm,
                                                           caption_concurrency))
    _json_logs(log_file)
    metrics = IngestMetrics()
    if metrics_port:
        metrics.serve(metrics_port, metrics_host)
    store = SqliteStore(store_path)
    try:
        added = store.add(read_manifest(manifest))
        counts = store.counts()
        progress = _Progress(counts["pending"] + (counts["dead"] if retry_dead else 0))
        with progress.bar:
            summary = asyncio.run(ingest(store, config, metrics=metrics, retry_dead=retry_dead,
                                         on_progress=progress))
    finally:
        if metrics_file:
            write_to_textfile(str(metrics_file), metrics.registry)
    _summary(added, summary, store)
    typer.echo(f"requests ok {metrics.value('ingest_requests_total', outcome='ok'):.0f}, retries "
               f"{metrics.value('ingest_retries_total'):.0f}, computed {metrics.value('ingest_computed_total'):.0f}, "
               f"dedup hits {metrics.value('ingest_dedup_hits_total'):.0f}; log: {log_file}")
    if caption_url:
        typer.echo(f"captions: {metrics.value('ingest_caption_requests_total'):.0f} requests "
                   f"({metrics.value('ingest_caption_requests_total', outcome='ok'):.0f} ok), tokens in "
                   f"{metrics.value('ingest_caption_tokens_total', direction='in'):.0f} / out "
                   f"{metrics.value('ingest_caption_tokens_total', direction='out'):.0f}, "
                   f"US$ {metrics.value('ingest_caption_usd_total'):.4f} this run (`tritonrepo ingest costs`: all)")
    raise typer.Exit(0 if summary.counts["pending"] == 0 else 2)


@ingest_app.command("costs")
def ingest_costs(store_path: Path = STORE_OPT):
    """What captions cost: every paid caption (tokens, US$) and each asset's share."""
    from .services.ingest import caption_costs
    from .services.store import SqliteStore

    costs = caption_costs(SqliteStore(store_path))
    for key, t in costs["paid"].items():
        typer.echo(f"{key}: {t['captions']} captions paid, tokens in {t['tokens_in']} / out {t['tokens_out']}, "
                   f"US$ {t['usd']:.6f}")
    for a in costs["assets"]:
        typer.echo(f"  {a['content_hash'][:12]}: {a['captions']} captions ({a['paid']} paid here), tokens "
                   f"{a['tokens_in']}/{a['tokens_out']}, US$ {a['usd']:.6f}")
    typer.echo(f"total US$ {costs['total_usd']:.6f} paid; assets' shares add up to US$ {costs['assets_usd']:.6f}")


@ingest_app.command("ray")
def ingest_ray(manifest: Path = typer.Argument(..., help="JSON-lines manifest."), store_path: Path = STORE_OPT,
               url: list[str] = typer.Option(["127.0.0.1:8001"], "--url", help="Triton endpoints (repeat)."),
               actors: int = typer.Option(2, help="Ray actors calling Triton."),
               batch_size: int = typer.Option(8, help="Assets per map_batches batch."),
               concurrency: int = typer.Option(8, help="Requests in flight per actor and endpoint."),
               embed_model: str = MODEL_OPTS["embed_model"], ner_model: str = MODEL_OPTS["ner_model"],
               shots_model: str = MODEL_OPTS["shots_model"],
               allow_root: list[Path] = ALLOW_ROOT_OPT, allow_host: list[str] = ALLOW_HOST_OPT,
               fetch_deadline: float = FETCH_DEADLINE_OPT,
               log_file: Path = typer.Option(paths.RUNS / "ingest.log.jsonl", help="JSON log lines (driver).")):
    """The same pipeline as a Ray Data job (map_batches over Triton endpoints); a local Ray unless RAY_ADDRESS."""
    from .services.ingest import read_manifest
    from .services.ingest_ray import ingest_on_ray
    from .services.store import SqliteStore

    _json_logs(log_file)
    store = SqliteStore(store_path)
    added = store.add(read_manifest(manifest))
    config = _config(url[0], concurrency, batch_size, embed_model, ner_model, shots_model, manifest, allow_root,
                     allow_host, fetch_deadline)
    summary, per_url = ingest_on_ray(store, url, config, actors=actors, batch_size=batch_size)
    _summary(added, summary, store)
    typer.echo("assets per endpoint: " + ", ".join(f"{u} {n}" for u, n in sorted(per_url.items())))
    raise typer.Exit(0 if summary.counts["pending"] == 0 else 2)


@ingest_app.command("status")
def ingest_status(store_path: Path = STORE_OPT):
    """The ledger's counts and the dead-letter list."""
    from .services.fetch import redact
    from .services.store import SqliteStore

    store = SqliteStore(store_path)
    typer.echo(f"ledger: {store.counts()}")
    for asset_id, source, error in store.dead_letters():
        typer.echo(f"dead: {asset_id} ({redact(source)}): {error}")


@ingest_app.command("sample")
def ingest_sample(out: Path = typer.Argument(..., help="Folder for the manifest and its documents."),
                  documents: int = typer.Option(200, help="Reuters articles (CoNLL-2003 test) as text files."),
                  captions: int = typer.Option(200, help="Reuters headlines as inline caption texts."),
                  videos: bool = typer.Option(True, help="Add the packaged video clips."),
                  duplicates: int = typer.Option(20, help="Assets that repeat another's content.")):
    """A manifest of real packaged data: articles, headlines, videos, some duplicated, one of each bad kind."""
    from .datasets import sample_manifest

    path, n = sample_manifest(out, documents=documents, captions=captions, videos=videos, duplicates=duplicates)
    typer.echo(f"{path}: {n} assets")


def metrics(url: str = typer.Option("http://127.0.0.1:8002/metrics", help="Triton's metrics endpoint."),
            interval: float = typer.Option(0.0, help="Seconds between two scrapes (0: totals since start).")):
    """Per-model summary of Triton's Prometheus metrics: requests, batch size, queue vs compute time, cache hits."""
    from rich.table import Table

    from .services.metrics import summarize

    rows = summarize(url, interval)
    t = Table(title=f"Triton metrics {url}" + (f", last {interval:.0f} s" if interval else ", since start"))
    for col in ("model", "requests", "req/s", "failures", "executions", "avg batch", "queue ms/req",
                "compute ms/exec", "cache hits"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r.model, f"{r.requests:.0f}", f"{r.per_s:.1f}" if interval else "-", f"{r.failures:.0f}",
                  f"{r.executions:.0f}", f"{r.avg_batch:.2f}", f"{r.queue_ms:.2f}", f"{r.compute_ms:.2f}",
                  f"{r.cache_hits:.0f}")
    from rich.console import Console

    Console(width=150).print(t)


def trace(trace_id: str = typer.Argument(..., help="An asset's trace id (JSON logs, or the ledger)."),
          file: Path = typer.Option(..., "--file", help="The server's trace file (tritonrepo serve --trace-file).")):
    """Follow one asset's requests through Triton: every model step with its queue and compute time."""
    from .services.metrics import follow_trace

    spans = follow_trace(file, trace_id)
    if not spans:
        raise TritonRepoError(f"no request with id {trace_id!r} in {file}[.N]")
    t0 = spans[0].start_ns
    for s in spans:
        indent = "  " if s.parent is not None else ""
        what = "cache hit" if s.cache_hit else f"queue {s.queue_us / 1e3:7.2f} ms  compute {s.compute_us / 1e3:7.2f} ms"
        typer.echo(f"+{(s.start_ns - t0) / 1e6:9.2f} ms  {indent}{s.model:<22} {what}  total {s.total_us / 1e3:.2f} ms")
