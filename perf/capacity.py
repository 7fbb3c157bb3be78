"""A service's capacity measured as it is served: its models loaded together in the configs the plan chose, Poisson
arrivals for every model at once in the SLO's mix, the total rate searched as the single-model sweeps search theirs;
and ``verify``, which judges a plan's predictions against such a run on the day.

- ``measure_mix``: one load level. One perf_analyzer per model, started together, each sending Poisson arrivals
  (``--async``) at its share of the total rate. Windows are sized so the whole mix holds >= 200 arrivals, and each
  process measures exactly 3 of them (no stability criterion: a process that went on alone would measure its model
  without its neighbours; repeated runs give the spread instead).
- ``capacity_run``: the highest total rate at which every model meets its own p95 target and the server takes the
  offered load (``sweep.capacity_search``), then the p95 curve below it (at 50% and 75% of it), which the planner
  interpolates for the p95 at the planned load.
- Runs are appended to the model's profile (``capacity_runs``) for a one-model service, and to the joint profile
  ``<hardware>/joint/<model>+<model>.json`` for co-located models; the planner reads both (perf/planner.py).
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import tritonclient.grpc as grpcclient

from tritonrepo.errors import TritonRepoError
from tritonrepo.export.families import with_dependencies
from tritonrepo.paths import MODEL_REPOSITORY
from tritonrepo.server import TritonServer
from tritonrepo.targets import Target
from tritonrepo.tuning import Variant

from . import perf_analyzer, planner, profile_file, sweep
from .provenance import provenance

log = logging.getLogger(__name__)
WINDOWS = 3


@dataclass(frozen=True)
class Part:
    """One model of a service's mix: its share of the requests, p95 target and the config variant it is served in."""

    model: str
    share: float
    p95_ms: float
    variant: Variant
    plan: sweep.SweepPlan


def measure_mix(url: str, parts: list[Part], data: dict[str, Path], total_rate: float,
                measurement_ms: int, min_arrivals: int = 200) -> dict | None:
    """Every model at its share of ``total_rate`` at once, from an idle server; None when a model could not be
    measured."""
    drain(url, [p.plan.entry for p in parts])
    window = max(measurement_ms, int(min_arrivals * 1000 / total_rate))

    def one(part: Part) -> dict | None:
        try:
            return perf_analyzer.run(part.plan.entry, url, data[part.model], request_rate=total_rate * part.share,
                                     measurement_ms=window, stability_pct=1000, max_trials=WINDOWS,
                                     min_arrivals=0).as_dict()
        except TritonRepoError as e:
            log.warning("%s at %.1f/s in the mix: no measurement: %s", part.model, total_rate * part.share,
                        str(e)[:300])
            return None

    with ThreadPoolExecutor(len(parts)) as pool:
        rows = dict(zip((p.model for p in parts), pool.map(one, parts)))
    if any(r is None for r in rows.values()):
        return None
    delivered = sum(r["infer_per_s"] for r in rows.values())
    row = {"total_rate": round(total_rate, 1), "infer_per_s": round(delivered, 2), "window_ms": window, "models": rows}
    ok = load_ratio(row, parts) <= 1
    log.info("mix at %.1f/s: %s -> %s", total_rate, ", ".join(f"{m} p95 {r['p95_ms']:.1f} ms" for m, r in
                                                             rows.items()), "ok" if ok else "over")
    return row | {"ok": ok}


def drain(url: str, entries: list[str], quiet_s: float = 0.5, timeout_s: float = 120) -> None:
    """Wait until the entries have answered nothing new for ``quiet_s``: an overloaded rate leaves a queue behind
    when perf_analyzer stops sending, which the next rate would otherwise start with."""
    with grpcclient.InferenceServerClient(url) as client:
        def answered() -> int:
            stats = client.get_inference_statistics(as_json=True).get("model_stats", [])
            return sum(int(m["inference_stats"]["success"].get("count", 0)) + int(m["inference_stats"]["fail"].get(
                "count", 0)) for m in stats if m["name"] in entries)

        end, last = time.monotonic() + timeout_s, answered()
        while time.monotonic() < end:
            time.sleep(quiet_s)
            now = answered()
            if now == last:
                return
            last = now
    raise TritonRepoError(f"{entries} still answering a backlog after {timeout_s:g} s")


def warm_up(url: str, parts: list[Part], data: dict[str, Path]) -> None:
    """A closed loop of 2 per model for a few seconds: the first inferences of a freshly loaded config are slow."""
    for p in parts:
        perf_analyzer.run(p.plan.entry, url, data[p.model], concurrency=2, measurement_ms=1000, stability_pct=1000,
                          max_trials=3)


def capacity_run(url: str, parts: list[Part], data: dict[str, Path], predicted: float, measurement_ms: int,
                 probes: int = 5, min_arrivals: int = 200, origin: dict | None = None) -> dict:
    """The highest total rate of the mix within every target, searched from 90% of ``predicted`` (never past 1.6x
    it), then the p95 curve at 50% and 75% of it."""
    rows = []

    def measure(rate: float) -> dict | None:
        row = measure_mix(url, parts, data, rate, measurement_ms, min_arrivals)
        rows.append(row or {"total_rate": rate, "ok": False, "models": {}})
        return row

    rate = sweep.capacity_search(measure, predicted, 1.6 * predicted, 0, probes, ok=lambda row: row["ok"],
                                 start=0.9 * predicted)
    for fraction in (0.5, 0.75) if rate else ():
        measure(rate * fraction)
    measured = [r for r in rows if r["models"]]
    capacity = crossing([(r["total_rate"], load_ratio(r, parts)) for r in measured])
    return {"provenance": origin or provenance(), "rate": rate, "capacity": round(capacity, 1),
            "predicted": round(predicted, 1), "shares": {p.model: p.share for p in parts},
            "p95_ms": {p.model: p.p95_ms for p in parts}, "variants": {p.model: p.variant.name for p in parts},
            "measurement_ms": measurement_ms, "min_arrivals": min_arrivals, "rows": measured}


def load_ratio(row: dict, parts: list[Part]) -> float:
    """How far the row is from its targets: the highest p95 / target among the models (> 1: a target missed), or
    10 when the server did not take the offered load. That test needs >= 200 arrivals a window: below, the count
    delivered is Poisson noise (4 pairs/s offered, 3 s windows: 2.8/s counted at p50 109 ms, no queue), and p95
    alone tells an overloaded queue."""
    arrivals = row["total_rate"] * row.get("window_ms", 1e9) / 1000
    delivered = sum(r["infer_per_s"] for r in row["models"].values())
    if arrivals >= 200 and delivered < perf_analyzer.DELIVERED * row["total_rate"]:
        return 10.0
    return max(row["models"][p.model]["p95_ms"] / p.p95_ms for p in parts)


def crossing(points: list[tuple[float, float]]) -> float:
    """The rate at which the load ratio reaches 1 on the non-decreasing least-squares fit of (rate, ratio) over all of
    a run's rows (pool-adjacent-violators), linear between rows: at the p95 target a Poisson p95 curve is flat, and
    one noisy row would otherwise decide the capacity (a search's last passing rate moved +-20% between runs here).
    0 when the lowest rate already misses; the highest rate when none does."""
    blocks: list[list[float]] = []  # [mean ratio, weight, first index, last index]
    xs = [x for x, _ in sorted(points)]
    for i, (_, y) in enumerate(sorted(points)):
        blocks.append([y, 1.0, i, i])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (y2, w2, a, _), (y1, w1, _, b) = blocks[-2], blocks.pop()
            blocks[-1] = [(y2 * w2 + y1 * w1) / (w2 + w1), w2 + w1, a, b]
    fit = [y for y, _, a, b in blocks for _ in range(a, b + 1)]
    if not fit or fit[0] > 1:
        return 0.0
    over = next((i for i, y in enumerate(fit) if y > 1), None)
    if over is None:
        return xs[-1]
    x0, x1, y0, y1 = xs[over - 1], xs[over], fit[over - 1], fit[over]
    return x0 + (x1 - x0) * (1 - y0) / ((y1 - y0) or 1)


def record(run: dict, hardware: str, profiles: Path) -> Path:
    """Append ``run`` to the model's profile (one model) or to the service's joint profile."""
    models = sorted(run["shares"])
    if len(models) == 1:
        path = profiles / hardware / f"{models[0]}.json"
        profile = profile_file.read(path)
        return profile_file.write(path, replace(profile, capacity_runs=(*profile.capacity_runs, run)))
    path = planner.joint_path(models, hardware, profiles)
    joint = profile_file.read_joint(path) if path.exists() else {"models": models, "runs": []}
    return profile_file.write(path, joint | {"runs": [*joint["runs"], run]})


def _parts(option: planner.Option, service: planner.Service) -> list[Part]:
    peaks = {m.model: m for m in service.models}
    total = sum(m.peak_rps for m in service.models)
    parts = []
    for slo, cap in zip(service.models, option.capacities):
        plan = sweep.plan_for(cap.model)
        variant = next((v for v in plan.variants if v.name == cap.variant), None)
        if variant is None:
            raise TritonRepoError(f"{cap.model}: the plan's config {cap.variant!r} is not a variant of its sweep plan")
        parts.append(Part(cap.model, peaks[slo.model].peak_rps / total, slo.p95_ms, variant, plan))
    return parts


def verify(slo_file: Path, names: tuple[str, ...] = (), *, hardware: str = "cpu", target: Target = Target.CPU,
           profiles: Path = planner.PROFILES, repeats: int = 1, measurement_ms: int = 3000, probes: int = 5,
           min_arrivals: int = 200, repository: Path = MODEL_REPOSITORY) -> dict:
    """Plan each service on ``hardware``'s instance types, then on this machine: start the real server with the
    configs the plan chose, measure the mix's capacity ``repeats`` times (each run recorded into the profiles, for the
    next plan) and the p95 at the rates the plan gives one instance (scaled to this machine's cores), and report both
    against the plan's predictions made before these runs: its capacity estimate (the median of the measurements it
    holds; the count was sized on their low end) and its p95 at the planned load."""
    headroom, services = planner.load_slos(slo_file)
    unknown = set(names) - {s.name for s in services}
    if unknown:
        raise planner.PlanError(f"{slo_file}: no services {sorted(unknown)} (has {[s.name for s in services]})")
    services = [s for s in services if not names or s.name in names]
    catalog = [i for i in planner.load_catalog() if i.profile == hardware and i.gpu is None]
    predicted = planner.plan(headroom, services, catalog, profiles)
    cores = os.cpu_count() or 1
    report = {"slo": str(slo_file), "headroom": headroom, "hardware": hardware, "machine_cores": cores,
              "provenance": provenance(), "services": []}
    for svc in services:
        option = predicted.best(svc.name) or next(iter(predicted.unpriced[svc.name]), None)
        if option is None:
            raise planner.PlanError(f"{svc.name}: no {hardware} instance type meets the SLO: "
                                    + "; ".join(predicted.infeasible[svc.name][:3]))
        parts = _parts(option, svc)
        here = cores / option.machine_cores  # this machine against the one the profiles were measured on
        capacity_here = option.measured_central * here  # the estimate; the count was sized on the low end
        planned_here = sum(m.peak_rps for m in svc.models) / option.count * cores / option.instance.vcpus
        runs, planned = _measure(parts, capacity_here, planned_here, target, repository, repeats, measurement_ms,
                                 probes, min_arrivals, report["provenance"])
        for run in runs:
            record(run | {"repository": str(repository)}, hardware, profiles)
        report["services"].append(_judge(svc, option, parts, runs, planned, capacity_here, planned_here))
    report["passed"] = all(s["within"] for s in report["services"])
    return report


def _measure(parts, capacity_here, planned_here, target, repository, repeats, measurement_ms, probes, min_arrivals,
             origin):
    with tempfile.TemporaryDirectory() as tmp:
        data = {p.model: sweep.write_inputs(p.plan, Path(tmp) / f"{p.model}.json", repository=repository)
                for p in parts}
        needed = with_dependencies([p.plan.entry for p in parts], repository)
        with TritonServer(repository, model_config_name=target, explicit_models=needed) as server:
            with grpcclient.InferenceServerClient(server.grpc_url) as client:
                for p in parts:
                    client.load_model(p.plan.swept, config=sweep.variant_config(p.plan, p.variant, target, repository),
                                      headers=server.admin_headers)
            warm_up(server.grpc_url, parts, data)
            runs = []
            for _ in range(repeats):  # each run searches from the last one's figure (the plan's, first)
                start = next((r["capacity"] for r in reversed(runs) if r["capacity"]), capacity_here)
                # the invocation's provenance: its own records of earlier services make the tree dirty
                run = capacity_run(server.grpc_url, parts, data, start, measurement_ms, probes, min_arrivals,
                                   origin | {"date": provenance()["date"]})
                runs.append(run)
                runs[-1]["predicted"] = round(capacity_here, 1)
            planned = [row for _ in range(WINDOWS)
                       if (row := measure_mix(server.grpc_url, parts, data, planned_here, measurement_ms,
                                              min_arrivals))]
    return runs, planned


def _error(predicted: float | None, measured: float | None) -> float | None:
    return None if not predicted or not measured else round((predicted - measured) / measured, 3)


def _judge(svc, option, parts, runs, planned, capacity_here, planned_here) -> dict:
    capacity = statistics.median(r["capacity"] for r in runs)
    models = []
    for part, cap, p95 in zip(parts, option.capacities, option.p95_planned):
        measured = [row["models"][part.model]["p95_ms"] for row in planned]
        p95_measured = statistics.median(measured) if measured else None
        models.append({
            "model": part.model, "variant": part.variant.name, "share": round(part.share, 4),
            "p95_target_ms": part.p95_ms,
            "capacity_predicted": round(capacity_here * part.share, 1),
            "capacity_measured": [round(r["capacity"] * part.share, 1) for r in runs],
            "planned_rate": round(planned_here * part.share, 1),
            "p95_predicted_ms": p95 and p95[0], "p95_predicted_kind": p95 and p95[1],
            "p95_measured_ms": measured, "p95_error": _error(p95 and p95[0], p95_measured)})
    capacity_error = _error(capacity_here, capacity)
    p95_errors = [m["p95_error"] for m in models]
    return {
        "service": svc.name, "instance": option.instance.name, "count": option.count,
        "colocation": option.colocation, "capacity_predicted": round(capacity_here, 1),
        "capacity_range_predicted": [round(x * capacity_here / option.measured_central, 1)
                                     for x in option.measured_range],
        "capacity_measured": [r["capacity"] for r in runs], "capacity_error": capacity_error,
        "planned_rate": round(planned_here, 1), "models": models,
        "within": (capacity_error is not None and abs(capacity_error) <= 0.15
                   and all(e is not None and abs(e) <= 0.20 for e in p95_errors)),
        "meets_slo_at_planned_load": bool(planned) and all(
            statistics.median(m["p95_measured_ms"]) <= m["p95_target_ms"] for m in models if m["p95_measured_ms"]),
        "runs": runs, "planned_rows": planned}
