"""The ingestion store: the job ledger, the result cache and the dead-letter list, in one SQLite file by default.

- ``assets`` is the ledger: one row per manifest asset, ``pending`` until it is ``done`` (all its results stored) or
  ``dead`` (bad input: the error is kept, it is not retried). An asset becomes done in the same transaction that
  stores its results, so a process killed at any moment leaves every asset either done with its results or pending.
- ``results`` is the cache: one row per (content hash, task key), the key naming model and version
  (``embed:sbert_int8@1``). Same bytes are computed once, across assets and runs; a new model version is a new key.

Another backend implements ``Store`` (a Postgres or DynamoDB store for a cluster); the pipeline needs nothing else.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

PENDING, DONE, DEAD = "pending", "done", "dead"


@dataclass(frozen=True)
class Asset:
    id: str
    kind: str  # "text" (a document or caption: file/URL or inline text) or "video" (file/URL)
    uri: str | None = None
    text: str | None = None
    trace_id: str = ""  # set when the ledger first sees the asset, kept across reruns


@dataclass
class Outcome:
    """What processing one asset gave: its results (task key -> payload) or why it failed."""

    asset: Asset
    content_hash: str | None = None
    results: dict[str, bytes] = field(default_factory=dict)
    # other results to cache, under their own content hash (paid captions of keyframes), whatever the asset's fate
    extra: list[tuple[str, str, bytes]] = field(default_factory=list)
    error: str | None = None  # "Type: message"
    permanent: bool = False  # bad input: goes to the dead-letter list instead of staying pending


class Store(Protocol):
    def add(self, assets: Iterable[Asset]) -> int: ...
    def pending(self, retry_dead: bool = False) -> Iterator[Asset]: ...
    def cached(self, content_hash: str, task: str) -> bytes | None: ...
    def put(self, content_hash: str, task: str, payload: bytes) -> None: ...
    def record(self, outcome: Outcome) -> None: ...
    def counts(self) -> dict[str, int]: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, uri TEXT, text TEXT, trace_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', content_hash TEXT, tasks TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS assets_status ON assets(status);
CREATE TABLE IF NOT EXISTS results (
    content_hash TEXT NOT NULL, task TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (content_hash, task));
"""


class SqliteStore:
    """``Store`` on one SQLite file (WAL: readers, e.g. Ray workers looking up the cache, never block the writer)."""

    def __init__(self, path: str | Path, *, readonly: bool = False, check_same_thread: bool = True):
        self.path = Path(path)
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30,
                                       check_same_thread=check_same_thread)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # a committed transaction survives a killed process
            self._db.executescript(_SCHEMA)

    def add(self, assets: Iterable[Asset]) -> int:
        """Register assets (ids already known are left as they are); returns how many were new."""
        now = time.time()
        with self._db:
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO assets (id, kind, uri, text, trace_id, updated) VALUES (?, ?, ?, ?, ?, ?)",
                ((a.id, a.kind, a.uri, a.text, a.trace_id, now) for a in assets))
            return self._db.total_changes - before

    def pending(self, retry_dead: bool = False, page: int = 1000) -> Iterator[Asset]:
        """Assets still to process, in manifest order, read a page at a time (no cursor stays open)."""
        statuses = (PENDING, DEAD) if retry_dead else (PENDING,)
        last = 0
        while True:
            rows = self._db.execute(
                "SELECT rowid, id, kind, uri, text, trace_id FROM assets WHERE rowid > ? AND status IN "
                f"({','.join('?' * len(statuses))}) ORDER BY rowid LIMIT ?", (last, *statuses, page)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield from (Asset(*row[1:]) for row in rows)

    def cached(self, content_hash: str, task: str) -> bytes | None:
        row = self._db.execute("SELECT payload FROM results WHERE content_hash = ? AND task = ?",
                               (content_hash, task)).fetchone()
        return row[0] if row else None

    def put(self, content_hash: str, task: str, payload: bytes) -> None:
        """Cache one result at once, outside any asset (a paid caption: a crash must not make us pay twice)."""
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO results (content_hash, task, payload, created) VALUES (?, ?, ?, ?)",
                             (content_hash, task, payload, time.time()))

    def results_of(self, task_prefix: str) -> Iterator[tuple[str, str, bytes]]:
        """(content hash, task key, payload) of every cached result whose key starts with the prefix."""
        yield from self._db.execute("SELECT content_hash, task, payload FROM results WHERE substr(task, 1, ?) = ? "
                                    "ORDER BY created", (len(task_prefix), task_prefix))

    def record(self, outcome: Outcome) -> None:
        """Store an asset's results and its new status in one transaction."""
        now = time.time()
        status = DONE if outcome.error is None else DEAD if outcome.permanent else PENDING
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO results (content_hash, task, payload, created) VALUES (?, ?, ?, ?)",
                [(outcome.content_hash, task, payload, now) for task, payload in outcome.results.items()] +
                [(h, task, payload, now) for h, task, payload in outcome.extra])
            self._db.execute(
                "UPDATE assets SET status = ?, content_hash = ?, tasks = ?, error = ?, attempts = attempts + 1, "
                "updated = ? WHERE id = ?",
                (status, outcome.content_hash, json.dumps(sorted(outcome.results)) if status == DONE else None,
                 outcome.error, now, outcome.asset.id))

    def counts(self) -> dict[str, int]:
        found = dict(self._db.execute("SELECT status, COUNT(*) FROM assets GROUP BY status").fetchall())
        return {s: found.get(s, 0) for s in (PENDING, DONE, DEAD)}

    def results(self, asset_id: str) -> dict[str, bytes]:
        """Task key -> payload for a done asset (empty for any other)."""
        row = self._db.execute("SELECT content_hash, tasks FROM assets WHERE id = ? AND status = ?",
                               (asset_id, DONE)).fetchone()
        if not row:
            return {}
        content_hash, tasks = row
        return {t: self.cached(content_hash, t) for t in json.loads(tasks)}

    def dead_letters(self) -> list[tuple[str, str, str]]:
        """(asset id, uri or inline, error) of every dead asset."""
        return self._db.execute("SELECT id, COALESCE(uri, 'inline text'), error FROM assets WHERE status = ? "
                                "ORDER BY rowid", (DEAD,)).fetchall()

    def close(self) -> None:
        self._db.close()
