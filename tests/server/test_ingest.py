"""Ingestion against the real tritonserver: results, dead letters, dedup, traces, server restarts, a SIGKILLed
ingestion process, overload, the Ray Data job, and the safety rules (confined paths, refused addresses, a large
video streamed from disk)."""

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from http_origin import Origin, serve

from tritonrepo import render
from tritonrepo.clients import NerClient
from tritonrepo.clients.grpc_core import RetryPolicy
from tritonrepo.clients.video import ShotClient
from tritonrepo.datasets import conll_articles, conll_sentences, sample_manifest
from tritonrepo.export import families
from tritonrepo.paths import VIDEO_DIR
from tritonrepo.server import TritonServer
from tritonrepo.services.ingest import IngestConfig, Processor, decode_result, ingest, read_manifest
from tritonrepo.services.metrics import IngestMetrics, follow_trace
from tritonrepo.services.store import Asset, SqliteStore

pytestmark = pytest.mark.server

TEXT_MODELS = ["sbert_int8", "ner_int8"]
EMBED, ENTITIES, SHOTS = "embed:sbert_int8@1", "entities:ner_int8@1", "shots:video_shots@1"
PATIENT = RetryPolicy(attempts=40, backoff_s=0.1, max_backoff_s=2.0)  # rides out a ~20 s restart, quickly after


@pytest.fixture(scope="module")
def server(model_repository, tmp_path_factory):
    """Text and video models with the response cache on and every request traced."""
    d = tmp_path_factory.mktemp("ingest-server")
    with TritonServer(model_repository, model_config_name="cpu", log_file=d / "log", response_cache_mb=64,
                      trace_file=d / "trace.json",
                      explicit_models=TEXT_MODELS + ["video_shots", "video_shots_live", "transnetv2_int8"]) as s:
        yield s


def _content(store: SqliteStore, asset_id: str) -> str:
    uri, text = store._db.execute("SELECT uri, text FROM assets WHERE id = ?", (asset_id,)).fetchone()
    return text if text is not None else Path(uri).read_text()


def _rows_executed(url: str, model: str) -> int:
    with grpcclient.InferenceServerClient(url) as c:
        return int(c.get_inference_statistics(model, as_json=True)["model_stats"][0].get("inference_count", 0))


def test_pipeline_ingests_every_asset_once_and_dead_letters_bad_input(server, tmp_path):
    path, n = sample_manifest(tmp_path / "data", documents=12, captions=12, videos=True, duplicates=8)
    store = SqliteStore(tmp_path / "ingest.db")
    store.add(read_manifest(path))
    metrics = IngestMetrics()
    config = IngestConfig(url=server.grpc_url, roots=(path.parent,))
    summary = asyncio.run(ingest(store, config, metrics=metrics))

    assert summary.counts == {"pending": 0, "done": n - 3, "dead": 3}
    dead = {asset_id: error for asset_id, _, error in store.dead_letters()}
    assert "not valid UTF-8" in dead["bad-latin1"] and "No such file" in dead["bad-missing"]
    assert "not a video" in dead["bad-video"]
    computed: dict[str, set] = {}
    entity_types = set()
    for asset_id, kind, content_hash in store._db.execute(
            "SELECT id, kind, content_hash FROM assets WHERE status = 'done'").fetchall():
        results = store.results(asset_id)
        computed.setdefault(content_hash, set()).update(results)
        if kind == "video":
            assert list(results) == [SHOTS]
            shots = decode_result(SHOTS, results[SHOTS])
            assert shots["frames"] > 0 and shots["shots"][-1]["end_frame"] == shots["frames"] - 1
            continue
        text = _content(store, asset_id)
        vectors, found = decode_result(EMBED, results[EMBED]), decode_result(ENTITIES, results[ENTITIES])
        assert vectors.shape == (len(found["chunks"]), 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
        assert " ".join(text[a:b] for a, b in found["chunks"]).split() == text.split()
        assert all(text[e["start"]:e["end"]] == e["text"] for e in found["entities"])
        entity_types |= {e["type"] for e in found["entities"]}
    assert entity_types == {"PER", "ORG", "LOC", "MISC"}
    # every (content, model) pair computed exactly once; the duplicates came from the dedup
    assert metrics.value("ingest_computed_total") == sum(len(tasks) for tasks in computed.values())
    assert metrics.value("ingest_dedup_hits_total") >= 8
    assert metrics.value("ingest_retries_total") == 0

    # a rerun finds nothing to do
    again = asyncio.run(ingest(store, config))
    assert again.processed == 0 and again.counts == summary.counts

    # one asset's requests, followed through the server's trace by its trace id
    trace_id = store._db.execute("SELECT trace_id FROM assets WHERE id = 'doc0000'").fetchone()[0]
    spans = follow_trace(server.trace_file, trace_id)
    assert {s.model for s in spans} >= {"sbert_int8", "ner_int8", "ner_tokenizer", "ner_decoder"}


def test_a_new_model_version_is_computed_again_and_the_same_version_never(server, tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    asset = Asset(id="a", kind="text", text="Angela Merkel met Reuters editors in Berlin.", trace_id="t-version")
    store.add([asset])

    async def run(version: str | None):
        p = Processor(IngestConfig(url=server.grpc_url, shots_model=None), store, IngestMetrics())
        await p.start()
        if version:  # what the keys would be once the repository serves version 2
            p.tasks["text"] = [dataclasses.replace(t, version=version) for t in p.tasks["text"]]
        try:
            outcome = await p.process(asset)
        finally:
            await p.close()
        store.record(outcome)
        return sorted(outcome.results), p.metrics.value("ingest_computed_total")

    assert asyncio.run(run(None)) == ([EMBED, ENTITIES], 2)
    assert asyncio.run(run(None)) == ([EMBED, ENTITIES], 0)
    assert asyncio.run(run("2")) == (["embed:sbert_int8@2", "entities:ner_int8@2"], 2)


def test_server_killed_and_restarted_mid_run_every_asset_gets_one_result(model_repository, tmp_path):
    sentences = conll_sentences("valid")[:150]
    db = tmp_path / "s.db"
    SqliteStore(db).add(Asset(id=f"s{i}", kind="text", text=t, trace_id=f"t{i}") for i, t in enumerate(sentences))
    server = TritonServer(model_repository, model_config_name="cpu", explicit_models=TEXT_MODELS,
                          log_file=tmp_path / "log").start()
    metrics = IngestMetrics()
    config = IngestConfig(url=server.grpc_url, shots_model=None, retry=PATIENT, concurrency=2, assets_in_flight=2)
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(summary=asyncio.run(ingest(SqliteStore(db), config,
                                                                                     metrics=metrics))))
    try:
        worker.start()
        watch = SqliteStore(db, readonly=True)
        while watch.counts()["done"] < 15:
            time.sleep(0.02)
        os.killpg(server.process.pid, signal.SIGKILL)  # the server and its Python-backend stubs
        server.process.wait()
        at_kill = watch.counts()["done"]
        time.sleep(1.0)
        server.start()  # same ports
        worker.join(timeout=300)
    finally:
        server.stop()
    assert at_kill < 150
    assert done["summary"].counts == {"pending": 0, "done": 150, "dead": 0}
    assert metrics.value("ingest_retries_total", status="UNAVAILABLE") > 0
    results = SqliteStore(db)._db.execute("SELECT task, COUNT(*) FROM results GROUP BY task").fetchall()
    assert sorted(results) == [(EMBED, 150), (ENTITIES, 150)]


def _wait_until_idle(url: str, quiet_s: float = 2.0, timeout_s: float = 120.0) -> None:
    """Until no model's statistics have moved for ``quiet_s``: every request still in flight has been answered."""
    def snapshot():
        with grpcclient.InferenceServerClient(url) as c:
            return [(m["name"], m.get("inference_count"), m.get("execution_count"),
                     m.get("inference_stats", {}).get("success", {}).get("count"))
                    for m in c.get_inference_statistics(as_json=True)["model_stats"]]

    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline:
        now = snapshot()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"the server was still busy after {timeout_s:.0f} s")


def _done(db) -> int:
    """Assets done so far, 0 before the ingestion process has created its ledger and schema."""
    try:
        return SqliteStore(db, readonly=True).counts()["done"] if db.exists() else 0
    except sqlite3.OperationalError:  # the file exists, its tables not yet
        return 0


def test_ingest_process_sigkilled_and_rerun_loses_nothing_and_computes_nothing_twice(server, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    rows = []
    for i, article in enumerate(conll_articles("valid")[:50]):  # content this server has not seen
        (docs / f"{i}.txt").write_text("\n\n".join(" ".join(article[j:j + 3]) for j in range(0, len(article), 3)))
        rows.append(f'{{"id": "v{i}", "kind": "text", "uri": "docs/{i}.txt"}}\n')
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(rows))
    db = tmp_path / "s.db"
    before = {m: _rows_executed(server.grpc_url, m) for m in ("sbert_encoder_int8", "ner_encoder_int8")}
    cmd = [str(Path(sys.executable).parent / "tritonrepo"), "ingest", "run", str(manifest), "--store", str(db),
           "--url", server.grpc_url, "--concurrency", "4", "--workers", "4", "--log-file", str(tmp_path / "log")]

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while _done(db) < 10:
        assert proc.poll() is None, "the ingestion finished before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = SqliteStore(db, readonly=True).counts()
    # The server still answers what the dead process had in flight; only once those answers are in the response cache
    # does sending them again cost nothing. A rerun that races them computes their rows twice (seen once: 13 rows, one
    # article, when the rerun started while its request was still queued).
    _wait_until_idle(server.grpc_url)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    store = SqliteStore(db)
    assert at_kill["done"] < 50 and store.counts() == {"pending": 0, "done": 50, "dead": 0}
    chunks = {}
    for asset_id, content_hash in store._db.execute("SELECT id, content_hash FROM assets").fetchall():
        chunks[content_hash] = len(decode_result(ENTITIES, store.results(asset_id)[ENTITIES])["chunks"])
    # rows the encoders executed = chunks of distinct content: requests in flight at the kill were answered by
    # Triton's response cache when sent again
    for model, executed_before in before.items():
        assert _rows_executed(server.grpc_url, model) - executed_before == sum(chunks.values()), model


def test_overload_rejections_slow_the_pipeline_down_instead_of_failing_it(model_repository, tmp_path):
    repo = tmp_path / "repo"
    for name in ("sbert_int8", "sbert_tokenizer", "sbert_encoder_int8"):
        shutil.copytree(model_repository / name, repo / name, ignore=shutil.ignore_patterns("configs"))
    spec = families.spec("sbert_encoder_int8")
    dep = spec.deployment("cpu")
    tight = dataclasses.replace(dep, count=2, batching=dataclasses.replace(dep.batching, max_queue_size=1))
    rendered = render.render_spec(dataclasses.replace(spec, deployments={**spec.deployments, "cpu": tight}))
    (repo / "sbert_encoder_int8" / "config.pbtxt").write_text(rendered["sbert_encoder_int8/config.pbtxt"])
    db = tmp_path / "s.db"
    store = SqliteStore(db)
    store.add(Asset(id=f"s{i}", kind="text", text=t, trace_id=f"t{i}")
              for i, t in enumerate(conll_sentences("valid")[300:500]))
    metrics = IngestMetrics()
    config = IngestConfig(ner_model=None, shots_model=None, concurrency=16, assets_in_flight=32, retry=PATIENT)
    with TritonServer(repo, log_file=tmp_path / "log") as server:
        summary = asyncio.run(ingest(store, dataclasses.replace(config, url=server.grpc_url), metrics=metrics))
    assert summary.counts == {"pending": 0, "done": 200, "dead": 0}
    rejected = metrics.value("ingest_requests_total", model="sbert_int8", outcome="UNAVAILABLE")
    assert rejected > 0 and metrics.value("ingest_retries_total", model="sbert_int8") == rejected
    assert metrics.value("ingest_computed_total") == 200


def test_ray_job_gives_the_pipelines_results_across_two_endpoints(server, tmp_path):
    # `tritonrepo ingest ray` in its own process, as it runs in production (started inside this long, threaded test
    # session, Ray's local node once missed its 30 s start-up window; the cause was not found)
    path, n = sample_manifest(tmp_path / "data", documents=6, captions=6, videos=False, duplicates=2)
    urls = [server.grpc_url, f"localhost:{server.grpc_port}"]  # two endpoints (one server here)
    cmd = [str(Path(sys.executable).parent / "tritonrepo"), "ingest", "ray", str(path), "--store",
           str(tmp_path / "ray.db"), "--url", urls[0], "--url", urls[1], "--actors", "2", "--batch-size", "4",
           "--log-file", str(tmp_path / "log")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    on_ray = SqliteStore(tmp_path / "ray.db")
    assert on_ray.counts() == {"pending": 0, "done": n - 3, "dead": 3}
    per_url = dict(re.findall(r"(\S+:\d+) (\d+)", done.stdout.split("assets per endpoint:")[1]))
    assert set(per_url) == set(urls) and sum(map(int, per_url.values())) == n
    local = SqliteStore(tmp_path / "local.db")
    local.add(read_manifest(path))
    asyncio.run(ingest(local, IngestConfig(url=server.grpc_url, roots=(path.parent,))))
    # int8 activations are quantized per batch, so a text's int8 embedding moves slightly with its batch partners
    # (max |diff| 0.004 seen here when two Ray actors sent the same duplicate at once, each batched differently)
    repeated = {a for (a,) in on_ray._db.execute(
        "SELECT id FROM assets WHERE content_hash IN (SELECT content_hash FROM assets GROUP BY content_hash "
        "HAVING COUNT(*) > 1)")}
    for (asset_id,) in local._db.execute("SELECT id FROM assets WHERE status = 'done'").fetchall():
        mine, theirs = local.results(asset_id), on_ray.results(asset_id)
        assert sorted(mine) == sorted(theirs) == [EMBED, ENTITIES]
        a, b = decode_result(EMBED, theirs[EMBED]), decode_result(EMBED, mine[EMBED])
        assert a.shape == b.shape and (a * b).sum(axis=1).min() > 0.999
        if asset_id not in repeated:  # content sent once per run: one computation, shared through Triton's cache
            assert decode_result(ENTITIES, theirs[ENTITIES]) == decode_result(ENTITIES, mine[ENTITIES])
            np.testing.assert_array_equal(a, b)


def test_urls_are_fetched_and_http_errors_are_dead_lettered_or_retried(server, tmp_path):
    import functools
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/busy.txt":  # a flaky origin: always 503
                self.send_error(503, "busy")
            else:
                super().do_GET()

        def log_message(self, *args):
            pass

    text = "Reuters reports that Fiat shares rose in Milan on Friday."
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "article.txt").write_text(text)
    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                  functools.partial(Handler, directory=str(tmp_path / "www")))
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{http_server.server_address[1]}"
    store = SqliteStore(tmp_path / "s.db")
    store.add([Asset(id=name, kind="text", uri=f"{base}/{name}.txt", trace_id=name)
               for name in ("article", "missing", "busy")])
    metrics = IngestMetrics()
    config = IngestConfig(url=server.grpc_url, shots_model=None, retry=RetryPolicy(attempts=3, backoff_s=0.01),
                          allow_hosts=("127.0.0.1",))  # a local origin: loopback is refused unless allowed
    try:
        summary = asyncio.run(ingest(store, config, metrics=metrics))
    finally:
        http_server.shutdown()
    assert summary.counts == {"pending": 1, "done": 1, "dead": 1}
    result = decode_result(ENTITIES, store.results("article")[ENTITIES])
    assert " ".join(text[a:b] for a, b in result["chunks"]) == text  # the fetched body, whole
    with NerClient(server.grpc_url, "ner_int8") as ner:  # and the model's answer for it
        assert [(e["type"], e["start"], e["end"]) for e in result["entities"]] == [
            (e.type, e.start, e.end) for e in ner.entities([text])[0]]
    assert "HTTP 404" in dict((a, e) for a, _, e in store.dead_letters())["missing"]
    assert metrics.value("ingest_retries_total", model="fetch") == 2  # 503 is retried, then left pending
    error = store._db.execute("SELECT error FROM assets WHERE id = 'busy'").fetchone()[0]
    assert "HTTP 503" in error


def _origin(routes: dict[str, tuple[int, dict, bytes]]):
    """A local HTTP origin on 127.0.0.1: path -> (status, headers, body)."""
    class Handler(Origin):
        def do_GET(self):
            status, headers, body = routes.get(self.path.partition("?")[0], (404, {}, b"no"))
            self.send(status, body, **headers)

    return serve(Handler)


def test_a_manifest_mixing_good_assets_with_refused_paths_and_addresses_completes(server, tmp_path):
    """`tritonrepo ingest run` as deployed: the good assets are ingested; each path outside the manifest folder and
    the --allow-root, each address that is not public (directly, by name, through a redirect) and inline text over
    8 MiB is dead-lettered with the rule it broke, and no URL's query reaches the log or the output."""
    data, extra, outside = tmp_path / "data", tmp_path / "extra", tmp_path / "outside"
    for d in (data / "docs", extra, outside):
        d.mkdir(parents=True)
    articles = [" ".join(a) for a in conll_articles("valid")[60:64]]
    (data / "docs" / "good.txt").write_text(articles[0])
    (extra / "extra.txt").write_text(articles[1])
    (outside / "secret.txt").write_text("Credentials of Acme Corp in London.")
    (data / "docs" / "escape.txt").symlink_to(outside / "secret.txt")
    origin = _origin({"/article.txt": (200, {}, articles[2].encode()),
                      "/metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b"")})
    base, name = f"http://127.0.0.1:{origin.server_address[1]}", f"http://localhost:{origin.server_address[1]}"
    rows = [{"id": "good-doc", "kind": "text", "uri": "docs/good.txt"},
            {"id": "good-inline", "kind": "text", "text": articles[3]},
            {"id": "good-allowed-root", "kind": "text", "uri": str(extra / "extra.txt")},
            {"id": "good-url", "kind": "text", "uri": f"{base}/article.txt?X-Amz-Signature=s3cr3t"},
            {"id": "bad-dots", "kind": "text", "uri": "../outside/secret.txt"},
            {"id": "bad-absolute", "kind": "text", "uri": "/etc/passwd"},
            {"id": "bad-file-uri", "kind": "text", "uri": (outside / "secret.txt").as_uri()},
            {"id": "bad-symlink", "kind": "text", "uri": "docs/escape.txt"},
            {"id": "bad-loopback-name", "kind": "text", "uri": f"{name}/article.txt?X-Amz-Signature=s3cr3t"},
            {"id": "bad-redirect", "kind": "text", "uri": f"{base}/metadata?token=s3cr3t"},
            {"id": "bad-huge-text", "kind": "text", "text": "Reuters " * (1 << 20) + "."}]
    manifest = data / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db, log = tmp_path / "s.db", tmp_path / "log.jsonl"
    cmd = [str(Path(sys.executable).parent / "tritonrepo"), "ingest", "run", str(manifest), "--store", str(db),
           "--url", server.grpc_url, "--allow-root", str(extra), "--allow-host", "127.0.0.1", "--log-file", str(log)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    finally:
        origin.shutdown()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    store = SqliteStore(db)
    assert store.counts() == {"pending": 0, "done": 4, "dead": 7}
    assert all(EMBED in store.results(a) for a in ("good-doc", "good-inline", "good-allowed-root", "good-url"))
    dead = {asset_id: error for asset_id, _, error in store.dead_letters()}
    for asset_id in ("bad-dots", "bad-absolute", "bad-file-uri", "bad-symlink"):
        assert "is outside the manifest folder and every --allow-root" in dead[asset_id], dead[asset_id]
    assert "path /etc/passwd is outside" in dead["bad-absolute"]
    assert "resolves to" in dead["bad-symlink"] and "resolves to" in dead["bad-dots"]
    assert "localhost resolves to" in dead["bad-loopback-name"] and "a loopback address" in dead["bad-loopback-name"]
    assert "redirected to http://169.254.169.254/latest/meta-data/" in dead["bad-redirect"]
    assert "a link-local address" in dead["bad-redirect"]
    assert "over the 8388608-byte (8 MiB) limit for text" in dead["bad-huge-text"]
    assert store._db.execute("SELECT MAX(attempts) FROM assets").fetchone()[0] == 1  # refusals are not retried
    for text in (done.stdout, log.read_text(), json.dumps(dead)):
        assert "s3cr3t" not in text
    assert "dead: bad-loopback-name" in done.stdout and "/article.txt?…" in done.stdout


def test_a_large_local_video_streams_from_disk_in_segments(server, tmp_path):
    """A local video over the request limit is never read whole: ffmpeg cuts it from disk and one segment at a time
    goes through the live model, in the client and in the pipeline."""
    (tmp_path / "data").mkdir()
    video = tmp_path / "data" / "long.mp4"  # bikes.mp4 eight times: 80 s, 2,000 frames, ~4 MB
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "7", "-i", str(VIDEO_DIR / "bikes.mp4"), "-c", "copy",
                    str(video)], check=True)
    size = video.stat().st_size
    tracemalloc.start()
    try:
        with ShotClient(server.grpc_url, max_request_bytes=size // 8) as client:
            segmented = client.shots(video)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert segmented.frames == 2000 and segmented.shots[-1].end_frame == 1999
    assert peak < size / 4, f"peak {peak} bytes of Python memory for a {size}-byte file"

    store = SqliteStore(tmp_path / "s.db")
    store.add([Asset(id="long", kind="video", uri=str(video), trace_id="t-long")])
    config = IngestConfig(url=server.grpc_url, roots=(tmp_path / "data",), max_fetch_bytes=size // 8)
    assert asyncio.run(ingest(store, config)).counts["done"] == 1
    shots = decode_result(SHOTS, store.results("long")[SHOTS])
    assert shots["frames"] == 2000
    assert [(s["start_frame"], s["end_frame"]) for s in shots["shots"]] == \
        [(s.start_frame, s.end_frame) for s in segmented.shots]
