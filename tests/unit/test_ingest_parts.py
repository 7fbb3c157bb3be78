"""The ingestion pipeline's parts without a server: manifest, chunking, ledger/cache store, adaptive limit, traces."""

import asyncio
import json
import multiprocessing
import os
import signal
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tritonrepo.services.ingest import AdaptiveLimit, chunk_spans, read_manifest
from tritonrepo.services.metrics import follow_trace
from tritonrepo.services.store import DEAD, DONE, PENDING, Asset, Outcome, SqliteStore
from tritonrepo.errors import InvalidInputError


def _manifest(tmp_path, *rows) -> str:
    path = tmp_path / "m.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_manifest_resolves_relative_paths_and_keeps_given_trace_ids(tmp_path):
    path = _manifest(tmp_path, {"id": "a", "kind": "text", "uri": "docs/a.txt", "trace_id": "t-1"}, "",
                     {"kind": "video", "uri": "https://example.org/v.mp4"}, {"id": "c", "kind": "text", "text": "hi"})
    a, v, c = read_manifest(path)
    assert a.uri == str(tmp_path / "docs" / "a.txt") and a.trace_id == "t-1"
    assert v.id == v.uri == "https://example.org/v.mp4" and len(v.trace_id) == 16
    assert c.text == "hi" and c.uri is None


@pytest.mark.parametrize("row, message", [
    ("{not json", r"m.jsonl:1: not JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"id": "x", "kind": "audio", "uri": "a.wav"}, "kind must be one of"),
    ({"id": "x", "kind": "text"}, "exactly one of uri or text"),
    ({"id": "x", "kind": "video", "text": "words"}, "videos and images need a uri"),
    ({"id": "x", "kind": "image", "text": "words"}, "videos and images need a uri"),
    ({"id": "x", "kind": "text", "text": "a", "lang": "en"}, r"unknown fields \['lang'\]"),
])
def test_manifest_errors_name_the_line_and_the_problem(tmp_path, row, message):
    with pytest.raises(InvalidInputError, match=message):
        list(read_manifest(_manifest(tmp_path, row)))


def test_manifest_rejects_duplicate_ids_with_their_line(tmp_path):
    path = _manifest(tmp_path, {"id": "x", "kind": "text", "text": "a"}, {"id": "x", "kind": "text", "text": "b"})
    with pytest.raises(InvalidInputError, match=r"m.jsonl:2: duplicate id 'x'"):
        list(read_manifest(path))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab .!?\n\té"), max_size=3000), st.integers(5, 600))
def test_chunks_cover_every_word_in_order_within_the_limit(text, max_chars):
    spans = chunk_spans(text, max_chars)
    assert all(0 <= a < b <= len(text) and b - a <= max_chars for a, b in spans)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))
    covered = "".join(text[a:b] for a, b in spans)
    assert "".join(covered.split()) == "".join(text.split())  # nothing but whitespace is left out
    assert all(text[a:b] == text[a:b].lstrip() for a, b in spans)


def test_chunks_pack_whole_sentences():
    text = "One two. Three four! " * 3 + "\n\nNew paragraph here."
    spans = chunk_spans(text, 45)
    assert [text[a:b] for a, b in spans] == ["One two. Three four! One two. Three four!",
                                            "One two. Three four!", "New paragraph here."]
    assert chunk_spans("") == [] and chunk_spans("   \n\n ") == []


def _asset(i: int, kind: str = "text") -> Asset:
    return Asset(id=f"a{i}", kind=kind, text=f"text {i}", trace_id=f"t{i}")


def test_store_ledger_moves_assets_and_keeps_one_result_per_content_and_task(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    assert store.add([_asset(i) for i in range(5)]) == 5
    assert store.add([_asset(0), _asset(5)]) == 1  # known ids are left as they are
    store.record(Outcome(_asset(0), "h0", {"embed:m@1": b"v0", "entities:n@1": b"e0"}))
    store.record(Outcome(_asset(1), "h0", {"embed:m@1": b"other", "entities:n@1": b"e0"}))  # same content
    store.record(Outcome(_asset(2), "h2", error="InvalidInputError: bad", permanent=True))
    store.record(Outcome(_asset(3), "h3", error="ServerUnavailableError: down"))
    assert store.counts() == {PENDING: 3, DONE: 2, DEAD: 1}
    assert [a.id for a in store.pending()] == ["a3", "a4", "a5"]
    assert [a.id for a in store.pending(retry_dead=True)] == ["a2", "a3", "a4", "a5"]
    assert store.results("a1") == {"embed:m@1": b"v0", "entities:n@1": b"e0"}  # first result stored is kept
    assert store.cached("h0", "embed:m@2") is None  # another model version is another key
    assert store.dead_letters() == [("a2", "inline text", "InvalidInputError: bad")]
    assert store._db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2


def test_paid_captions_are_cached_whatever_befalls_their_asset(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    store.add([Asset(id="v", kind="video", uri="v.mp4", trace_id="t")])
    store.put("k1", "caption:p/m@v1", b'{"paid": 1}')  # the asyncio pipeline: written at once
    failed = Outcome(Asset(id="v", kind="video", uri="v.mp4"), content_hash="h", error="ClientError: timeout",
                     extra=[("k2", "caption:p/m@v1", b'{"paid": 2}')])  # Ray: travels with the next outcome
    store.record(failed)
    assert store.counts()[PENDING] == 1 and store.cached("k2", "caption:p/m@v1") == b'{"paid": 2}'
    assert [(h, t) for h, t, _ in store.results_of("caption:")] == [("k1", "caption:p/m@v1"), ("k2", "caption:p/m@v1")]
    assert list(store.results_of("captions:")) == []


def test_store_pending_pages_through_a_long_ledger_while_it_changes(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    store.add(_asset(i) for i in range(2500))
    seen = []
    for asset in store.pending(page=100):
        seen.append(asset.id)
        store.record(Outcome(asset, asset.id, {"k": b"v"}))
    assert len(seen) == len(set(seen)) == 2500 and store.counts()[DONE] == 2500


def _record_forever(path: str) -> None:
    store = SqliteStore(path)
    for asset in store.pending():
        store.record(Outcome(asset, f"h{asset.id}", {"embed:m@1": os.urandom(2000), "entities:n@1": b"[]"}))


def test_store_killed_at_any_moment_leaves_each_asset_done_with_results_or_pending(tmp_path):
    path = tmp_path / "s.db"
    SqliteStore(path).add(_asset(i) for i in range(20000))
    proc = multiprocessing.get_context("spawn").Process(target=_record_forever, args=(str(path),))
    proc.start()
    store = SqliteStore(path, readonly=True)
    while store.counts()[DONE] < 300 and proc.is_alive():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    store = SqliteStore(path)
    counts = store.counts()
    assert 300 <= counts[DONE] < 20000 and counts[DONE] + counts[PENDING] == 20000
    done = store._db.execute("SELECT id, content_hash, tasks FROM assets WHERE status = 'done'").fetchall()
    for asset_id, content_hash, tasks in done:
        assert json.loads(tasks) == ["embed:m@1", "entities:n@1"]
        assert all(store.cached(content_hash, t) is not None for t in json.loads(tasks))
    orphans = store._db.execute("SELECT COUNT(*) FROM results r JOIN assets a ON a.content_hash = r.content_hash "
                                "WHERE a.status != 'done'").fetchone()[0]
    assert orphans == 0  # results and status are written in one transaction


def test_adaptive_limit_halves_on_overload_and_grows_back():
    changes = []
    limit = AdaptiveLimit(16, cooldown_s=0.0, on_change=changes.append)
    limit.overloaded()
    limit.overloaded()
    assert limit.limit == 4
    for _ in range(4):
        limit.succeeded()
    assert limit.limit == 5 and changes == [16, 8, 4, 5]
    for _ in range(10):
        limit.overloaded()
    assert limit.limit == 1
    slow = AdaptiveLimit(16, cooldown_s=60)
    slow.overloaded()
    slow.overloaded()  # within the cooldown: one burst of rejections halves once
    assert slow.limit == 8


def test_adaptive_limit_bounds_requests_in_flight():
    async def main():
        limit = AdaptiveLimit(3)
        peak = 0

        async def one():
            nonlocal peak
            async with limit:
                peak = max(peak, limit.in_flight)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one() for _ in range(30)))
        return peak, limit.in_flight

    assert asyncio.run(main()) == (3, 0)


def test_trace_follows_one_request_id_across_ensemble_steps_and_numbered_parts(tmp_path):
    def entries(i, model, rid, parent=None, stamps=()):
        head = {"id": i, "model_name": model, "model_version": 1, "request_id": rid}
        if parent:
            head["parent_id"] = parent
        return [head] + [{"id": i, "timestamps": [{"name": n, "ns": ns}]} for n, ns in stamps]

    full = [("REQUEST_START", 0), ("QUEUE_START", 10), ("COMPUTE_START", 1010), ("COMPUTE_END", 5010),
            ("REQUEST_END", 5100)]
    (tmp_path / "trace.json.0").write_text(json.dumps(
        entries(1, "sbert_int8", "t-1", stamps=[("REQUEST_START", 0), ("REQUEST_END", 6000)])
        + entries(2, "sbert_tokenizer", "t-1", 1, full) + entries(9, "sbert_int8", "other", stamps=full)))
    (tmp_path / "trace.json.1").write_text(json.dumps(
        entries(3, "sbert_encoder_int8", "t-1", 1, [(n, ns + 100) for n, ns in full])
        + entries(4, "ner_int8", "t-1", stamps=[("REQUEST_START", 50), ("QUEUE_START", 50), ("REQUEST_END", 90)])))
    (tmp_path / "trace.json.2").write_text("[{\"id\": 5, ")  # a part being written
    spans = follow_trace(tmp_path / "trace.json", "t-1")
    assert [(s.model, s.parent) for s in spans] == [("sbert_int8", None), ("sbert_tokenizer", 1),
                                                   ("ner_int8", None), ("sbert_encoder_int8", 1)]
    tok = spans[1]
    assert (tok.queue_us, tok.compute_us, tok.total_us, tok.cache_hit) == (1.0, 4.0, 5.1, False)
    assert spans[2].cache_hit and not spans[0].cache_hit  # answered without compute; the ensemble has steps
