"""The Grafana dashboard's queries name metrics that Triton and the ingestion client really export."""

import re
import shutil
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client import generate_latest

from tritonrepo.services.metrics import IngestMetrics
from tritonrepo.deploy import dashboard_metrics
from tritonrepo.server import TritonServer

pytestmark = pytest.mark.server

# Exported by Triton on GPU hosts only (documented in Triton's metrics guide); a CPU server cannot show them.
GPU_ONLY = {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"}


def _names(exposition: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([a-z_]+)(?:\{| )", exposition, re.MULTILINE)}


def test_dashboard_metrics_exist_on_triton_and_the_ingestion_client(tiny_repository, tmp_path):
    # the tokenizer twice: as it is, and as "cached_tokenizer" with the response cache on (Triton exports different
    # metrics for each: no request summary for a cached model, the cache metrics only for one)
    shutil.copytree(tiny_repository / "sbert_tokenizer", tiny_repository / "cached_tokenizer")
    config = tiny_repository / "cached_tokenizer" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "sbert_tokenizer"', 'name: "cached_tokenizer"')
                      + "\nresponse_cache {\n  enable: true\n}\n")
    with TritonServer(tiny_repository, log_file=tmp_path / "log", response_cache_mb=8) as server:
        with grpcclient.InferenceServerClient(server.grpc_url) as c:
            text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            text.set_data_from_numpy(np.array([[b"a headline"]], dtype=np.object_))
            for model in ("sbert_tokenizer", "cached_tokenizer", "cached_tokenizer"):  # the last is a cache hit
                c.infer(model, [text])
        with urllib.request.urlopen(server.metrics_url) as r:
            triton = _names(r.read().decode())
    metrics = IngestMetrics()
    metrics.observe("m", 0.1, "ok")
    metrics.retries.labels("m", "UNAVAILABLE").inc()
    metrics.dedup.labels("t", "store").inc()
    metrics.assets.labels("done").inc()
    client = _names(generate_latest(metrics.registry).decode())
    wanted = dashboard_metrics()
    missing = wanted - triton - client - GPU_ONLY
    assert not missing, f"dashboard queries name metrics nobody exports: {sorted(missing)}"
    assert {"nv_inference_request_summary_us", "nv_cache_num_hits_per_model"} <= triton & wanted
