"""Ingestion's safety rules without a server: manifest paths stay in their folders, URL fetches refuse non-public
addresses (after DNS, on every redirect) and stop at a deadline and a size cap, credentials in URL queries never
reach logs or dead letters, inline text has a cap, the metrics port binds loopback."""

import asyncio
import http.server
import inspect
import json
import logging
import threading
import time

import pytest
from http_origin import Origin, serve
from typer.testing import CliRunner

from tritonrepo.cli import app
from tritonrepo.services.fetch import FetchError, address_kind, confine, fetch_url, local_path, redact
from tritonrepo.services.ingest import IngestConfig, JsonFormatter, Processor, Task, read_manifest
from tritonrepo.services.metrics import IngestMetrics
from tritonrepo.services.store import Asset, SqliteStore
from tritonrepo.ingest_cli import ingest_run

SECRET = "X-Amz-Signature=s3cr3t"


# ---- paths ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path):
    """A manifest folder with a document, a symlink inside pointing inside, one pointing outside, and a file outside."""
    inside, outside = tmp_path.resolve() / "manifest", tmp_path.resolve() / "elsewhere"
    (inside / "docs").mkdir(parents=True)
    outside.mkdir()
    (inside / "docs" / "a.txt").write_text("Reuters reports from Milan.")
    (outside / "secret.txt").write_text("not for ingestion")
    (inside / "docs" / "alias.txt").symlink_to(inside / "docs" / "a.txt")
    (inside / "docs" / "escape.txt").symlink_to(outside / "secret.txt")
    return inside, outside


def test_paths_are_confined_to_the_roots_after_resolving_dots_and_symlinks(folders):
    inside, outside = folders
    assert confine(inside / "docs" / "a.txt", [inside]) == inside / "docs" / "a.txt"
    assert confine(inside / "docs" / "alias.txt", [inside]) == inside / "docs" / "a.txt"  # a link that stays inside
    assert confine(inside / "docs" / "missing.txt", [inside]) == inside / "docs" / "missing.txt"  # fails at reading
    for path in (inside / ".." / "elsewhere" / "secret.txt", outside / "secret.txt", inside / "docs" / "escape.txt"):
        with pytest.raises(FetchError, match="is outside the manifest folder and every --allow-root") as e:
            confine(path, [inside])
        assert e.value.permanent
    with pytest.raises(FetchError, match=r"escape.txt \(resolves to .*elsewhere/secret.txt\)"):
        confine(inside / "docs" / "escape.txt", [inside])
    assert confine(inside / "docs" / "escape.txt", [inside, outside]) == outside / "secret.txt"  # --allow-root
    with pytest.raises(FetchError, match="allowed: none"):
        confine(inside / "docs" / "a.txt", [])


def test_file_uris_name_local_paths_under_the_same_rule(folders):
    inside, outside = folders
    assert local_path((inside / "docs" / "a.txt").as_uri()) == inside / "docs" / "a.txt"
    assert local_path("file://localhost/etc/passwd") == local_path("file:///etc/passwd")
    assert local_path("file:///tmp/with%20space.txt").name == "with space.txt"
    with pytest.raises(FetchError, match="outside the manifest folder"):
        confine(local_path("file:///etc/passwd"), [inside])
    with pytest.raises(FetchError, match="not one on host 'fileserver'"):
        local_path("file://fileserver/share/a.txt")
    with pytest.raises(FetchError, match="only local paths, file://, http:// and https://"):
        local_path("s3://bucket/key?" + SECRET)


def _processor(config: IngestConfig, store: SqliteStore) -> Processor:
    """A processor whose task list says what the server would serve; the assets here never reach a model."""
    p = Processor(config, store)
    p.tasks = {"text": [Task("embed", "sbert_int8", "1")], "video": [Task("shots", "video_shots", "1")],
               "image": []}
    return p


def _process(config: IngestConfig, store: SqliteStore, assets: list[Asset]):
    async def main():
        p = _processor(config, store)
        try:
            return [await p.process(a) for a in assets]
        finally:
            await p.close()
    return asyncio.run(main())


def test_refused_paths_are_dead_lettered_with_the_rule_and_others_go_on(folders, tmp_path):
    inside, outside = folders
    rows = [{"id": "dots", "kind": "text", "uri": "../elsewhere/secret.txt"},
            {"id": "absolute", "kind": "text", "uri": str(outside / "secret.txt")},
            {"id": "file-uri", "kind": "text", "uri": (outside / "secret.txt").as_uri()},
            {"id": "symlink", "kind": "text", "uri": "docs/escape.txt"},
            {"id": "etc", "kind": "text", "uri": "/etc/passwd"},
            {"id": "missing", "kind": "text", "uri": "docs/missing.txt"}]
    (inside / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = SqliteStore(tmp_path / "s.db")
    store.add(read_manifest(inside / "m.jsonl"))
    outcomes = _process(IngestConfig(roots=(inside,)), store, list(store.pending()))
    for o in outcomes:
        store.record(o)
    assert store.counts() == {"pending": 0, "done": 0, "dead": 6}
    dead = {a: e for a, _, e in store.dead_letters()}
    for asset_id in ("dots", "absolute", "file-uri", "symlink"):
        assert f"{outside / 'secret.txt'} is outside" in dead[asset_id] or "resolves to" in dead[asset_id]
        assert "outside the manifest folder and every --allow-root" in dead[asset_id]
    assert "path /etc/passwd is outside the manifest folder" in dead["etc"]
    assert "No such file" in dead["missing"]  # inside the folder: an ordinary missing file


def test_inline_text_over_8_mib_is_dead_lettered_naming_the_limit(tmp_path):
    store = SqliteStore(tmp_path / "s.db")
    big = Asset(id="big", kind="text", text="x" * ((8 << 20) + 1), trace_id="t")
    [outcome] = _process(IngestConfig(), store, [big])
    assert outcome.permanent and "inline text of 8388609 bytes is over the 8388608-byte (8 MiB) limit" in outcome.error


# ---- addresses -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ip, kind", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.1.2.3", "private"), ("2002:7f00:1::", "loopback"),  # 6to4
    ("169.254.169.254", "link-local"), ("fe80::1%1", "link-local"), ("10.0.0.1", "private"),
    ("172.16.5.4", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"), ("224.0.0.251", "multicast"),
    ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-global"), ("8.8.8.8", None), ("::ffff:8.8.8.8", None), ("2606:4700:4700::1111", None),
])
def test_addresses_are_classified_ipv4_inside_ipv6_included(ip, kind):
    assert address_kind(ip) == kind


class _Origin(Origin):
    """/ok: a body; /redirect?to=URL: 302 there; /loop: redirects to itself; /drip: a body a byte at a time; /slow-
    head: headers a byte at a time; /big: 5000 bytes announced; /stream-big: 5000 bytes without Content-Length;
    /missing: 404; /busy: 503."""

    def do_GET(self):
        path, _, query = self.path.partition("?")
        try:
            if path == "/ok":
                self.send(200, b"hello from the origin")
            elif path == "/redirect":
                self.send(302, b"", Location=query.removeprefix("to="))
            elif path == "/loop":
                self.send(302, b"", Location="/loop")
            elif path == "/drip":
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.02)
            elif path == "/slow-head":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for _ in range(1000):
                    self.wfile.write(b"X")
                    self.wfile.flush()
                    time.sleep(0.02)
            elif path == "/big":
                self.send(200, b"y" * 5000)
            elif path == "/stream-big":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"y" * 5000)
                self.close_connection = True
            else:
                self.send(503 if path == "/busy" else 404, b"no")
        except OSError:  # the client hung up (deadline, size cap)
            pass


@pytest.fixture(scope="module")
def origin():
    server = serve(_Origin)
    yield server.server_address[1]
    server.shutdown()


def _get(url: str, *, allow=("127.0.0.1",), limit=2000, deadline_s=5.0) -> bytes:
    return fetch_url(url, limit=limit, deadline_s=deadline_s, timeout_s=5.0, allow_hosts=allow)


def test_loopback_is_refused_unless_the_host_is_allowed_by_name(origin):
    url = f"http://127.0.0.1:{origin}/ok"
    assert _get(url) == b"hello from the origin"
    with pytest.raises(FetchError, match=r"127.0.0.1 is a loopback address.*--allow-host 127.0.0.1") as e:
        _get(url, allow=())
    assert e.value.permanent
    # a name that resolves to loopback is judged by its addresses; allowing the IP does not allow the name
    with pytest.raises(FetchError, match=r"localhost resolves to (127.0.0.1|::1), a loopback address"):
        _get(f"http://localhost:{origin}/ok")
    assert _get(f"http://localhost:{origin}/ok", allow=("LOCALHOST.",)) == b"hello from the origin"


def test_every_redirect_is_checked_again(origin):
    base = f"http://127.0.0.1:{origin}"
    assert _get(f"{base}/redirect?to=/ok") == b"hello from the origin"
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"redirected to http://169.254.169.254/latest/meta-data.*link-local"):
        _get(f"{base}/redirect?to=http://169.254.169.254/latest/meta-data")
    assert time.monotonic() - start < 1.0  # refused before any connection was tried
    with pytest.raises(FetchError, match=r"redirected to http://localhost:\d+/ok.*localhost resolves to"):
        _get(f"{base}/redirect?to=http://localhost:{origin}/ok")
    with pytest.raises(FetchError, match="more than 5 redirects"):
        _get(f"{base}/loop")
    with pytest.raises(FetchError, match="only http:// and https://"):
        _get(f"{base}/redirect?to=file:///etc/passwd")


def test_the_deadline_covers_the_whole_download_not_each_read(origin):
    for path in ("/drip", "/slow-head"):  # every read is quick; the whole would take 20 s
        start = time.monotonic()
        with pytest.raises(FetchError, match=r"not complete within the 1 s deadline .*--fetch-deadline") as e:
            _get(f"http://127.0.0.1:{origin}{path}", deadline_s=1.0)
        assert e.value.permanent and time.monotonic() - start < 2.0, path


def test_the_size_cap_holds_with_and_without_content_length(origin):
    with pytest.raises(FetchError, match="Content-Length 5000 is over the 2000-byte limit"):
        _get(f"http://127.0.0.1:{origin}/big")
    with pytest.raises(FetchError, match="over the 2000-byte limit"):
        _get(f"http://127.0.0.1:{origin}/stream-big")
    assert len(_get(f"http://127.0.0.1:{origin}/stream-big", limit=5000)) == 5000


def test_http_errors_are_permanent_or_retriable_and_never_show_the_query(origin):
    with pytest.raises(FetchError, match=r"GET http://127.0.0.1:\d+/missing\?…: HTTP 404") as e:
        _get(f"http://127.0.0.1:{origin}/missing?{SECRET}")
    assert e.value.permanent and "s3cr3t" not in str(e.value)
    with pytest.raises(FetchError, match="HTTP 503") as e:
        _get(f"http://127.0.0.1:{origin}/busy")
    assert not e.value.permanent


# ---- credentials in URLs -------------------------------------------------------------------------------------------


def test_redact_keeps_scheme_host_and_path_only():
    assert redact(f"https://user:pw@bucket.s3.example.com:8443/v/1.mp4?{SECRET}#t=3") == \
        "https://bucket.s3.example.com:8443/v/1.mp4?…"
    assert redact("https://example.org/a.mp4") == "https://example.org/a.mp4"
    assert redact("/data/a?b.txt") == "/data/a?b.txt" and redact(None) is None  # paths are not URLs


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


def test_signed_urls_reach_neither_ids_nor_logs_nor_dead_letters(tmp_path):
    rows = [{"kind": "video", "uri": f"https://127.0.0.1:1/v.mp4?{SECRET}"},
            {"kind": "video", "uri": "https://127.0.0.1:1/v.mp4?X-Amz-Signature=other"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = SqliteStore(tmp_path / "s.db")
    assets = list(read_manifest(tmp_path / "m.jsonl"))
    assert len({a.id for a in assets}) == 2 and all(a.id.startswith("https://127.0.0.1:1/v.mp4?…#") for a in assets)
    store.add(assets)
    logger, handler = logging.getLogger("tritonrepo.services"), _Lines()
    level, logger.level = logger.level, logging.INFO
    logger.addHandler(handler)
    try:
        for o in _process(IngestConfig(), store, assets):
            store.record(o)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert store.counts()["dead"] == 2
    lines = handler.lines
    assert any("a loopback address" in line for line in lines)
    assert not [line for line in lines if "s3cr3t" in line]
    assert not [e for _, _, e in store.dead_letters() if "s3cr3t" in e]
    status = CliRunner().invoke(app, ["ingest", "status", "--store", str(tmp_path / "s.db")])
    assert status.exit_code == 0 and "https://127.0.0.1:1/v.mp4?…" in status.output and "s3cr3t" not in status.output


# ---- metrics -------------------------------------------------------------------------------------------------------


def test_metrics_bind_loopback_unless_an_address_is_named():
    assert inspect.signature(ingest_run).parameters["metrics_host"].default.default == "127.0.0.1"
    for server, host in ((IngestMetrics().serve(0), "127.0.0.1"), (IngestMetrics().serve(0, "0.0.0.0"), "0.0.0.0")):
        try:
            assert server.server_address[0] == host
        finally:
            server.shutdown()
            server.server_close()


def test_https_verifies_the_certificate_against_the_host_name(tmp_path):
    import ssl
    import subprocess

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")], check=True,
                   capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:  # a self-signed certificate: the connection is pinned to the checked address, the check still happens
        with pytest.raises(FetchError, match="certificate") as e:
            _get(f"https://127.0.0.1:{server.server_address[1]}/ok")
        assert e.value.permanent
    finally:
        server.shutdown()
