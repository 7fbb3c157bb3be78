"""The compose stack and its Prometheus/Grafana files, parsed (no Docker engine here)."""

import json

import yaml

from tritonrepo.paths import ROOT
from tritonrepo.targets import TARGETS

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "triton.json").read_text())


def test_triton_service_runs_the_local_release_on_a_gpu_with_the_repository_read_only():
    triton = COMPOSE["services"]["triton"]
    dockerfile = (ROOT / triton["build"]["dockerfile"]).read_text()
    assert "nvcr.io/nvidia/tritonserver:24.10-py3" in dockerfile  # Triton 2.51.0, as the local server
    assert "./model_repository:/models:ro" in triton["volumes"]
    command = triton["command"]
    assert "--model-repository=/models" in command and "--model-config-name=${TRITON_TARGET:-t4}" in command
    assert "--metrics-config=summary_latencies=true" in command  # the dashboard's p95 panel needs it
    assert any(c.startswith("--cache-config=local,size=") for c in command)  # models with response_cache use it
    device = triton["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert triton["healthcheck"]["test"][-1] == "http://localhost:8000/v2/health/ready"
    assert set(triton["ports"]) == {"8000:8000", "8001:8001", "8002:8002"}
    assert "t4" in TARGETS  # the default target exists


def test_python_backend_packages_are_installed_in_the_image():
    requirements = (ROOT / "deploy" / "requirements-triton.txt").read_text()
    pinned = dict(line.split("==") for line in requirements.splitlines() if "==" in line and not line.startswith("#"))
    assert {"numpy", "tokenizers", "onnxruntime", "av", "nvidia-dali-cuda120"} <= set(pinned)
    assert pinned["numpy"].startswith("1.")  # the Python-backend stub is built against NumPy 1.x


def test_prometheus_scrapes_triton_and_grafana_is_provisioned_from_mounted_files():
    services = COMPOSE["services"]
    assert services["prometheus"]["image"].split(":")[1] and services["grafana"]["image"].split(":")[1]  # pinned
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert targets["triton"] == ["triton:8002"]
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/triton.yml").read_text())["providers"][0]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    source = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert set(COMPOSE["volumes"]) == {"prometheus-data", "grafana-data"}


def test_dashboard_panels_cover_queue_compute_batch_throughput_and_p95():
    queries = " ".join(t["expr"] for p in DASHBOARD["panels"] for t in p["targets"])
    for metric in ("nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us", "nv_inference_exec_count",
                   "nv_inference_request_success", 'nv_inference_request_summary_us{model=~"$model", quantile="0.95"}'):
        assert metric in queries
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)) and all(t["datasource"]["uid"] == "prometheus"
                                             for p in DASHBOARD["panels"] for t in p["targets"])
