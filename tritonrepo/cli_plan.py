"""`tritonrepo plan`: the cheapest instances per service from measured profiles, and its verification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import paths
from .cli_app import console as _console


def plan(slo: Path = typer.Option(..., "--slo", help="SLO YAML (perf/slos/example.yaml)."),
         catalog: Path = typer.Option(None, help="Instance catalog YAML (default perf/catalog/aws-us-east-1.yaml)."),
         price_list: Optional[Path] = typer.Option(None, help="AWS Price List offer JSON overriding catalog prices."),
         report: Path = typer.Option(paths.RUNS / "plan" / "plan.md", help="Markdown report (plots beside it)."),
         profiles: Path = typer.Option(paths.ROOT / "perf" / "profiles", help="Profiles root folder."),
         top: int = typer.Option(3, help="Options shown per service."),
         as_json: bool = typer.Option(False, "--json", help="Print the whole plan as JSON (nothing else)."),
         verify: bool = typer.Option(False, "--verify", help="Measure the plan on this machine (its cpu options): "
                                     "capacity of each service's mix and p95 at the planned load, against the plan."),
         service: Optional[list[str]] = typer.Option(None, "--service", help="With --verify: just these services."),
         repeats: int = typer.Option(1, help="With --verify: capacity runs per service (each recorded into "
                                     "--profiles)."),
         measurement_ms: int = typer.Option(3000, help="With --verify: perf_analyzer window (at least)."),
         probes: int = typer.Option(6, help="With --verify: rates tried per capacity search."),
         min_arrivals: int = typer.Option(200, help="With --verify: arrivals a window holds at least (all models)."),
         out: Path = typer.Option(paths.RUNS / "plan" / "verify.json", help="With --verify: the report JSON."),
         repository: Path = typer.Option(paths.MODEL_REPOSITORY, "--repository", "-r",
                                         help="With --verify: the model repository served.")):
    """Cheapest instance type and count per service that meets each model's p95 at its peak load; exit 1 when a
    service has no feasible option (or, with --verify, when the measurement is off the plan or misses a target)."""
    from .perf import planner

    if verify:
        return _verify_plan(slo, tuple(service or ()), profiles, repeats, measurement_ms, probes, min_arrivals, out,
                            repository)
    instances = planner.load_catalog(catalog or planner.CATALOG)
    if price_list:
        instances = planner.load_price_list(price_list, instances)
    headroom, services = planner.load_slos(slo)
    result = planner.plan(headroom, services, instances, profiles)
    written = planner.report(result, services, report, profiles)
    if as_json:
        typer.echo(json.dumps(result.to_json() | {"report": str(written)}, indent=2))
    else:
        _print_plan(result, services, top)
        typer.echo(f"report: {written}")
    if not result.feasible:
        raise typer.Exit(1)


def _print_plan(result, services, top: int) -> None:
    from rich.table import Table

    from .perf.planner import capacity_range, planned_p95

    console = _console()
    for svc in services:
        t = Table(title=f"{svc.name}: " + ", ".join(f"{' or '.join(m.candidates)} p95<={m.p95_ms:g} ms @ "
                                                     f"{m.peak_rps:g} req/s"
                                                     for m in svc.models) + f" (headroom x{result.headroom:g})")
        for col in ("instance", "count", "config", "p95 ms at peak", "req/s per instance (runs)", "$/hour", "$/M req",
                    "note"):
            t.add_column(col)
        for o in result.options[svc.name][:top]:
            configs = "; ".join(f"{c.model} {c.variant} @ {c.load}" for c in o.capacities)
            t.add_row(o.instance.name, str(o.count), configs, "; ".join(planned_p95(p) for p in o.p95_planned),
                      "; ".join(capacity_range(c) for c in o.capacities), f"{o.usd_per_hour:,.2f}",
                      f"{o.usd_per_million:,.2f}", ("estimate; " if o.estimated else "") +
                      ("co-location measured; " if (o.colocation or "").startswith("measured") else
                       "co-location additive; " if o.colocation else "") + f"price {o.instance.source_kind}")
        console.print(t)
        if not result.options[svc.name]:
            console.print(f"[red]{svc.name}: no priced instance type meets the SLO[/red]")
        console.print(f"unpriced but feasible: {[o.instance.name for o in result.unpriced[svc.name]] or '-'}; "
                      f"not planned: {len(result.infeasible[svc.name])} types (see the report)")


def _verify_plan(slo: Path, services: tuple[str, ...], profiles: Path, repeats: int, measurement_ms: int,
                 probes: int, min_arrivals: int, out: Path, repository: Path) -> None:
    from rich.table import Table

    from .perf import capacity

    result = capacity.verify(slo, services, profiles=profiles, repeats=repeats, measurement_ms=measurement_ms,
                             probes=probes, min_arrivals=min_arrivals, repository=repository)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    pct = lambda e: "-" if e is None else f"{e:+.0%}"  # noqa: E731
    t = Table(title=f"plan --verify on this machine ({result['machine_cores']} cores): predicted vs measured")
    for col in ("service", "model", "capacity predicted", "measured", "error", "planned rate", "p95 predicted",
                "p95 measured", "error", "p95 target"):
        t.add_column(col, justify="left" if col in ("service", "model") else "right")
    for svc in result["services"]:
        for m in svc["models"]:
            t.add_row(svc["service"], f"{m['model']} ({m['variant']})", f"{m['capacity_predicted']:.0f}",
                      "/".join(f"{x:.0f}" for x in m["capacity_measured"]), pct(svc["capacity_error"]),
                      f"{m['planned_rate']:.0f}", "-" if m["p95_predicted_ms"] is None else
                      f"{'' if m['p95_predicted_kind'] == '~' else m['p95_predicted_kind']}{m['p95_predicted_ms']:.1f}",
                      "/".join(f"{x:.1f}" for x in m["p95_measured_ms"]), pct(m["p95_error"]),
                      f"{m['p95_target_ms']:g}")
    _console().print(t)
    for svc in result["services"]:
        typer.echo(f"{svc['service']}: {svc['count']} x {svc['instance']}, co-location: {svc['colocation'] or '-'}; "
                   f"{'within' if svc['within'] else 'OFF'} the 15% capacity / 20% p95 bounds; targets "
                   f"{'met' if svc['meets_slo_at_planned_load'] else 'MISSED'} at the planned load")
    typer.echo(f"report: {out}")
    if not result["passed"] or not all(s["meets_slo_at_planned_load"] for s in result["services"]):
        raise typer.Exit(1)
