"""A rehearsal of the deployment, as close to the serving images as this machine allows (no Docker, no GPU):

- the Python-backend models run on an interpreter holding only the images' packages (``paths.IMAGE_PYTHON``, made by
  scripts/setup.sh from deploy/requirements-triton.txt: no tritonrepo, torch or transformers);
- the server runs the compose ``triton`` service's own command line, read from docker-compose.yml, with this machine's
  install layout and free loopback ports appended;
- the repository is mounted read-only as compose mounts it: a read-only bind mount in a mount namespace of the
  server's own, so not even root can write it.

Every ``cpu`` model loads and answers real requests (text, pairs, video files and a live stream), and the compose
health check's URL answers. The SageMaker archives are served read-only on the same interpreter in test_sagemaker.py;
every target's files are checked here against the built repository."""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from tritonrepo import check, deployable
from tritonrepo.clients import EmbeddingClient, NerClient, RerankClient
from tritonrepo.clients.video import ShotClient, ShotStreamClient, segment_file
from tritonrepo.deploy import interpolate
from tritonrepo.errors import InvalidInputError, ModelLoadError
from tritonrepo.export import families
from tritonrepo.paths import IMAGE_PYTHON, NGC_ONNXRUNTIME_PYTHON, ROOT
from tritonrepo.server import TritonServer
from tritonrepo.stub_watch import stub_processes
from tritonrepo.targets import TARGETS

pytestmark = pytest.mark.server

TRITON = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["triton"]
ADMIN_KEY = "the-operators-key"  # TRITON_ADMIN_KEY


def compose_command(repository) -> list[str]:
    """The triton service's command as compose runs it on the cpu target, its volumes' container paths replaced by
    the folders they mount."""
    mounts = {}
    for volume in TRITON["volumes"]:
        source, target, *mode = volume.split(":")
        mounts[target] = (source, mode)
    assert mounts["/models"] == ("./model_repository", ["ro"])
    return [interpolate(arg, {"TRITON_TARGET": "cpu", "TRITON_ADMIN_KEY": ADMIN_KEY}).replace("=/models", f"={repository}")
            for arg in TRITON["command"]]


def health_check(server: TritonServer) -> int:
    """The compose health check's exit code for this server, /proc narrowed to its processes (as in its container)."""
    own = " ".join(f"/proc/{pid}/stat" for pid in [server.process.pid, *stub_processes(server.process.pid)])
    command = TRITON["healthcheck"]["test"][-1].replace("localhost:8000", server.http_url).replace(
        "/proc/[0-9]*/stat", own)
    return subprocess.run(["sh", "-c", command], capture_output=True).returncode


@pytest.fixture(scope="module")
def deployed(model_repository, as_deployed, tmp_path_factory):
    repo = tmp_path_factory.mktemp("deployed") / "models"
    shutil.copytree(model_repository, repo, ignore=shutil.ignore_patterns("__pycache__"))
    command = compose_command(repo)
    assert command[0] == "tritonserver" and "--model-config-name=cpu" in command
    with TritonServer(repo, command=command, log_file=repo.parent / "tritonserver.log", **as_deployed(repo)) as server:
        yield server, repo


def test_the_image_interpreter_has_the_images_packages_and_nothing_else():
    probe = "import importlib, sys\nfor m in sys.argv[1:]:\n    try:\n        importlib.import_module(m)\n" \
            "        print(m, 'yes')\n    except ImportError:\n        print(m, 'no')"
    modules = ["numpy", "tokenizers", "onnxruntime", "av", "nvidia.dali", "tritonrepo", "torch", "transformers"]
    out = subprocess.run([str(IMAGE_PYTHON), "-c", probe, *modules], capture_output=True, text=True, check=True,
                         cwd="/", env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}).stdout
    assert dict(line.split() for line in out.splitlines()) == dict.fromkeys(modules[:5], "yes") | dict.fromkeys(
        modules[5:], "no")


def test_model_code_that_needs_the_dev_package_fails_there_and_the_check_names_it(tmp_path, as_deployed):
    """The isolation is real: a model importing tritonrepo (as the tokenizers once did) does not load."""
    version = tmp_path / "repo" / "needs_dev" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text("from tritonrepo.errors import SpecError\n\n\nclass TritonPythonModel:\n"
                                      "    def execute(self, requests):\n        return []\n")
    (version.parent / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 0\ninput { name: "X" '
                                                 'data_type: TYPE_FP32 dims: 1 }\noutput { name: "Y" '
                                                 'data_type: TYPE_FP32 dims: 1 }\n')
    findings = deployable.check(tmp_path / "repo", "cpu")
    assert [(f.where, f.message.split(": ", 1)[1][:31]) for f in findings] == [
        ("needs_dev/1/model.py", "imports tritonrepo.errors (line")]
    with pytest.raises(ModelLoadError, match="No module named 'tritonrepo'"):
        TritonServer(tmp_path / "repo", explicit_models=["needs_dev"], log_file=tmp_path / "log",
                     **as_deployed(tmp_path / "repo")).start(timeout_s=60)


def test_every_cpu_model_loads_read_only_on_the_images_packages_and_answers(deployed, sample_media, tmp_path):
    server, repo = deployed
    assert health_check(server) == 0
    served = check.serve(repo, url=server.grpc_url, specs=families.all_specs())
    assert {s.model for s in served} == {p.parent.name for p in repo.glob("*/config.pbtxt")}
    assert all(s.ok for s in served), [s for s in served if not s.ok]
    assert {s.model for s in served if s.status == "reference"} >= {"sbert", "sbert_int8"}  # vs sentence-transformers
    assert not list(repo.rglob("__pycache__")) and not list(repo.rglob("*.pyc"))  # nothing was written there

    texts = ["Angela Merkel met Reuters editors in Berlin.", "oil prices fall", ""]
    for model in ("sbert", "sbert_int8"):
        with EmbeddingClient(server.grpc_url, model) as client:
            vectors = client.embed(texts)
        assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    for model in ("ner", "ner_int8"):
        with NerClient(server.grpc_url, model) as client:
            assert len(client.entities(texts)) == 3
    for model in ("rerank", "rerank_int8"):
        with RerankClient(server.grpc_url, model) as client:
            scores = client.scores("oil prices", ["Oil prices fell on Monday.", "The match ended in a draw."])
        assert len(scores) == 2 and np.isfinite(scores).all()
    with ShotClient(server.grpc_url) as client:
        h264 = client.shots(sample_media["h264.mp4"])  # FFmpeg
        vp9 = [client.shots(sample_media["vp9.webm"], decoder=d) for d in ("dali", "model")]  # DALI, video_decode
    assert h264.frames == vp9[0].frames == vp9[1].frames == 120 and vp9[0].shots == vp9[1].shots
    segments = segment_file(sample_media["h264.mp4"], tmp_path / "segments", seconds=2.0)
    with ShotStreamClient(server.grpc_url) as stream:
        live = list(stream.stream(p.read_bytes() for p in segments))
    assert live and live[-1].end_frame == 119


def test_the_server_refuses_bad_input_and_keeps_serving(deployed, sample_media):
    server, _ = deployed
    with ShotClient(server.grpc_url) as client:
        with pytest.raises(InvalidInputError, match="not a video"):
            client.shots(sample_media["random.bin"])
        assert client.shots(sample_media["h264.mp4"]).frames == 120
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_ready() and client.is_model_ready("ner_int8")
    client.close()


def test_a_dead_stub_fails_the_health_check(tiny_repository, tmp_path):
    """Triton 24.10 neither restarts a killed stub nor stops reporting ready: the health check looks for the zombie."""
    with TritonServer(tiny_repository, command=compose_command(tiny_repository), log_file=tmp_path / "log") as server:
        assert server.stub_watch is None  # a deployment has no tool beside it to reload the model
        assert health_check(server) == 0
        stubs = [pid for pid, (model, _) in stub_processes(server.process.pid).items() if model == "sbert_tokenizer"]
        assert stubs
        os.kill(stubs[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while health_check(server) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health_check(server) != 0
        with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=5) as r:
            assert r.status == 200  # what the check alone would have said


def test_the_composed_servers_admin_apis_answer_only_the_operators_key(deployed):
    server, _ = deployed
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for call in (client.get_model_repository_index, lambda: client.load_model("sbert"),
                     lambda: client.register_system_shared_memory("region", "/triton_python_backend_shm_region_1", 64),
                     lambda: client.update_log_settings({"log_verbose_level": 1})):
            with pytest.raises(InferenceServerException, match="restricted"):
                call()
        key = {"triton-grpc-protocol-triton-admin-key": ADMIN_KEY}
        assert "sbert" in {m.name for m in client.get_model_repository_index(headers=key).models}
        with pytest.raises(InferenceServerException, match="not allowed"):  # and nothing loads after the start
            client.load_model("sbert", headers=key)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_file_each_targets_configs_name_is_in_the_built_repository(model_repository, target):
    assert deployable.check(model_repository, target) == []


RUN_ONNX = """
import json, sys
import numpy as np
import onnxruntime as ort
dtypes = {"tensor(int64)": np.int64, "tensor(uint8)": np.uint8, "tensor(float)": np.float32}
for path in sys.argv[1:]:
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feeds = {i.name: np.ones([d if isinstance(d, int) else 2 for d in i.shape], dtype=dtypes[i.type])
                 for i in session.get_inputs()}
        session.run(None, feeds)
        print(json.dumps([path, ort.__version__, "ok"]))
    except Exception as e:
        print(json.dumps([path, ort.__version__, str(e).splitlines()[0][-300:]]))
"""


def test_every_onnx_file_a_gpu_target_serves_natively_runs_in_the_ngc_images_onnx_runtime(model_repository):
    """The NGC 24.10 image's onnxruntime backend is ONNX Runtime 1.19.2, older than the Python models' pip release: a
    graph that runs here may not load there (8-bit MatMulNBits does not: the int8 encoders serve from Python)."""
    files = {m: p for t in sorted(TARGETS) if TARGETS[t].is_gpu
             for m, p in deployable.native_onnx_files(model_repository, t).items()}
    assert {"sbert_encoder", "ner_encoder", "rerank_encoder", "transnetv2"} <= set(files)
    out = subprocess.run([str(NGC_ONNXRUNTIME_PYTHON), "-c", RUN_ONNX, *map(str, files.values())], cwd="/",
                         capture_output=True, text=True, check=True).stdout
    results = [json.loads(line) for line in out.splitlines()]
    assert {version for _, version, _ in results} == {deployable.NGC_ONNXRUNTIME}
    assert [(path, status) for path, _, status in results if status != "ok"] == []


def test_the_main_jobs_first_part_serves_before_anything_is_trained(tmp_path, sbert_artifacts, transnet_artifacts):
    from tritonrepo.demo import PART1_FAMILIES
    from tritonrepo.export.families import build, models_to_load
    from tritonrepo.paths import VIDEO_DIR

    repo = tmp_path / "repo"
    build(repo, families=PART1_FAMILIES)
    assert not list((repo / "ner_encoder" / "1").glob("*.onnx"))  # nothing trained is needed
    assert not (repo / "ner_decoder" / "1" / "labels.json").exists()
    with TritonServer(repo, model_config_name="cpu", explicit_models=models_to_load(PART1_FAMILIES, repo)) as server:
        with EmbeddingClient(server.grpc_url, "sbert_int8") as client:
            assert client.embed(["oil prices fall"]).shape == (1, 384)
        with ShotClient(server.grpc_url) as client:  # video_shots reaches its steps (BLS): they were loaded too
            assert client.shots(VIDEO_DIR / "bikes.mp4").frames > 0


def test_build_makes_what_every_target_names_and_check_says_so(tmp_path, sbert_artifacts, ner_export, rerank_export,
                                                                transnet_artifacts):
    from typer.testing import CliRunner

    from tritonrepo.cli import app
    from tritonrepo.export.families import build

    repo = tmp_path / "repo"
    build(repo, configs={"ner": ner_export, "rerank": rerank_export})  # refuses to finish an incomplete repository
    assert (repo / "video_shots" / "1" / "video_io.py").exists() and (repo / "rerank_tokenizer" / "1" /
                                                                        "pair_encoding.py").exists()
    for target in sorted(TARGETS):
        result = CliRunner().invoke(app, ["check", "-r", str(repo), "--target", target, "--lint-only"])
        assert result.exit_code == 0 and "check passed" in result.output, result.output
    (repo / "transnetv2" / "1" / "model.fp32.onnx").unlink()
    result = CliRunner().invoke(app, ["check", "-r", str(repo), "--target", "h100", "--lint-only"],
                                env={"COLUMNS": "300"})  # the table's rows unwrapped
    assert result.exit_code == 1 and "transnetv2/1/model.fp32.onnx" in result.output
    result = CliRunner().invoke(app, ["check", "-r", str(repo), "--target", "v100", "--lint-only"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "'v100' is not one of 'cpu', 't4'" in result.output
