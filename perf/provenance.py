"""Where and with what a measurement was taken: machine, versions, commit, date."""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
import subprocess

from tritonrepo.paths import ROOT

TRITON_VERSION = "2.51.0"  # the tritonserver of nvidia-pytriton 0.7.0 (same as NGC 24.10)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions(*packages: str) -> dict[str, str]:
    found = {}
    for name in packages:
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "not installed"
    return found


def provenance(*packages: str) -> dict:
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": None, "platform": platform.platform()},
        "triton": TRITON_VERSION,
        "versions": versions("onnxruntime", "tritonclient", "numpy", *packages),
    }


def write_result(result: dict, name: str, out=None) -> dict:
    """Write a benchmark's result JSON (default perf/results/<name>-<time>.json); adds its path as ``output``."""
    import json
    import time

    results = ROOT / "perf" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = out or results / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    result["output"] = str(out)
    return result
