"""Resilient ingestion: a manifest of assets through the served models into a store, over asyncio gRPC.

    tritonrepo ingest run manifest.jsonl --store ingest.db --url triton:8001

Manifest: JSON lines, one asset each: ``{"id": "a1", "kind": "text", "uri": "docs/a1.txt"}``,
``{"id": "c7", "kind": "text", "text": "Photo caption ..."}``, ``{"id": "v3", "kind": "video", "uri":
"https://.../v3.mp4"}`` or ``{"id": "p2", "kind": "image", "uri": "photos/p2.jpg"}`` (``uri``: a local path,
``file://`` or ``http(s)://``; ``trace_id`` optional). Local paths are read only inside the manifest's folder and
the other ``roots`` (``--allow-root``), URLs only from public addresses or ``allow_hosts``, within a deadline and the
kind's size limit (``services.fetch``); anything else is dead-lettered with the rule it broke. URLs appear in logs,
errors and dead letters without their query (signed URLs carry credentials there).

Tasks: text -> chunks of sentences -> embeddings (``sbert_int8``) and entities (``ner_int8``); video -> shots
(``video_shots``); with a caption provider (``IngestConfig.captions``, ``services.captions``): video -> the middle frame
of each shot -> a caption from an external multimodal model -> its embedding, and image -> caption -> embedding.
Near-identical keyframes (perceptual hash) are captioned once; each caption is cached under its JPEG's hash,
provider, model and prompt version as soon as it is paid for, so neither a rerun nor a crash pays twice.

Every result is stored under its content hash and the model's name and version (``services.store``): the same bytes
are computed once, across assets and runs, and a rerun after a crash or SIGKILL redoes only what was not recorded.
Requests that were in flight when the process died hit Triton's response cache when sent again (models with
``response_cache`` in their spec), so the server does not compute them twice either.

Errors: UNAVAILABLE, DEADLINE_EXCEEDED and RESOURCE_EXHAUSTED (and a model not ready while a server restarts) are
retried with capped exponential backoff and full jitter; overload also halves the requests in flight (AIMD), which
grow back by one per window of successes. Bad input (INVALID_ARGUMENT, undecodable text, a missing file, HTTP 4xx)
is never retried: the asset goes to the dead-letter list with the error. Each asset carries a trace id into Triton
(request id and request parameter ``trace_id``) and into the JSON log lines of this module.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as aiogrpc
from tritonclient.utils import InferenceServerException

from tritonrepo.clients.embedding import AsyncEmbeddingClient
from tritonrepo.clients.grpc_core import RetryPolicy, channel_args, translate
from tritonrepo.clients.ner import AsyncNerClient
from tritonrepo.clients.video import MAX_REQUEST_BYTES, AsyncShotClient, ShotClient
from tritonrepo.errors import (
    ClientError, InvalidInputError, ModelNotFoundError, ServerOverloadedError, StubRestartError,
)

from .captions import (
    Caption, CaptionAuthError, CaptionConfig, CaptionError, Captioner, PhashIndex, jpeg, keyframes, load_image,
    middle_frames, phash,
)
from .fetch import FetchError, confine, fetch_url, local_path, redact
from .metrics import IngestMetrics
from .store import Asset, Outcome, SqliteStore, Store

log = logging.getLogger(__name__)

KINDS = ("text", "video", "image")
# Within NER's 128-token window (SBERT reads 256): on the CoNLL-2003 valid articles 0 of 1,603 chunks of 300 chars
# exceed 128 tokens (400 chars: 5 of 1,370; 500: 6 of 1,237; number-heavy sports tables are the dense ones).
CHUNK_CHARS = 300
RECENT_RESULTS = 512  # results kept in memory for duplicates that arrive before the store has them


# ---- manifest and text chunks ------------------------------------------------------------------------------------


def read_manifest(path: str | Path) -> Iterator[Asset]:
    """Parse a JSON-lines manifest lazily; errors name the line. Assets without ``trace_id`` get a new one."""
    seen = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield _manifest_asset(line, f"{path}:{n}", seen, Path(path).resolve().parent)


def _manifest_asset(line: str, where: str, seen: set[str], base: Path) -> Asset:
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{where}: not JSON: {e}") from e
    if not isinstance(d, dict):
        raise InvalidInputError(f"{where}: expected a JSON object, got {type(d).__name__}")
    unknown = set(d) - {"id", "kind", "uri", "text", "trace_id"}
    problems = [f"unknown fields {sorted(unknown)}"] if unknown else []
    if d.get("kind") not in KINDS:
        problems.append(f"kind must be one of {list(KINDS)}, got {d.get('kind')!r}")
    if (d.get("uri") is None) == (d.get("text") is None) or (d.get("kind") != "text" and d.get("text")):
        problems.append("give exactly one of uri or text (videos and images need a uri)")
    asset_id = str(d.get("id") or _uri_id(d.get("uri")) or "")
    if not asset_id:
        problems.append("no id (and no uri to use as one)")
    elif asset_id in seen:
        problems.append(f"duplicate id {asset_id!r}")
    if problems:
        raise InvalidInputError(f"{where}: " + "; ".join(problems))
    seen.add(asset_id)
    uri = d.get("uri")
    if uri and "://" not in uri and not Path(uri).is_absolute():
        uri = str(base / uri)  # relative paths are relative to the manifest
    return Asset(id=asset_id, kind=d["kind"], uri=uri, text=d.get("text"),
                 trace_id=d.get("trace_id") or uuid.uuid4().hex[:16])


def _uri_id(uri) -> str | None:
    """An asset's id taken from its uri: the uri itself, or, when a query (credentials of a signed URL) would go into
    every log line, the redacted uri with a hash of the whole one (distinct URLs keep distinct ids)."""
    if not isinstance(uri, str) or redact(uri) == uri:
        return uri
    return f"{redact(uri)}#{hashlib.sha256(uri.encode()).hexdigest()[:16]}"


_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _split(text: str, start: int, end: int, pattern: re.Pattern) -> Iterator[tuple[int, int]]:
    for m in pattern.finditer(text, start, end):
        yield start, m.start()
        start = m.end()
    yield start, end


def _cut(text: str, start: int, end: int, max_chars: int) -> Iterator[tuple[int, int]]:
    """[start, end) without surrounding whitespace, in pieces of at most max_chars cut at spaces where possible."""
    while start < end:
        while start < end and text[start].isspace():
            start += 1
        stop = min(end, start + max_chars)
        if stop < end:
            space = text.rfind(" ", start + 1, stop + 1)
            stop = space if space > start else stop
        piece_end = stop
        while piece_end > start and text[piece_end - 1].isspace():
            piece_end -= 1
        if piece_end > start:
            yield start, piece_end
        start = stop


def chunk_spans(text: str, max_chars: int = CHUNK_CHARS) -> list[tuple[int, int]]:
    """[start, end) character spans covering the text's words: whole sentences packed up to ``max_chars`` within a
    paragraph; a longer sentence is cut at the last space before the limit (or at the limit)."""
    spans: list[tuple[int, int]] = []
    for para_start, para_end in _split(text, 0, len(text), _PARAGRAPH):
        packed = None
        for sent_start, sent_end in _split(text, para_start, para_end, _SENTENCE):
            for a, b in _cut(text, sent_start, sent_end, max_chars):
                if packed and b - packed[0] <= max_chars:
                    packed = (packed[0], b)
                else:
                    if packed:
                        spans.append(packed)
                    packed = (a, b)
        if packed:
            spans.append(packed)
    return spans


# ---- adaptive concurrency ------------------------------------------------------------------------------------------


class AdaptiveLimit:
    """Requests in flight: halves on overload (at most once per ``cooldown_s``), +1 after ``limit`` successes."""

    def __init__(self, maximum: int, cooldown_s: float = 0.5, on_change: Callable[[int], None] | None = None):
        self.maximum = self.limit = maximum
        self.cooldown_s = cooldown_s
        self.in_flight = 0
        self._ok = 0
        self._last_cut = 0.0
        self._cond = asyncio.Condition()
        self._on_change = on_change or (lambda _: None)
        self._on_change(self.limit)

    async def __aenter__(self):
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def __aexit__(self, *exc):
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def overloaded(self) -> None:
        now = time.monotonic()
        if now - self._last_cut >= self.cooldown_s and self.limit > 1:
            self.limit, self._ok, self._last_cut = max(1, self.limit // 2), 0, now
            self._on_change(self.limit)

    def succeeded(self) -> None:
        self._ok += 1
        if self._ok >= self.limit and self.limit < self.maximum:
            self.limit, self._ok = self.limit + 1, 0
            self._on_change(self.limit)


# ---- processing ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestConfig:
    url: str = "127.0.0.1:8001"
    embed_model: str | None = "sbert_int8"  # None: skip this task
    ner_model: str | None = "ner_int8"
    shots_model: str | None = "video_shots"
    concurrency: int = 8  # Triton requests in flight at most (the adaptive limit starts here)
    assets_in_flight: int = 16  # assets being fetched/processed at once (workers; bounds memory)
    text_timeout_s: float = 30.0  # per attempt
    video_timeout_s: float = 900.0
    fetch_timeout_s: float = 60.0  # per socket operation
    fetch_deadline_s: float = 300.0  # a whole download (256 MiB needs ~0.9 MB/s), redirects included
    # folders local paths may be read from: the manifest's folder and each --allow-root (none: no local files)
    roots: tuple[Path, ...] = ()
    allow_hosts: tuple[str, ...] = ()  # hosts fetched from although they resolve to private/loopback/... addresses
    retry: RetryPolicy = RetryPolicy(attempts=15, backoff_s=0.25, max_backoff_s=15.0)  # ~75 s of retries on average
    max_text_bytes: int = 8 << 20
    # videos: the cap on a URL's download; a larger local file streams from disk in segments through the live model
    max_fetch_bytes: int = MAX_REQUEST_BYTES
    max_image_bytes: int = 32 << 20
    captions: CaptionConfig | None = None  # None: no captions (videos get shots only; images are not processed)


@dataclass(frozen=True)
class Task:
    name: str  # embed, entities, shots
    model: str
    version: str

    @property
    def key(self) -> str:
        return f"{self.name}:{self.model}@{self.version}"


def decode_result(task_key: str, payload: bytes):
    """A stored payload as data: embeddings float32 [chunks, dim]; entities and shots as JSON."""
    if task_key.startswith("embed:"):
        return np.load(io.BytesIO(payload))
    if task_key.startswith("captions:"):  # {"items": [...], "usd": ..., "embeddings": float32 [items, dim]}
        with np.load(io.BytesIO(payload)) as z:
            return json.loads(z["meta"].tobytes()) | {"embeddings": z["embeddings"]}
    return json.loads(payload)


class ResultCache:
    """Results by (content hash, task key): the store first, then the results computed here lately (the store may not
    have them yet), then a computation in flight for the same key, which is awaited rather than repeated. Hits are
    counted in ``ingest_dedup_hits_total`` by where they were found."""

    def __init__(self, store: Store, metrics: IngestMetrics, recent: int = RECENT_RESULTS):
        self.store, self.metrics, self.size = store, metrics, recent
        self._recent: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future] = {}

    def ready(self, key: tuple[str, str]) -> bytes | None:
        payload = self.store.cached(*key) or self._recent.get(key)
        if payload is not None:
            self.metrics.dedup.labels(key[1], "store").inc()
        return payload

    async def shared(self, key: tuple[str, str]) -> bytes | None:
        """The result of the same computation in flight, or None when there is none."""
        if key not in self._inflight:
            return None
        self.metrics.dedup.labels(key[1], "in_flight").inc()
        return await asyncio.shield(self._inflight[key])

    async def compute(self, key: tuple[str, str], make: Callable[[], Awaitable[bytes]],
                      started: Callable[[asyncio.Future], None] = lambda future: None) -> bytes:
        """``make()``'s result, shared with whoever asks for ``key`` while it runs (``started`` sees its future)."""
        future = asyncio.ensure_future(make())
        self._inflight[key] = future
        started(future)
        try:
            payload = await future
        finally:
            del self._inflight[key]
        self._recent[key] = payload
        if len(self._recent) > self.size:
            self._recent.popitem(last=False)
        return payload


class Fetcher:
    """An asset's bytes (or, for a local video over the request limit, its path) and their SHA-256: inline text,
    URLs (retried on transient failures, ``services.fetch``) and local files inside the allowed roots, each within
    its kind's size limit."""

    def __init__(self, config: IngestConfig, metrics: IngestMetrics):
        self.config, self.metrics = config, metrics

    async def __call__(self, asset: Asset) -> tuple[bytes | Path, str]:
        c = self.config
        limit = {"text": c.max_text_bytes, "image": c.max_image_bytes}.get(asset.kind, c.max_fetch_bytes)
        if asset.text is not None:
            data = asset.text.encode("utf-8", "surrogatepass")  # lone surrogates fail at decode, with the position
            if len(data) > limit:
                raise FetchError(f"inline text of {len(data)} bytes is over the {limit}-byte ({limit / 2**20:g} MiB) "
                                 "limit for text (IngestConfig.max_text_bytes)", permanent=True)
            return data, hashlib.sha256(data).hexdigest()
        uri = asset.uri
        if uri.lower().startswith(("http://", "https://")):
            for attempt in range(c.retry.attempts):
                try:
                    data = await asyncio.to_thread(self._download, uri, limit)
                    return data, hashlib.sha256(data).hexdigest()
                except FetchError as e:
                    if e.permanent or attempt == c.retry.attempts - 1:
                        raise
                    self.metrics.retries.labels("fetch", "http").inc()
                    await asyncio.sleep(c.retry.delay(attempt))
        path = confine(local_path(uri), c.roots)  # resolved: what is read is what was checked
        try:
            size = path.stat().st_size
            if asset.kind != "video" and size > limit:
                raise FetchError(f"{path}: {size} bytes, over the {limit}-byte limit for {asset.kind}", permanent=True)
            if asset.kind == "video" and size > min(limit, MAX_REQUEST_BYTES):  # streamed from disk in segments
                return path, await asyncio.to_thread(_file_sha256, path)
            data = await asyncio.to_thread(path.read_bytes)
            return data, hashlib.sha256(data).hexdigest()
        except OSError as e:
            raise FetchError(f"cannot read {path}: {e.strerror or e}", permanent=True) from e

    def _download(self, uri: str, limit: int) -> bytes:
        c = self.config
        return fetch_url(uri, limit=limit, deadline_s=c.fetch_deadline_s, timeout_s=c.fetch_timeout_s,
                         allow_hosts=c.allow_hosts)


class Processor:
    """Turns assets into outcomes (results or errors) through the served models. The asyncio pipeline and the Ray
    workers both use it. ``cache`` is the store to look results up in (read only here). Paid captions are written at
    once through ``keep`` (the pipeline's store); without it (Ray workers only read the store) they travel with the
    next outcome (``Outcome.extra``) to the writer."""

    def __init__(self, config: IngestConfig, cache: Store, metrics: IngestMetrics | None = None,
                 keep: Callable[[str, str, bytes], None] | None = None):
        self.config, self.cache = config, cache
        self.keep = keep  # keep(content hash, task key, payload)
        self._unkept: list[tuple[str, str, bytes]] = []
        self.metrics = metrics or IngestMetrics()
        once = RetryPolicy(attempts=1)  # the processor retries, counting each retry
        self._embed = AsyncEmbeddingClient(config.url, config.embed_model or "", timeout_s=config.text_timeout_s,
                                           retry=once, max_in_flight=config.concurrency)
        self._ner = AsyncNerClient(config.url, config.ner_model or "", timeout_s=config.text_timeout_s, retry=once,
                                   max_in_flight=config.concurrency)
        self._shots = AsyncShotClient(config.url, config.shots_model or "", timeout_s=config.video_timeout_s,
                                      retry=once, max_in_flight=config.concurrency)
        self.limit = AdaptiveLimit(config.concurrency, on_change=self.metrics.limit.set)
        self.captioner = Captioner(config.captions, metrics=self.metrics) if config.captions else None
        self._phashes = PhashIndex(config.captions.phash_distance) if config.captions else None
        self.fetch = Fetcher(config, self.metrics)
        self.results = ResultCache(cache, self.metrics)
        self._handlers = {"embed": self._embeddings, "entities": self._entities, "shots": self._shot_list,
                          "captions": self._captions}  # task name -> handler(data, asset, content hash) -> payload
        self.tasks: dict[str, list[Task]] = {}

    async def start(self) -> None:
        """Check that every model is ready and read its version (part of each result's cache key)."""
        c = self.config
        wanted = [("text", "embed", c.embed_model), ("text", "entities", c.ner_model), ("video", "shots", c.shots_model)]
        client = aiogrpc.InferenceServerClient(c.url, channel_args=channel_args())
        self.tasks = {kind: [] for kind in KINDS}
        try:
            for kind, name, model in (w for w in wanted if w[2]):
                meta = await self._call(model, lambda m=model: client.get_model_metadata(
                    m, as_json=True, client_timeout=c.text_timeout_s))
                self.tasks[kind].append(Task(name, model, max(meta["versions"], key=int)))
        finally:
            await client.close()
        if c.captions:
            embed = next((t for t in self.tasks["text"] if t.name == "embed"), None)
            if embed is None or not c.shots_model:
                raise InvalidInputError("captions need an embedding model and the shot model (embed_model, "
                                        "shots_model)")
            task = Task("captions", f"{c.captions.provider}/{c.captions.model}",
                        f"{c.captions.prompt_version}+{embed.model}@{embed.version}")
            self.tasks["video"].append(task)
            self.tasks["image"].append(task)

    async def close(self) -> None:
        for client in (self._embed, self._ner, self._shots):
            await client.close()
        if self.captioner:
            await self.captioner.close()

    async def process(self, asset: Asset) -> Outcome:
        outcome = Outcome(asset)
        try:
            tasks = self.tasks[asset.kind]
            if not tasks:
                raise InvalidInputError(f"asset {asset.id}: this run has no model for kind {asset.kind!r}")
            data, outcome.content_hash = await self.fetch(asset)
            payloads = await asyncio.gather(*(self._result(t, outcome.content_hash, data, asset) for t in tasks))
            outcome.results = {t.key: p for t, p in zip(tasks, payloads)}
        except (InvalidInputError, FetchError) as e:
            outcome.error = f"{type(e).__name__}: {e}"
            outcome.permanent = not isinstance(e, FetchError) or e.permanent
        except CaptionAuthError:
            raise  # the provider refuses our key: stop the run rather than fail every asset
        except ClientError as e:  # retriable, attempts exhausted: stays pending for the next run
            outcome.error = f"{type(e).__name__}: {e}"
            outcome.permanent = isinstance(e, CaptionError) and not e.retriable  # e.g. the provider refused the image
        outcome.extra, self._unkept = self._unkept, []
        status = "done" if outcome.error is None else "dead" if outcome.permanent else "failed"
        self.metrics.assets.labels(status).inc()
        _event(logging.INFO if status == "done" else logging.WARNING, "asset " + status, asset,
               content_hash=outcome.content_hash, error=outcome.error)
        return outcome

    async def _result(self, task: Task, content_hash: str, data: bytes | Path, asset: Asset) -> bytes:
        key = (content_hash, task.key)
        payload = self.results.ready(key) or await self.results.shared(key)
        if payload is None:
            payload = await self.results.compute(key, lambda: self._handlers[task.name](task, data, asset,
                                                                                        content_hash))
            self.metrics.computed.labels(task.key).inc()
        return payload

    async def _shot_list(self, task: Task, data: bytes | Path, asset: Asset, content_hash: str) -> bytes:
        if isinstance(data, Path):  # over the request limit: segments through the live model (blocking client)
            sync = ShotClient(self.config.url, self.config.shots_model, timeout_s=self.config.video_timeout_s,
                              max_request_bytes=min(self.config.max_fetch_bytes, MAX_REQUEST_BYTES))
            with sync:
                found = await self._call(task.model, lambda: asyncio.to_thread(sync.shots, data), asset)
        else:
            found = await self._call(task.model, lambda: self._shots.shots(data, trace_id=asset.trace_id), asset)
        shots = [asdict(s) for s in found.shots]
        return json.dumps({"frames": found.frames, "fps": found.fps, "shots": shots}).encode()

    async def _embeddings(self, task: Task, data: bytes | Path, asset: Asset, content_hash: str) -> bytes:
        text = _decode_text(data, asset)
        chunks = [text[a:b] for a, b in chunk_spans(text)]
        vectors = await self._call(task.model, lambda: self._embed.embed(chunks, trace_id=asset.trace_id), asset)
        buf = io.BytesIO()
        np.save(buf, vectors.astype(np.float32), allow_pickle=False)
        return buf.getvalue()

    async def _entities(self, task: Task, data: bytes | Path, asset: Asset, content_hash: str) -> bytes:
        text = _decode_text(data, asset)
        spans = chunk_spans(text)
        found = await self._call(task.model, lambda: self._ner.analyze([text[a:b] for a, b in spans],
                                                                       trace_id=asset.trace_id), asset)
        entities = [{**asdict(e), "start": e.start + a, "end": e.end + a} for r, (a, _) in zip(found, spans)
                    for e in r.entities]
        return json.dumps({"chunks": spans, "entities": entities,
                           "truncated_chunks": [i for i, r in enumerate(found) if r.truncated]}).encode()

    async def _captions(self, task: Task, data: bytes | Path, asset: Asset, content_hash: str) -> bytes:
        """Caption the photo, or the middle frame of each shot of the video, then embed the captions (served SBERT).
        The payload holds each caption with where it came from (paid, store, in_flight, phash) and what it cost
        this asset: a reused caption costs nothing here (its payer's record has it)."""
        cfg = self.config.captions
        try:
            if asset.kind == "image":
                places = [{}]
                pictures = [await asyncio.to_thread(load_image, data, cfg.max_side)]
            else:
                shots_task = next(t for t in self.tasks["video"] if t.name == "shots")
                shots = json.loads(await self._result(shots_task, content_hash, data, asset))
                frames = middle_frames(shots["shots"])
                found = await asyncio.to_thread(keyframes, data, frames, cfg.max_side)
                if len(found) < len(set(frames)):
                    missing = max(set(frames) - set(found))
                    raise InvalidInputError(f"asset {asset.id}: FFmpeg decoded no frame {missing} of the "
                                            f"{shots['frames']} the shot model saw")
                places = [{"shot": i, "frame": f, "time_s": round(f / shots["fps"], 3)} for i, f in enumerate(frames)]
                pictures = [found[f] for f in frames]
        except ValueError as e:  # VideoError: a video FFmpeg cannot decode
            raise InvalidInputError(f"asset {asset.id}: {e}") from e
        images = await asyncio.to_thread(lambda: [(jpeg(p), phash(p)) for p in pictures])
        got = await asyncio.gather(*(self._caption(hashlib.sha256(j).hexdigest(), j, h, asset) for j, h in images))
        items = [{**place, "keyframe_sha256": key, "phash": f"{h:016x}", "caption": c.text, "source": source,
                  "duplicate_of": near, **({"tokens_in": c.tokens_in, "tokens_out": c.tokens_out, "usd": c.usd}
                                           if source == "paid" else {"tokens_in": 0, "tokens_out": 0, "usd": 0.0})}
                 for place, (_, h), (c, source, key, near) in zip(places, images, got)]
        embed = next(t for t in self.tasks["text"] if t.name == "embed")
        texts = [i["caption"] for i in items]
        vectors = (await self._call(embed.model, lambda: self._embed.embed(texts, trace_id=asset.trace_id), asset)
                   if texts else np.zeros((0, 0), np.float32))
        meta = {"provider": cfg.provider, "model": cfg.model, "prompt_version": cfg.prompt_version, "items": items,
                **{k: sum(i[k] for i in items) for k in ("tokens_in", "tokens_out", "usd")}}
        buf = io.BytesIO()
        np.savez(buf, embeddings=vectors.astype(np.float32),
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
        return buf.getvalue()

    async def _caption(self, key: str, image: bytes, hash64: int, asset: Asset) -> tuple[Caption, str, str, str | None]:
        """(caption, source, keyframe hash, hash of the near-identical keyframe whose caption it reuses)."""
        slot = (key, self.config.captions.key)
        if (payload := self.results.ready(slot)) is not None:
            return Caption.from_json(payload), "store", key, None
        if (payload := await self.results.shared(slot)) is not None:
            return Caption.from_json(payload), "in_flight", key, None
        near = self._phashes.find(hash64)
        if near is not None and not (near[1].done() and near[1].exception()):
            self.metrics.dedup.labels(slot[1], "phash").inc()
            return Caption.from_json(await asyncio.shield(near[1])), "phash", key, near[0]
        payload = await self.results.compute(slot, lambda: self._pay(key, image, asset),
                                             started=lambda future: self._phashes.add(hash64, (key, future)))
        return Caption.from_json(payload), "paid", key, None

    async def _pay(self, key: str, image: bytes, asset: Asset) -> bytes:
        payload = (await self.captioner.caption(image, asset.trace_id)).to_json()
        paid = (key, self.config.captions.key, payload)  # cached whatever befalls the asset
        if self.keep:
            self.keep(*paid)
        else:
            self._unkept.append(paid)
        self.metrics.computed.labels(self.config.captions.key).inc()
        return payload

    async def _call(self, model: str, fn, asset: Asset | None = None):
        """``fn()`` under the adaptive limit, retried on retriable errors with capped, jittered backoff."""
        retry = self.config.retry
        for attempt in range(retry.attempts):
            start = time.perf_counter()
            try:
                async with self.limit:
                    try:
                        out = await fn()
                    except InferenceServerException as e:
                        raise translate(e, model) from e
            except ClientError as e:
                status = "STUB_RESTART" if isinstance(e, StubRestartError) else e.status or type(e).__name__
                self.metrics.observe(model, time.perf_counter() - start, status)
                if isinstance(e, ServerOverloadedError):
                    self.limit.overloaded()
                # a model missing while a server restarts comes back; start() proved it exists
                retriable = e.retriable or (isinstance(e, ModelNotFoundError) and asset is not None)
                if not retriable or attempt == retry.attempts - 1:
                    raise
                pause = retry.delay(attempt)
                self.metrics.retries.labels(model, status).inc()
                _event(logging.INFO, "retry", asset, model=model, status=status, attempt=attempt + 1,
                       pause_s=round(pause, 3), error=str(e)[:200])
                await asyncio.sleep(pause)
                continue
            self.metrics.observe(model, time.perf_counter() - start, "ok")
            self.limit.succeeded()
            return out


def caption_costs(store: SqliteStore) -> dict:
    """What captions cost, from the store. ``paid``: every caption paid for, each cached once under its keyframe's
    hash with its tokens and US$ (per provider/model/prompt key); ``assets``: per asset content, the captions it holds
    and what they cost it (a reused caption costs nothing: its payer has it). With every asset done, the two totals
    agree."""
    paid: dict[str, dict] = {}
    for _, task, payload in store.results_of("caption:"):
        c, t = Caption.from_json(payload), paid.setdefault(task, dict(captions=0, tokens_in=0, tokens_out=0, usd=0.0))
        t["captions"] += 1
        t["tokens_in"] += c.tokens_in
        t["tokens_out"] += c.tokens_out
        t["usd"] += c.usd
    assets = []
    for content_hash, task, payload in store.results_of("captions:"):
        meta = decode_result(task, payload)
        assets.append({"content_hash": content_hash, "task": task, "captions": len(meta["items"]),
                       "paid": sum(i["source"] == "paid" for i in meta["items"]),
                       **{k: meta[k] for k in ("tokens_in", "tokens_out", "usd")}})
    return {"paid": paid, "assets": assets,
            "total_usd": sum(t["usd"] for t in paid.values()), "assets_usd": sum(a["usd"] for a in assets)}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _decode_text(data: bytes, asset: Asset) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"asset {asset.id}: not valid UTF-8 ({e.reason} at byte {e.start})") from e


def _event(level: int, message: str, asset: Asset | None, **fields) -> None:
    """A log line whose fields (asset_id, trace_id, ...) the JSON formatter writes as keys."""
    if asset is not None:
        fields = {"asset_id": asset.id, "trace_id": asset.trace_id, **fields}
    log.log(level, message, extra={"fields": {k: v for k, v in fields.items() if v is not None}})


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message and the event's fields (trace_id...)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                "message": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


# ---- the asyncio pipeline ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    processed: int  # assets processed in this run
    counts: dict[str, int]  # ledger status -> assets, after the run
    seconds: float


async def ingest(store: SqliteStore, config: IngestConfig = IngestConfig(), *, metrics: IngestMetrics | None = None,
                 retry_dead: bool = False, on_progress: Callable[[Outcome], None] | None = None) -> RunSummary:
    """Process every pending asset of the ledger (``store.add(read_manifest(path))`` registers a manifest) with
    ``assets_in_flight`` workers; each outcome is recorded as it arrives, so memory stays flat however long the
    manifest, and a killed run resumes where it stopped."""
    start = time.perf_counter()
    todo = store.pending(retry_dead=retry_dead)
    processed = 0
    processor = Processor(config, store, metrics, keep=store.put)

    async def worker() -> None:
        nonlocal processed
        for asset in todo:  # one shared iterator: each asset goes to exactly one worker
            outcome = await processor.process(asset)
            store.record(outcome)
            processed += 1
            if on_progress:
                on_progress(outcome)

    try:
        await processor.start()
        await asyncio.gather(*(worker() for _ in range(config.assets_in_flight)))
    finally:
        await processor.close()
    return RunSummary(processed, store.counts(), time.perf_counter() - start)
