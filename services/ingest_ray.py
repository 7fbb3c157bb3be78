"""The ingestion pipeline as a Ray Data job: ``map_batches`` over pending assets, actors calling Triton endpoints.

    tritonrepo ingest ray manifest.jsonl --store ingest.db --url triton-a:8001 --url triton-b:8001 --actors 8

Ray schedules, retries failed actors and applies backpressure between stages; nothing here schedules. Each actor
runs the same ``Processor`` as the asyncio pipeline (its own event loop, clients and adaptive limit) against one
endpoint (actors are spread over the URLs), and looks results up in the store read-only. The driver is the only
writer: it records each outcome in the ledger as batches stream back, so killing the job and running it again
redoes only unrecorded assets, as with the asyncio pipeline. On a cluster the store is one every node can read
(another ``Store`` backend); here it is the local SQLite file and a local Ray.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import pickle
import time
from collections.abc import Callable
from pathlib import Path

from .ingest import IngestConfig, Processor, RunSummary
from .metrics import IngestMetrics
from .store import Asset, Outcome, SqliteStore

log = logging.getLogger(__name__)

_FIELDS = [f.name for f in dataclasses.fields(Asset)]


class TritonWorker:
    """A Ray actor: batches of assets in, a batch of pickled outcomes out. Assets go round-robin over the
    endpoints (one ``Processor`` each), so the load spreads evenly whatever the number of actors."""

    def __init__(self, urls: list[str], config: IngestConfig, store_path: str):
        self.loop = asyncio.new_event_loop()  # the actor's own: its gRPC channels and limits live on it
        cache = SqliteStore(store_path, readonly=True, check_same_thread=False)  # Ray calls from a thread pool

        async def open_all() -> list[Processor]:
            processors = [Processor(dataclasses.replace(config, url=url), cache, IngestMetrics()) for url in urls]
            for p in processors:
                await p.start()
            return processors

        self.processors = self.loop.run_until_complete(open_all())
        self.turn = itertools.count()

    def __call__(self, batch: dict) -> dict:
        assets = [Asset(**{f: _scalar(batch[f][i]) for f in _FIELDS}) for i in range(len(batch["id"]))]
        chosen = [self.processors[next(self.turn) % len(self.processors)] for _ in assets]

        async def process_all():
            return await asyncio.gather(*(p.process(a) for p, a in zip(chosen, assets)))

        outcomes = self.loop.run_until_complete(process_all())
        return {"outcome": [pickle.dumps(o) for o in outcomes], "url": [p.config.url for p in chosen]}


def _scalar(value):
    return None if value is None or value != value else str(value)  # Arrow/pandas give None or NaN for missing


def ingest_on_ray(store: SqliteStore, urls: list[str], config: IngestConfig = IngestConfig(), *, actors: int = 2,
                  batch_size: int = 8, retry_dead: bool = False,
                  on_progress: Callable[[Outcome], None] | None = None) -> tuple[RunSummary, dict[str, int]]:
    """Process the pending assets of the ledger on Ray; returns the summary and assets processed per endpoint."""
    import ray
    import ray.data

    start = time.perf_counter()
    rows = [dataclasses.asdict(a) for a in store.pending(retry_dead=retry_dead)]
    per_url: dict[str, int] = {}
    if rows:
        _start_ray(ray)
        dataset = ray.data.from_items(rows).map_batches(
            TritonWorker, fn_constructor_kwargs={"urls": list(urls), "config": config,
                                                 "store_path": str(Path(store.path).resolve())},
            batch_size=batch_size, concurrency=actors, num_cpus=0.5)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for raw, url in zip(batch["outcome"], batch["url"]):
                outcome: Outcome = pickle.loads(raw)
                store.record(outcome)
                per_url[str(url)] = per_url.get(str(url), 0) + 1
                if on_progress:
                    on_progress(outcome)
    return RunSummary(sum(per_url.values()), store.counts(), time.perf_counter() - start), per_url


def _start_ray(ray) -> None:
    """Connect to RAY_ADDRESS or start a local Ray. A local node whose raylet misses Ray's fixed 30 s start-up
    window (seen once here, inside a long test session) is started once more before giving up."""
    if ray.is_initialized():
        return
    for attempt in (1, 2):
        try:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            return
        except Exception as e:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(e) or attempt == 2:
                raise
            log.warning("Ray's local node did not start in time (%s); starting it once more", e)
            ray.shutdown()
