"""A Python-backend step whose stub processes die mid-run (SIGKILL, as the OOM killer would): the server's stub watch
reloads the model (Triton r24.10 does not restart a dead stub itself), and one ingestion run rides it out: the
requests that failed meanwhile are retried (counted), and every asset ends with one result per task, none lost, none
computed twice."""

import asyncio
import os
import signal
import threading
import time

import pytest

from tritonrepo.clients import EmbeddingClient
from tritonrepo.services.ingest import IngestConfig, ingest
from tritonrepo.services.metrics import IngestMetrics
from tritonrepo.services.store import Asset, SqliteStore
from tritonrepo.datasets import conll_sentences
from tritonrepo.server import TritonServer
from tritonrepo.stub_watch import stub_processes

pytestmark = pytest.mark.server

EMBED, ENTITIES = "embed:sbert_int8@1", "entities:ner_int8@1"


def stub_pids(server: TritonServer, model: str) -> set[int]:
    return {pid for pid, (name, dead) in stub_processes(server.process.pid).items() if name == model and not dead}


def test_a_stub_killed_mid_run_is_ridden_out_in_one_run(model_repository, tmp_path):
    sentences = conll_sentences("valid")[:150]
    db = tmp_path / "s.db"
    SqliteStore(db).add(Asset(id=f"s{i}", kind="text", text=t, trace_id=f"t{i}") for i, t in enumerate(sentences))
    metrics, done = IngestMetrics(), {}
    with TritonServer(model_repository, model_config_name="cpu", explicit_models=["sbert_int8", "ner_int8"],
                      log_file=tmp_path / "log") as server:
        stubs = stub_pids(server, "sbert_encoder_int8")
        assert stubs, "no stub process found for sbert_encoder_int8"
        config = IngestConfig(url=server.grpc_url, shots_model=None)  # the run's default retries
        worker = threading.Thread(target=lambda: done.update(summary=asyncio.run(
            ingest(SqliteStore(db), config, metrics=metrics))))
        worker.start()
        watch = SqliteStore(db, readonly=True)
        while watch.counts()["done"] < 15:
            time.sleep(0.02)
        for pid in stubs:
            os.kill(pid, signal.SIGKILL)
        at_kill = watch.counts()["done"]
        worker.join(timeout=300)
        restarted, healed = stub_pids(server, "sbert_encoder_int8"), server.stub_watch.restarts
    assert at_kill < 150 and len(restarted) == len(stubs) and not restarted & stubs
    assert healed == {"sbert_encoder_int8": 1}
    assert done["summary"].counts == {"pending": 0, "done": 150, "dead": 0}
    assert metrics.value("ingest_retries_total", model="sbert_int8", status="STUB_RESTART") > 0
    results = SqliteStore(db)._db.execute("SELECT task, COUNT(*) FROM results GROUP BY task").fetchall()
    assert sorted(results) == [(EMBED, 150), (ENTITIES, 150)]


def test_a_stub_killed_before_any_request_is_healed(model_repository, tmp_path):
    """The watch notes every stub before the server is handed over: a stub killed at once (before the watch's first
    periodic look) is healed too."""
    with TritonServer(model_repository, model_config_name="cpu", explicit_models=["sbert_int8"],
                      log_file=tmp_path / "log") as server:
        stubs = stub_pids(server, "sbert_encoder_int8")
        for pid in stubs:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while not server.stub_watch.restarts and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.stub_watch.restarts == {"sbert_encoder_int8": 1}
        with EmbeddingClient(server.grpc_url, "sbert_int8") as client:  # retries until the reloaded model serves
            assert client.embed(["Stocks rose in Tokyo"]).shape == (1, 384)
        assert stubs and len(stub_pids(server, "sbert_encoder_int8")) == len(stubs)
