"""Run the locust load test headless for a bounded time and check each model's p95 and the error rate.

Targets come from an SLO file (``perf/slos/*.yaml``: the tightest p95 given for each model). Locust writes
``load_stats.csv``, ``load_stats_history.csv`` and ``load.html`` into the output folder; the result lists every
missed target, so a caller (``tritonrepo perf load``) can fail on it.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from tritonrepo.errors import TritonRepoError

from .planner import load_slos

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def targets(slo_path: Path) -> tuple[dict[str, float], str]:
    """Per model the tightest p95 target in the SLO file, and a request mix proportional to the peak loads."""
    _, services = load_slos(slo_path)
    p95: dict[str, float] = {}
    peak: dict[str, float] = {}
    for svc in services:
        for m in svc.models:
            p95[m.model] = min(p95.get(m.model, m.p95_ms), m.p95_ms)
            peak[m.model] = peak.get(m.model, 0.0) + m.peak_rps
    return p95, ",".join(f"{m}={w:g}" for m, w in peak.items())


def run(url: str, *, p95_targets: dict[str, float], mix: str, out_dir: Path, users: int = 8, duration_s: int = 30,
        max_error_rate: float = 0.001) -> dict:
    """mix: "model=weight,..." (the locustfile's TRITONREPO_LOAD_MIX)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["TRITONREPO_LOAD_MIX"] = mix
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users),
           "-t", f"{duration_s}s", "--host", url, "--csv", str(out_dir / "load"), "--html", str(out_dir / "load.html"),
           "--only-summary", "--exit-code-on-error", "0", "--stop-timeout", "5"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration_s + 180)
    stats = out_dir / "load_stats.csv"
    if proc.returncode != 0 or not stats.exists():
        raise TritonRepoError(f"locust failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    rows, missed = [], []
    with open(stats) as f:
        for r in csv.DictReader(f):
            if r["Name"] == "Aggregated":
                continue
            n, failed = int(r["Request Count"]), int(r["Failure Count"])
            row = {"model": r["Name"], "requests": n, "failures": failed, "rps": float(r["Requests/s"]),
                   "p50_ms": float(r["50%"]), "p95_ms": float(r["95%"]), "p99_ms": float(r["99%"]),
                   "p95_target_ms": p95_targets.get(r["Name"])}
            rows.append(row)
            if row["p95_target_ms"] is not None and row["p95_ms"] > row["p95_target_ms"]:
                missed.append(f"{row['model']}: p95 {row['p95_ms']:.0f} ms > target {row['p95_target_ms']:g} ms")
            if n == 0 or failed / n > max_error_rate:
                missed.append(f"{row['model']}: {failed}/{n} requests failed (limit {max_error_rate:.2%})")
    for model in set(p95_targets) - {r["model"] for r in rows}:
        missed.append(f"{model}: no requests were made")
    return {"rows": rows, "missed": missed, "users": users, "duration_s": duration_s, "mix": mix,
            "html": str(out_dir / "load.html"), "csv": str(stats)}
