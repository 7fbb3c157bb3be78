"""Captions in ingestion, against the real tritonserver (shots, SBERT) and a local server speaking the OpenAI wire
format (tests/fake_openai.py: its texts say they are not a model's output). Real footage: spliced clips in H.264 and
their VP9 encode (the same shots from another source), bikes.mp4, frames of it as photos."""

import asyncio
import collections
import json
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from fake_openai import KEY, FakeOpenAI
from tritonrepo import shots_eval
from tritonrepo.cli import app
from tritonrepo.clients.grpc_core import RetryPolicy
from tritonrepo.services.captions import CaptionConfig, Price, jpeg, keyframes
from tritonrepo.clients.embedding import EmbeddingClient
from tritonrepo.services.ingest import IngestConfig, caption_costs, decode_result, ingest, read_manifest
from tritonrepo.services.metrics import IngestMetrics
from tritonrepo.services.store import SqliteStore
from tritonrepo.paths import RUNS, VIDEO_DIR

pytestmark = pytest.mark.server
PRICE = Price(0.15, 0.60, "test price")
SHOTS = "shots:video_shots@1"


@pytest.fixture(scope="module")
def media(transnet_artifacts, tmp_path_factory):
    d = tmp_path_factory.mktemp("caption-media")
    spliced = {v.codec: v.path for v in shots_eval.build(RUNS / "spliced", joins=24)}
    frame = keyframes(VIDEO_DIR / "bikes.mp4", [10], max_side=640)[10]
    (d / "bikes10.jpg").write_bytes(jpeg(frame, quality=95))
    (d / "bikes10-small.jpg").write_bytes(jpeg(frame[::2, ::2].copy(), quality=50))  # the same photo, resized
    (d / "carphone.png").write_bytes(subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(VIDEO_DIR / "carphone_pristine.mp4"), "-frames:v", "1", "-f", "image2",
         "-c:v", "png", "pipe:"], capture_output=True, check=True).stdout)
    (d / "not-an-image.jpg").write_bytes(b"<html>404 Not Found</html>")
    rows = [{"id": "spliced-h264", "kind": "video", "uri": str(spliced["h264"])},
            {"id": "spliced-vp9", "kind": "video", "uri": str(spliced["vp9"])},
            {"id": "bikes", "kind": "video", "uri": str(VIDEO_DIR / "bikes.mp4")},
            {"id": "photo", "kind": "image", "uri": "bikes10.jpg"},
            {"id": "photo-resized", "kind": "image", "uri": "bikes10-small.jpg"},
            {"id": "photo-again", "kind": "image", "uri": "bikes10.jpg"},
            {"id": "carphone", "kind": "image", "uri": "carphone.png"},
            {"id": "bad-image", "kind": "image", "uri": "not-an-image.jpg"}]
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "manifest.jsonl"


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("TEST_CAPTION_KEY", KEY)
    server = FakeOpenAI(limit_per_s=4)  # the provider's own limit, below the client's: a 429 storm
    yield server
    server.close()


def _config(url, fake, media) -> IngestConfig:
    captions = CaptionConfig(base_url=fake.base_url, model="test-vision", provider="fake", price=PRICE,
                             api_key_env="TEST_CAPTION_KEY", requests_per_minute=600, concurrency=8, timeout_s=2.0,
                             retry=RetryPolicy(attempts=20, backoff_s=0.1, max_backoff_s=1.0))
    # the manifest names the spliced clips and bikes.mp4 where they were built or installed: allowed roots
    return IngestConfig(url=url, ner_model=None, captions=captions, retry=RetryPolicy(attempts=5),
                        roots=(media.parent, RUNS / "spliced", VIDEO_DIR))


def test_every_shot_and_photo_is_captioned_once_embedded_and_costed(triton, media, fake, tmp_path):
    fake.faults.extend(["500", "malformed", "timeout"])
    store = SqliteStore(tmp_path / "ingest.db")
    store.add(read_manifest(media))
    metrics = IngestMetrics()
    summary = asyncio.run(ingest(store, _config(triton.grpc_url, fake, media), metrics=metrics))
    assert summary.counts == {"pending": 0, "done": 7, "dead": 1}
    [(bad, _, error)] = store.dead_letters()
    assert bad == "bad-image" and "not an image" in error

    task = next(t for t in store.results("photo") if t.startswith("captions:"))
    assert task == "captions:fake/test-vision@v1+sbert_int8@1"
    results = {a: decode_result(task, store.results(a)[task]) for a in
               ("spliced-h264", "spliced-vp9", "bikes", "photo", "photo-resized", "photo-again", "carphone")}
    # one caption per shot, at its middle frame
    for video in ("spliced-h264", "spliced-vp9", "bikes"):
        shots = json.loads(store.results(video)[SHOTS])["shots"]
        items = results[video]["items"]
        assert len(items) == len(shots) > 1
        assert [i["frame"] for i in items] == [(s["start_frame"] + s["end_frame"]) // 2 for s in shots]
    # every keyframe was paid for at most once, and only those that were neither cached nor near-identical
    distinct = [r for a, r in results.items() if a != "photo-again"]  # the same bytes as "photo": one result
    paid = [i for r in distinct for i in r["items"] if i["source"] == "paid"]
    ok = fake.ok()
    assert len(ok) == len(paid) == len({r.image_sha256 for r in ok})
    assert {r.image_sha256 for r in ok} == {i["keyframe_sha256"] for i in paid}
    sources = collections.Counter(i["source"] for r in distinct for i in r["items"])
    assert sources["phash"] >= 10, sources  # the VP9 encode's shots reuse the H.264 captions
    assert {results[p]["items"][0]["source"] for p in ("photo", "photo-resized")} == {"paid", "phash"}
    assert results["photo-again"]["items"] == results["photo"]["items"]  # the same bytes: one result
    assert all(i["caption"].startswith("[fake-openai test server") for r in results.values() for i in r["items"])
    # a 429 storm was ridden out, transient failures were retried
    assert any(r.status == 429 for r in fake.requests)
    assert metrics.value("ingest_caption_requests_total", outcome="500") == 1
    # captions come back with their served SBERT embeddings (int8: the batch a text shares moves the last digits)
    with EmbeddingClient(triton.grpc_url, "sbert_int8") as client:
        for r in results.values():
            served = client.embed([i["caption"] for i in r["items"]])
            assert r["embeddings"].shape == served.shape and (np.sum(r["embeddings"] * served, axis=1) > 0.999).all()
    # the cost report adds up: per caption, per asset, and against what the provider counted
    costs = caption_costs(store)
    [(key, paid_total)] = costs["paid"].items()
    assert key == "caption:fake/test-vision@v1" and paid_total["captions"] == len(ok)
    assert paid_total["tokens_in"] == sum(r.tokens_in for r in ok)
    assert paid_total["tokens_out"] == sum(r.tokens_out for r in ok)
    provider_usd = sum(r.tokens_in * PRICE.input_per_mtok + r.tokens_out * PRICE.output_per_mtok for r in ok) / 1e6
    assert costs["total_usd"] == pytest.approx(provider_usd) == pytest.approx(costs["assets_usd"])
    assert metrics.value("ingest_caption_usd_total") == pytest.approx(provider_usd)
    report = CliRunner().invoke(app, ["ingest", "costs", "--store", str(tmp_path / "ingest.db")])
    assert report.exit_code == 0 and f"total US$ {provider_usd:.6f} paid" in report.output

    print(f"\ncaption run: {summary.seconds:.1f} s, items {sum(sources.values())} {dict(sources)}, requests "
          f"{len(fake.requests)} ({sum(r.status == 429 for r in fake.requests)} x 429), shots per video "
          f"{[len(results[v]['items']) for v in ('spliced-h264', 'spliced-vp9', 'bikes')]}, tokens "
          f"{paid_total['tokens_in']}/{paid_total['tokens_out']}, US$ {costs['total_usd']:.6f}")
    # a second run sends nothing; new assets with the same content are served from the cache
    sent = len(fake.requests)
    asyncio.run(ingest(store, _config(triton.grpc_url, fake, media)))
    again = media.parent / "again.jsonl"
    again.write_text("".join(json.dumps({**json.loads(line), "id": "again-" + json.loads(line)["id"]}) + "\n"
                             for line in media.read_text().splitlines()))
    store.add(read_manifest(again))
    summary = asyncio.run(ingest(store, _config(triton.grpc_url, fake, media)))
    assert summary.counts["done"] == 14 and len(fake.requests) == sent


def test_a_refused_key_stops_the_run_and_leaves_assets_pending(triton, media, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_CAPTION_KEY", "revoked")
    store = SqliteStore(tmp_path / "ingest.db")
    store.add(read_manifest(media))
    with pytest.raises(Exception, match="401.*TEST_CAPTION_KEY"):
        asyncio.run(ingest(store, _config(triton.grpc_url, fake, media)))
    assert store.counts()["done"] == 0 and store.counts()["pending"] >= 7
