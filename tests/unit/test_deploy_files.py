"""The compose stack and its Prometheus/Grafana files, parsed (no Docker engine here)."""

import json
import tomllib

import pytest
import yaml
from typer.testing import CliRunner

from tritonrepo.cli import app
from tritonrepo.deploy import interpolate
from tritonrepo.errors import SpecError
from tritonrepo.paths import ROOT
from tritonrepo.targets import TARGETS
from tritonrepo.text_specs import TRT_ENGINE_CACHE

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
    assert "curl -fsS http://localhost:8000/v2/health/ready && " in triton["healthcheck"]["test"][-1]
    assert "t4" in TARGETS  # the default target exists
    # the TensorRT provider's engines go to a volume, not the read-only repository
    assert f"trt-engines:{TRT_ENGINE_CACHE}" in triton["volumes"]


def test_compose_publishes_only_the_client_ports_on_loopback_unless_told_and_needs_its_secrets():
    services = COMPOSE["services"]
    published = {name: [interpolate(p, {}) for p in s.get("ports", [])] for name, s in services.items()}
    assert published == {"triton": ["127.0.0.1:8000:8000", "127.0.0.1:8001:8001"], "prometheus": [], "grafana": []}
    assert interpolate(services["triton"]["ports"][0], {"TRITON_BIND_ADDRESS": "10.0.0.5"}) == "10.0.0.5:8000:8000"
    monitoring = yaml.safe_load((ROOT / "deploy" / "compose.monitoring.yml").read_text())["services"]
    assert {name: [interpolate(p, {}) for p in s["ports"]] for name, s in monitoring.items()} == {
        "prometheus": ["127.0.0.1:9090:9090"], "grafana": ["127.0.0.1:3000:3000"]}
    with pytest.raises(SpecError, match="set GRAFANA_ADMIN_PASSWORD"):
        interpolate(services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"], {})
    restricted = [a for a in services["triton"]["command"] if "restricted" in a]
    assert [a.split("=", 1)[0] for a in restricted] == ["--http-restricted-api", "--grpc-restricted-protocol"]
    for flag in restricted:
        with pytest.raises(SpecError, match="set TRITON_ADMIN_KEY"):
            interpolate(flag, {})
        assert interpolate(flag, {"TRITON_ADMIN_KEY": "k"}).split("=", 1)[1] == (
            "model-repository,shared-memory,trace,logging:triton-admin-key=k")


def test_the_tensorrt_override_builds_plans_first_and_triton_serves_their_copy(tmp_path):
    override = yaml.safe_load((ROOT / "deploy" / "compose.tensorrt.yml").read_text())
    step, triton = override["services"]["tensorrt"], override["services"]["triton"]
    # compose merges volumes by their target: /models now comes from the plans' copy, still read-only
    merged = {v.split(":")[1]: v for v in COMPOSE["services"]["triton"]["volumes"]} | {
        v.split(":")[1]: v for v in triton["volumes"]}
    assert merged["/models"] == "repository-tensorrt:/models:ro"
    assert "repository-tensorrt:/repository" in step["volumes"] and "./model_repository:/source:ro" in step["volumes"]
    assert triton["depends_on"]["tensorrt"]["condition"] == "service_completed_successfully"
    assert step["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    # its command is one the CLI takes: without a GPU here it gets as far as refusing to build
    argv = [interpolate(a, {"TRITON_TARGET": "a10g"}) for a in step["command"]]
    assert argv[:3] == ["tritonrepo", "export", "tensorrt"]
    argv = [a.replace("=/source", f"={tmp_path}").replace("=/repository", f"={tmp_path / 'out'}") for a in argv]
    result = CliRunner().invoke(app, argv[1:])
    assert result.exit_code == 1 and "needs the target's GPU" in result.output, result.output
    with pytest.raises(SpecError, match="set TRITON_TARGET"):
        interpolate(step["command"][3], {})
    dockerfile = (ROOT / step["build"]["dockerfile"]).read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for folder in pyproject["tool"]["setuptools"]["package-dir"].values():  # the image installs every package
        assert f"COPY {folder} /src/{folder}" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".tools", ".assets", "model_repository"} <= set(ignored)  # the build context stays small


def test_python_backend_packages_are_installed_in_the_image():
    requirements = (ROOT / "deploy" / "requirements-triton.txt").read_text()
    pinned = dict(line.split("==") for line in requirements.splitlines() if "==" in line and not line.startswith("#"))
    assert {"numpy", "tokenizers", "onnxruntime", "av", "nvidia-dali-cuda120"} <= set(pinned)
    assert pinned["numpy"].startswith("1.")  # the Python-backend stub is built against NumPy 1.x


def _pins(path) -> dict[str, str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return dict(line.lower().split("==") for line in lines if "==" in line)


def test_the_dev_venv_validates_and_measures_with_the_versions_the_images_serve():
    """int8 kernels give other numbers in another ONNX Runtime release (measured against 1.32: sbert_int8 min cosine
    0.9990, rerank_int8 scores up to 0.043 apart, ner_int8 spans changed in 5 of 400 sentences): every package the
    Python-backend models import is pinned to the images' version in constraints.txt."""
    image = _pins(ROOT / "deploy" / "requirements-triton.txt")
    assert {name: _pins(ROOT / "constraints.txt").get(name) for name in image} == image


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
    assert set(COMPOSE["volumes"]) == {"trt-engines", "prometheus-data", "grafana-data"}


def test_dashboard_panels_cover_queue_compute_batch_throughput_and_p95():
    queries = " ".join(t["expr"] for p in DASHBOARD["panels"] for t in p["targets"])
    for metric in ("nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us", "nv_inference_exec_count",
                   "nv_inference_request_success", 'nv_inference_request_summary_us{model=~"$model", quantile="0.95"}'):
        assert metric in queries
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)) and all(t["datasource"]["uid"] == "prometheus"
                                             for p in DASHBOARD["panels"] for t in p["targets"])
