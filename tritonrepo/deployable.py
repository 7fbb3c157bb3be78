"""Whether a built repository runs where it is deployed, read from its files alone (no server): for one target, every
file each config names exists in the version folder Triton serves, every backend is one the NGC 24.10 image (and
AWS's SageMaker Triton image) ships, the instance kinds fit the target, and every Python file imports only what the
serving images install (``deploy/requirements-triton.txt``), the standard library and its own folder.

``tritonrepo check --target T --lint-only`` reports these per model, target and path; ``tritonrepo build`` and
``tritonrepo package sagemaker`` refuse to finish an incomplete repository or archive.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import SpecError
from .paths import ROOT
from .targets import TARGETS, Target

IMAGE_REQUIREMENTS = ROOT / "deploy" / "requirements-triton.txt"
# Backends of the NGC tritonserver 24.10-py3 image (server r24.10 build.py, enable_all: the release images enable
# every backend) that a model repository can name; the test backends (identity, repeat, square) left out.
NGC_BACKENDS = frozenset({"python", "onnxruntime", "tensorrt", "tensorflow", "pytorch", "openvino", "dali", "fil"})
# ONNX Runtime inside that image's onnxruntime backend (server r24.10 build.py, TRITON_VERSION_MAP): older than the
# pip onnxruntime the Python-backend models get (deploy/requirements-triton.txt)
NGC_ONNXRUNTIME = "1.19.2"
PLATFORMS = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt", "tensorflow_savedmodel": "tensorflow",
             "tensorflow_graphdef": "tensorflow", "pytorch_libtorch": "pytorch", "ensemble": "ensemble"}
DEFAULT_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "tensorflow": "model.savedmodel",
                 "pytorch": "model.pt", "openvino": "model.xml", "dali": "dali.py", "python": "model.py"}
# Modules the Python-backend stub provides itself
STUB_MODULES = frozenset({"triton_python_backend_utils", "c_python_backend_utils"})
# Distributions whose import name is not their name with '-' -> '_'
IMPORT_NAMES = {"nvidia-dali-cuda120": "nvidia"}


@dataclass(frozen=True)
class Finding:
    level: str  # "error" fails the check; "warning" is reported
    model: str
    where: str  # the file, relative to the repository
    message: str


def image_modules(requirements: Path = IMAGE_REQUIREMENTS) -> frozenset[str]:
    """Top-level import names of the packages the serving images install."""
    names = set()
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            dist = re.split(r"[=<>~!\[; ]", line, maxsplit=1)[0]
            names.add(IMPORT_NAMES.get(dist, dist.replace("-", "_")))
    return frozenset(names)


def foreign_imports(path: Path, allowed: frozenset[str]) -> list[str]:
    """Modules ``path`` imports (anywhere in it, functions included) that are neither in ``allowed``, the standard
    library, the stub's, nor files beside it; ``from .x import`` of a file that is not beside it too."""
    here = {p.stem for p in path.parent.glob("*.py")}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            relative = [node.module] if node.module else [alias.name for alias in node.names]
            names = [(n, node.level) for n in relative] if node.level else [(node.module, 0)]
        else:
            continue
        for name, level in names:
            top = name.split(".")[0]
            ok = top in here if level else (top in allowed or top in STUB_MODULES or top in here
                                            or top in sys.stdlib_module_names)
            if not ok:
                found.append(f"{'.' * level}{name} (line {node.lineno})")
    return found


def config_path(repository: Path, model: str, target: Target) -> Path:
    """The file ``--model-config-name=<target>`` loads: configs/<target>.pbtxt, else config.pbtxt."""
    specific = repository / model / "configs" / f"{target}.pbtxt"
    return specific if specific.exists() else repository / model / "config.pbtxt"


def backend_of(cfg) -> str:
    return cfg.backend or PLATFORMS.get(cfg.platform, cfg.platform)


def named_files(cfg, target: Target) -> list[str]:
    """Files (or folders) of the version folder that ``cfg`` makes Triton open on ``target``."""
    backend = backend_of(cfg)
    if backend == "ensemble":
        return []
    if backend == "tensorrt":
        cc = TARGETS[target].compute_capability
        return [cfg.cc_model_filenames.get(cc) or cfg.default_model_filename or DEFAULT_FILES[backend]]
    if backend == "python":
        extra = cfg.parameters["model_filename"].string_value if "model_filename" in cfg.parameters else ""
        return ["model.py", *([extra] if extra else [])]
    return [cfg.default_model_filename or DEFAULT_FILES.get(backend, "model")]


def native_onnx_files(repository: Path, target: Target) -> dict[str, Path]:
    """model -> the ONNX file ``target``'s config serves on the native onnxruntime backend (NGC_ONNXRUNTIME)."""
    from .render import parse

    found = {}
    for default in sorted(Path(repository).glob("*/config.pbtxt")):
        cfg = parse(config_path(repository, default.parent.name, target).read_text())
        version = served_version(default.parent)
        if backend_of(cfg) == "onnxruntime" and version:
            found[default.parent.name] = version / named_files(cfg, target)[0]
    return found


def served_version(folder: Path) -> Path | None:
    """The version Triton's default policy (latest 1) serves."""
    versions = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def check_model(repository: Path, model: str, target: Target, allowed: frozenset[str]) -> list[Finding]:
    from tritonclient.grpc import model_config_pb2 as mc

    from .render import parse

    path = config_path(repository, model, target)
    where = str(path.relative_to(repository))
    cfg = parse(path.read_text())
    found = []

    def error(message: str, at: str = where) -> None:
        found.append(Finding("error", model, at, f"target {target}: {message}"))

    backend = backend_of(cfg)
    if backend not in NGC_BACKENDS | {"ensemble"}:
        error(f"backend/platform {backend!r} is not in the NGC 24.10 image (has {sorted(NGC_BACKENDS)})")
    kinds = {g.kind for g in cfg.instance_group}
    gpu = TARGETS[target].is_gpu
    if not gpu and mc.ModelInstanceGroup.KIND_GPU in kinds:
        error("KIND_GPU instances on a target without a GPU")
    if backend == "tensorrt" and kinds != {mc.ModelInstanceGroup.KIND_GPU}:
        error("a TensorRT plan on instances that are not KIND_GPU: plans run on GPUs only")
    if cfg.optimization.execution_accelerators.gpu_execution_accelerator and \
            (not gpu or kinds - {mc.ModelInstanceGroup.KIND_GPU}):
        error("a GPU execution accelerator on instances that are not KIND_GPU")
    version = served_version(repository / model)
    if version is None:
        error("no version folder: run `tritonrepo build`", f"{model}/")
        return found
    rel = version.relative_to(repository)
    hint = "`tritonrepo export tensorrt` on the GPU host" if backend == "tensorrt" else "`tritonrepo build`"
    for name in named_files(cfg, target):
        if not (version / name).exists():
            error(f"the config names {name}, which is missing: run {hint}", f"{rel}/{name}")
    for source in sorted(version.glob("*.py")):
        foreign = foreign_imports(source, allowed)
        if foreign:
            error(f"imports {', '.join(foreign)}: not installed in the serving images (deploy/requirements-triton.txt)"
                  " nor shipped beside it", f"{rel}/{source.name}")
    return found


def check(repository: Path, target: Target) -> list[Finding]:
    """Every model of ``repository`` on ``target``: what would keep it from loading in the serving image."""
    if target not in TARGETS:
        raise SpecError(f"unknown target {target!r}; known: {sorted(TARGETS)}")
    allowed = image_modules()
    return [f for cfg in sorted(Path(repository).glob("*/config.pbtxt"))
            for f in check_model(Path(repository), cfg.parent.name, target, allowed)]
