"""GPU profiles from a lent GPU host whose image has PyTorch but no tritonserver, TensorRT or CUDA build of ONNX
Runtime (the device tool's H100/H200): the same sweeps as on the CPU, through the real Triton server and the real
perf_analyzer carried there, with the encoders run by PyTorch on the GPU (the ``torch_encoder`` Python model).

    .venv/bin/python -m tritonrepo.perf.gpu_profile pack    # here: .gpu/ (tools, wheels, repository, inputs)
    bash scripts/gpu-profile.sh OUT_DIR [BUDGET_S]          # there, in a copy of the checkout holding .gpu/
    .venv/bin/python -m tritonrepo.perf.gpu_profile run --out DIR   # here, without a GPU: a rehearsal of the pack

What is measured, and what is not:
- Served: each text model's ensemble on the GPU target's committed config (tokenizer instances, ensemble) with the
  swept encoder as a Python-backend model running the checkpoint's architecture in PyTorch fp16 on the GPU
  (``KIND_GPU``). The deployed GPU configs run TensorRT FP16 plans (or ONNX Runtime CUDA), which this image cannot
  run: these profiles stand in for them (marked ``proxy`` in the profile; ``perf apply`` refuses them).
- Weights: seeded random weights of the checkpoint's architecture (config.json): the real ones (44 MiB in fp16 each)
  do not fit beside the tools in what the device tool carries. Speed does not depend on weight values; the fp16
  runtime's accuracy with the real weights is checked here (tests/server/test_torch_runtime.py).
- Inputs: the CPU sweeps' real inputs (CoNLL test sentences, short queries, headline/article pairs), written here.
- Grid: the untuned config (one instance, no dynamic batching) and dynamic batching with 1 or 2 instances and no
  queue delay, closed loop at 1, 8, 32 and 128 in flight (a range stops at the model's p95 bound), then each
  variant's open-loop capacity search (``sweep.capacity_search``, 3 Poisson rates); 1 s windows. Models run in the
  order of ``MODELS`` (family order) until the budget is spent. (The committed profiles had Poisson rates at 50/90%
  of each variant's closed-loop best instead of the search; the H200 ``rerank`` one also 2 instances with 500 us
  delay, closed loop to 64 in flight, and Poisson rows from synchronous workers.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from tritonrepo.export.families import FAMILIES
from tritonrepo.paths import ROOT

PACK = ROOT / ".gpu"
TARGET = "h100"  # the GPU target whose committed configs (tokenizers, ensembles, batching) the profiles start from
# what each family profiles here (export/<family>.py FAMILY.gpu_profile), in family order: a budget cut drops the last
PROFILED = {f.gpu_profile.plan: f.gpu_profile for f in FAMILIES.values() if f.gpu_profile}
MODELS = tuple(PROFILED)
WHEELS = ("numpy==1.26.4", "tritonclient==2.73.0", "python-rapidjson==1.20", "protobuf==6.33.6", "grpcio==1.85.3")
PROXY = ("encoder: Python backend, PyTorch fp16 on the GPU, seeded random weights of the checkpoint's architecture "
         "(the deployed config runs a TensorRT FP16 plan, which this host cannot run)")
log = logging.getLogger("gpu_profile")


def plan(name: str, inputs: Path, gpu: bool = True, gpu_instances: bool = True):
    """The CPU sweep's plan for ``name`` with the encoder on PyTorch fp16 on the GPU, and a GPU grid (``gpu=False``:
    fp32 on the CPU, a rehearsal of the pack here; ``gpu_instances=False``: KIND_CPU instances that put the model on
    cuda:0 themselves, should this Python backend refuse KIND_GPU)."""
    from tritonrepo.export.families import spec as served_spec
    from tritonrepo.ensembles.parameters import TorchEncoderParameters
    from tritonrepo.specs import Backend, Deployment, Kind
    from tritonrepo.tuning import Variant

    from tritonrepo.perf import sweep

    cpu = sweep.PLANS[name]
    spec = served_spec(cpu.swept)
    base = spec.deployment(TARGET)  # the GPU target's instance count and batching
    parameters = TorchEncoderParameters.of(
        torch_device="" if gpu_instances or not gpu else "cuda:0", torch_head=PROFILED[name].head,
        torch_dtype="float16" if gpu else "float32", random_weights=True, sort_by_length=True, padding_tolerance=0.5,
        max_sub_batch=base.batching.max_batch_size)
    torch = Deployment(backend=Backend.PYTHON, kind=Kind.GPU if gpu and gpu_instances else Kind.CPU, count=base.count,
                       batching=base.batching, ragged_batching=True, parameters=parameters)
    variants = (sweep.UNTUNED, *(Variant(instances=i, max_queue_delay_us=d) for i, d in ((1, 0), (2, 0))))
    spec = dataclasses.replace(spec, python_model="torch_encoder", deployments=spec.deployments | {TARGET: torch})
    return dataclasses.replace(cpu, spec=spec,
                               variants=variants, inputs=f"file:{inputs}", concurrencies=(1, 8, 32, 128),
                               rate_probes=3)


def pack(out: Path = PACK) -> Path:
    """Everything the GPU host needs, under 64 MiB: Triton and perf_analyzer (xz), wheels the image lacks or has in
    versions the stub or client cannot use (NumPy 1.x for the Python backend stub), the repository subset with
    config.json checkpoints, and the real inputs."""
    from tritonrepo.paths import MODEL_REPOSITORY, TOOLS
    from tritonrepo.export.families import with_dependencies
    from tritonrepo.repository import install_python_module

    from tritonrepo.perf import sweep
    from tritonrepo.perf.provenance import provenance

    shutil.rmtree(out, ignore_errors=True)
    (out / "inputs").mkdir(parents=True)
    repo = out / "repository"
    for name in MODELS:
        p = plan(name, out / "inputs" / f"{name}.json")
        sweep.write_inputs(sweep.PLANS[name], out / "inputs" / f"{name}.json")
        for model in with_dependencies([p.entry], MODEL_REPOSITORY):
            shutil.copytree(MODEL_REPOSITORY / model, repo / model, ignore=shutil.ignore_patterns("*.onnx", "__pycache__"))
        encoder = repo / p.swept
        checkpoint = encoder / "1" / "checkpoint"
        checkpoint.mkdir(parents=True)
        shutil.copy(PROFILED[name].checkpoint / "config.json", checkpoint)
        install_python_module(encoder / "1", p.spec.python_model)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "--platform", "manylinux1_x86_64", "-d", str(out / "wheels"), *WHEELS], check=True)
    with tarfile.open(out / "tools.tar.xz", "w:xz") as tar:
        triton = TOOLS / "triton"
        for part in ("bin", "backends", "caches"):
            tar.add(triton / part, f"triton/{part}", filter=lambda t: None if "__pycache__" in t.name else t)
        for lib in (triton / "libs").iterdir():
            if not lib.name.startswith("libpython3"):  # the stub links the host's libpython3.12
                tar.add(lib, f"triton/libs/{lib.name}")
        for python in ("3.11", "3.12"):  # the host's (3.12), and this machine's for a rehearsal
            tar.add(triton / "python_backend_stubs" / python / "triton_python_backend_stub", f"stub-{python}")
        tar.add(TOOLS / "perf_analyzer", "perf_analyzer")
        tar.add(Path("/lib/x86_64-linux-gnu/libb64.so.0d").resolve(), "perf_analyzer/libb64.so.0d")
    (out / "provenance.json").write_text(json.dumps(provenance()))  # the commit packed: the host has no .git
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info("packed %s: %.1f MiB", out, size / 2**20)
    return out


def gpu_name() -> str:
    """The GPU's name, driver and memory; "" without one."""
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return ""


def hardware_of(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``h100``: the profile folder the catalog's GPU types point at."""
    found = re.search(r"\b([ABHLT]\d+[GS]?)\b", name)
    return found.group(1).lower() if found else "gpu"


def install_tools(pack_dir: Path, into: Path) -> None:
    with tarfile.open(pack_dir / "tools.tar.xz") as tar:
        tar.extractall(into, filter="fully_trusted")
    shutil.copy(into / f"stub-{sys.version_info.major}.{sys.version_info.minor}", into / "triton" / "backends" / "python" / "triton_python_backend_stub")
    from tritonrepo.server import TritonServer
    from tritonrepo.paths import TritonTools

    os.environ["TRITONREPO_TRITON_DIR"] = str(into / "triton")
    stub = into / "triton" / "backends" / "python" / "triton_python_backend_stub"
    env = TritonServer.environment(TritonTools.locate())
    missing = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, env=env).stdout
    log.info("the Python backend stub's libraries: %s",
             [line.strip() for line in missing.splitlines() if "not found" in line or "python" in line])
    os.environ["TRITONREPO_PERF_ANALYZER_DIR"] = str(into / "perf_analyzer")


def run(pack_dir: Path, out: Path, budget_s: float, names: tuple[str, ...] = MODELS, only: tuple[str, ...] = ()) -> None:
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    gpu = gpu_name()  # none: a rehearsal on this machine's CPU, to check the pack before spending device time
    hardware = hardware_of(gpu) if gpu else "rehearsal"
    log.info("GPU: %s -> profiles/%s; python %s", gpu or "none", hardware, sys.version.split()[0])
    install_tools(pack_dir, Path("/tmp/gpu-tools"))
    from tritonrepo import render

    from tritonrepo.perf import profile_file, sweep
    from tritonrepo.perf.provenance import versions

    gpu_kind = bool(gpu)
    for name in names:
        spent = time.monotonic() - t0
        if spent > budget_s * 0.8:
            log.warning("budget: %s not profiled (%.0f s of %.0f spent)", name, spent, budget_s)
            continue
        for gpu_instances in (True, False) if gpu_kind else (False,):
            p = plan(name, pack_dir / "inputs" / f"{name}.json", bool(gpu), gpu_instances)
            config = pack_dir / "repository" / p.swept / "configs" / f"{TARGET}.pbtxt"  # the encoder at server start
            config.write_text(render.to_text(render.model_config(p.spec, TARGET), TARGET))
            try:
                profile, path = sweep.run(name, target=TARGET, plan=p, repository=pack_dir / "repository",
                                          out_dir=out / "profiles", hardware=hardware, measurement_ms=1000, only=only)
                break
            except Exception:
                log.exception("%s: sweep failed (KIND_GPU instances: %s)", name, gpu_instances)
                gpu_kind = gpu_kind and not gpu_instances  # KIND_GPU refused: the next models go straight to KIND_CPU
        else:
            continue
        origin = profile.provenance | {
            "machine": profile.machine | {"gpu": gpu},
            "versions": profile.provenance["versions"] | versions("torch", "transformers"),
            "commit": json.loads((pack_dir / "provenance.json").read_text())["commit"]}  # what was packed
        profile = dataclasses.replace(
            profile, inputs=f"{sweep.PLANS[name].inputs} (written by pack: {p.inputs})", provenance=origin,
            proxy=(PROXY + ("" if gpu_kind else "; KIND_CPU instances holding the model on cuda:0") if gpu
                   else "rehearsal: the encoder in PyTorch fp32 on this machine's CPU"))
        profile_file.write(path, profile)
        log.info("%s: best %s, untuned %s, gain %s", name, profile.best, profile.untuned, profile.gain_vs_untuned)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pack")
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--budget-s", type=float, default=420)
    r.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    r.add_argument("--only", nargs="*", default=(), help="just these variants (a rehearsal)")
    args = parser.parse_args()
    if args.command == "pack":
        pack()
    else:
        run(PACK, args.out, args.budget_s, tuple(args.models), tuple(args.only))


if __name__ == "__main__":
    main()
