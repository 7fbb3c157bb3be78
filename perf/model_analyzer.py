"""Model Analyzer, the anchor our sweeps are compared with, and an importer of its CSV exports.

``compare`` profiles one model of the repository with Model Analyzer's default search (brute force over instance count
x max_batch_size x concurrency, dynamic batching on), from the same untuned config, on the same real inputs and p95
bound our sweep uses, then runs our sweep on the same model and writes both results side by side.

``import_csv`` turns Model Analyzer's ``metrics-model-inference.csv`` into a profile in our format, so teams that
already use it feed the planner. Model Analyzer lives in its own venv (``.tools/model-analyzer``: it pins a grpcio and
tritonclient our venv does not use); ``tritonrepo perf model-analyzer --install`` creates it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from google.protobuf import text_format

from tritonrepo import render
from tritonrepo.errors import TritonRepoError
from tritonrepo.export.families import spec as served_spec
from tritonrepo.paths import MODEL_REPOSITORY, ROOT, TOOLS, TritonTools, perf_analyzer
from tritonrepo.targets import Target

from . import sweep
from .perf_analyzer import PerfRow
from .profile_file import Profile, Swept
from .provenance import provenance

VENV = TOOLS / "model-analyzer"
VERSION = "1.58.0"
# the metrics we ask Model Analyzer to export (inference_output_fields), beside its identifying columns
METRICS = ("perf_throughput", "perf_latency_p95", "perf_latency_p99", "perf_latency_p90", "perf_latency_avg",
           "perf_server_queue", "perf_server_compute_infer")
# its CSV headers for those columns -> our row fields
HEADERS = {
    "Model": "model", "Batch": "batch", "Concurrency": "concurrency", "Model Config Path": "config",
    "Instance Group": "instance_group", "Max Batch Size": "max_batch_size", "Throughput (infer/sec)": "infer_per_s",
    "p90 Latency (ms)": "p90_ms", "p95 Latency (ms)": "p95_ms", "p99 Latency (ms)": "p99_ms",
    "Avg Latency (ms)": "avg_ms", "Server Queue time (ms)": "server_queue_ms",
    "Server Compute Infer time (ms)": "server_compute_ms", "Satisfies Constraints": "satisfies",
}


def install() -> Path:
    """Model Analyzer in its own venv (~600 MB); idempotent."""
    binary = VENV / "bin" / "model-analyzer"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", f"triton-model-analyzer=={VERSION}"], check=True)
    return binary


def _environment() -> dict[str, str]:
    """tritonserver's libraries and the Python backend's interpreter (our venv first on PATH), perf_analyzer's
    libcudart, and Model Analyzer's own venv for its entry point."""
    from tritonrepo.server import TritonServer

    tools = TritonTools.locate()
    env = TritonServer.environment(tools)
    pa_binary, pa_env = perf_analyzer()
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(pa_binary.parent), env["LD_LIBRARY_PATH"]])
    return env


def _repository(plan: sweep.SweepPlan, target: Target, folder: Path) -> Path:
    """A repository holding only the swept model, its config.pbtxt the untuned variant (where both tools start)."""
    if plan.swept != plan.entry:
        raise TritonRepoError(f"Model Analyzer's default search profiles one model; {plan.entry} is an ensemble "
                              f"(compare on a plan whose entry is the swept model)")
    spec = served_spec(plan.swept)
    untuned = dataclasses.replace(
        spec, deployments=spec.deployments | {target: sweep.UNTUNED.apply(spec.deployment(target))})
    shutil.copytree(MODEL_REPOSITORY / plan.swept / "1", folder / plan.swept / "1",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (folder / plan.swept / "config.pbtxt").write_text(text_format.MessageToString(
        render.model_config(untuned, target)))
    return folder


def profile_config(plan: sweep.SweepPlan, repository: Path, inputs: Path, work: Path,
                   max_concurrency: int | None = None) -> dict:
    """Model Analyzer's profile config: its default (automatic brute) search, local launch of our tritonserver and
    perf_analyzer, the plan's p95 bound as its latency constraint. ``max_concurrency`` caps its concurrency sweep
    (default 1024): on a small machine the points past what the p95 bound allows (Little's law: concurrency /
    throughput > bound) only cost time and cannot change its best config within the bound."""
    tools = TritonTools.locate()
    pa_binary, _ = perf_analyzer()
    return {
        "model_repository": str(repository),
        "output_model_repository_path": str(work / "output-repository"),
        "override_output_model_repository": True,
        "export_path": str(work / "export"),
        "checkpoint_directory": str(work / "checkpoints"),
        "triton_launch_mode": "local",
        "triton_server_path": str(tools.tritonserver),
        "triton_server_flags": {"backend_directory": str(tools.backend_dir)},
        "triton_output_path": str(work / "tritonserver.log"),
        "perf_analyzer_path": str(pa_binary),
        "client_protocol": "grpc",
        "profile_models": {plan.swept: {
            "cpu_only": True,
            "perf_analyzer_flags": {"input-data": str(inputs)},
            "constraints": {"perf_latency_p95": {"max": int(plan.p95_bound_ms)}},
        }},
        "inference_output_fields": ["model_name", "batch_size", "concurrency", "model_config_path",
                                    "instance_group", "max_batch_size", "satisfies_constraints", *METRICS],
        **({"run_config_search_max_concurrency": max_concurrency} if max_concurrency else {}),
    }


def run_model_analyzer(plan: sweep.SweepPlan, target: Target, work: Path,
                       max_concurrency: int | None = None) -> tuple[Path, float]:
    """Profile the plan's model with Model Analyzer; returns its inference CSV and the wall time. It checkpoints into
    ``work``: run again with the same folder and it resumes (measured configs are not measured again); a finished
    run in ``work`` is reused as it is."""
    import yaml

    csv_path = work / "export" / "results" / "metrics-model-inference.csv"
    done = work / "finished.json"
    if done.exists() and csv_path.exists():
        return csv_path, json.loads(done.read_text())["wall_s"]
    binary = VENV / "bin" / "model-analyzer"
    if not binary.exists():
        raise TritonRepoError(f"Model Analyzer is not installed in {VENV}: run `tritonrepo perf model-analyzer "
                              f"--install` (its own venv, ~600 MB)")
    if not (work / "repository" / plan.swept).exists():
        _repository(plan, target, work / "repository")
    repository = work / "repository"
    inputs = sweep.write_inputs(plan, work / "inputs.json")
    config = work / "model-analyzer.yaml"
    config.write_text(yaml.safe_dump(profile_config(plan, repository, inputs, work, max_concurrency)))
    t0 = time.perf_counter()
    with open(work / "model-analyzer.log", "a") as out:
        proc = subprocess.run([str(binary), "profile", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT,
                              env=_environment(), cwd=work)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not csv_path.exists():
        tail = (work / "model-analyzer.log").read_text()[-3000:]
        raise TritonRepoError(f"model-analyzer profile failed (exit {proc.returncode}):\n{tail}")
    done.write_text(json.dumps({"wall_s": wall}))
    return csv_path, wall


def read_csv(path: Path) -> list[dict]:
    """Model Analyzer's inference CSV as rows with our field names (milliseconds, infer/s)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {HEADERS[k]: v for k, v in r.items() if k in HEADERS}
            missing = {"model", "config", "concurrency", "infer_per_s", "p95_ms"} - row.keys()
            if missing:
                raise TritonRepoError(f"{path}: no column for {sorted(missing)}; profile with inference_output_fields "
                                      f"including perf_throughput and perf_latency_p95 (header: {list(r)})")
            for key in ("concurrency", "infer_per_s", "p90_ms", "p95_ms", "p99_ms", "avg_ms", "server_queue_ms",
                        "server_compute_ms"):
                if key in row:
                    row[key] = float(row[key])
            rows.append(row)
    return rows


def import_csv(path: Path, *, model: str, target: Target, p95_bound_ms: float,
               hardware: dict | None = None) -> Profile:
    """A profile in our format from Model Analyzer's inference CSV: one variant per config it measured (named after
    its config folder, e.g. ``sbert_encoder_config_3``), with the best within the p95 bound, so the planner can use
    it. ``hardware`` is the provenance of where it was measured (Model Analyzer's CSV does not record it)."""
    configs: dict[str, dict] = {}
    rows: dict[str, list[PerfRow]] = {}
    for row in read_csv(path):
        if row["model"] != model:
            continue
        configs.setdefault(row["config"], {"instance_group": row.get("instance_group"),
                                           "max_batch_size": row.get("max_batch_size")})
        rows.setdefault(row["config"], []).append(PerfRow(
            concurrency=row["concurrency"], p50_ms=0.0,  # Model Analyzer does not export p50
            **{k: row.get(k, 0.0) for k in ("infer_per_s", "p90_ms", "p95_ms", "p99_ms", "avg_ms", "server_queue_ms",
                                            "server_compute_ms")}))
    if not configs:
        raise TritonRepoError(f"{path} has no rows for model {model!r}")
    results = [Swept(name, tuple(sorted(rows[name], key=lambda r: r.concurrency)), configs[name])
               for name in sorted(configs)]
    return Profile(model=model, target=target, source=f"model-analyzer csv {path.name}", provenance=hardware or {},
                   p95_bound_ms=p95_bound_ms, variants=tuple(results), best=sweep.best(results, p95_bound_ms),
                   untuned=sweep.best([v for v in results if v.variant.endswith("_config_default")], p95_bound_ms))


def compare(name: str, *, target: Target = Target.CPU, out_dir: Path = ROOT / "perf" / "reference" / "model-analyzer",
            measurement_ms: int = 3000, work_dir: Path | None = None, max_concurrency: int | None = None) -> dict:
    """Model Analyzer's default search, then our sweep, on the same model, inputs, machine and p95 bound.
    ``work_dir``: Model Analyzer's folder (kept; a rerun resumes from its checkpoint), else a temporary one."""
    plan = sweep.PLANS[name]
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        csv_path, ma_wall = run_model_analyzer(plan, target, work, max_concurrency)
        shutil.copy(csv_path, out_dir / f"{name}-metrics-model-inference.csv")
        for extra in ("model-analyzer.yaml", "model-analyzer.log"):
            shutil.copy(work / extra, out_dir / f"{name}-{extra}")
    origin = provenance()
    theirs = import_csv(out_dir / f"{name}-metrics-model-inference.csv", model=plan.swept, target=target,
                        p95_bound_ms=plan.p95_bound_ms, hardware=origin)
    ours, _ = sweep.run(name, target=target, measurement_ms=measurement_ms, out_dir=out_dir / "ours")
    counts = {who: {"configs": len(p.variants), "measurements": sum(len(v.rows) for v in p.variants), "wall_s": wall,
                    **{k: b and dataclasses.asdict(b) for k, b in (("best", p.best), ("untuned", p.untuned))}}
              for who, p, wall in (("model_analyzer", theirs, round(ma_wall, 1)), ("ours", ours, ours.wall_s))}
    result = {
        "model": plan.swept, "target": target, "p95_bound_ms": plan.p95_bound_ms, "inputs": plan.inputs,
        "provenance": origin,
        "model_analyzer": {"version": VERSION, "search": "default brute (instance count x max_batch_size x "
                                                         "concurrency, dynamic batching)",
                           **counts["model_analyzer"]},
        "ours": counts["ours"],
    }
    ma_best, our_best = theirs.best, ours.best
    result["ours_over_model_analyzer"] = (round(our_best.infer_per_s / ma_best.infer_per_s, 2)
                                          if ma_best and our_best else None)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    return result
