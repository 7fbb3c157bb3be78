"""Capacity planner: measured profiles x instance catalog x SLOs -> the cheapest instance type and count per service.

Inputs
- Profiles: ``perf/profiles/<hardware>/<model>.json`` written by ``tritonrepo perf sweep`` (every config variant's
  perf_analyzer rows: concurrency, throughput, client p95).
- Catalog: ``perf/catalog/*.yaml`` (type, vCPUs, GPU, price with its source and date), optionally overridden by an
  AWS Price List offer file (``load_price_list``).
- SLOs (YAML): a headroom factor and services; a service is one model, or several models co-located on the same
  instances, each with its p95 target and peak requests/s.

Capacity of one instance of a type for a model = the highest throughput among the measured (variant, load) rows whose
p95 meets the target, on the type's hardware: the open-loop Poisson rates the server took (``perf_analyzer.usable``),
or the closed-loop concurrency rows where no open-loop row qualifies (labelled). A CPU type without its own profile is
*estimated* from the ``cpu`` profile, scaled linearly by vCPUs (p95 taken as measured); such options carry the
estimate and its assumption. GPU types without a profile of their GPU are listed as unmeasured, never estimated.
Count = ceil(sum over the service's models of peak x headroom / capacity): co-located models share an instance's
capacity in proportion to their load (an assumption: it ignores interference between models, which a co-located sweep
would measure). Options are ranked by $/hour; types without a price are listed, unranked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tritonrepo.errors import TritonRepoError
from tritonrepo.paths import ROOT

from . import sweep
from .sweep import load_label

PROFILES = ROOT / "perf" / "profiles"
CATALOG = ROOT / "perf" / "catalog" / "aws-us-east-1.yaml"


class PlanError(TritonRepoError):
    """An SLO file, catalog or price list that cannot be planned with."""


@dataclass(frozen=True)
class Instance:
    name: str
    platform: str
    vcpus: int
    memory_gib: float
    gpu: str | None
    gpu_count: int
    profile: str  # folder in perf/profiles measured on this type's processor class
    usd_per_hour: float | None
    source: str | None = None
    source_date: str | None = None
    source_kind: str | None = None


@dataclass(frozen=True)
class ModelSlo:
    model: str
    p95_ms: float
    peak_rps: float
    # other served models that may fill this one's role (e.g. its fp32 and int8 builds: list only those whose
    # measured accuracy you accept); the planner takes whichever gives an instance the most capacity
    alternatives: tuple[str, ...] = ()

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.model, *self.alternatives)


@dataclass(frozen=True)
class Service:
    name: str
    models: tuple[ModelSlo, ...]


@dataclass(frozen=True)
class Capacity:
    """What one instance sustains for one model within its p95 target."""

    model: str
    infer_per_s: float
    p95_ms: float
    variant: str
    load: str  # the measured load level of that row ("c4", "poisson 300/s"), on the profiled hardware
    estimate: str | None = None  # the assumption, when not measured on this type's hardware


@dataclass(frozen=True)
class Option:
    service: str
    instance: Instance
    count: int
    capacities: tuple[Capacity, ...]
    utilisation: float  # load / (count x capacity), headroom included
    peak_rps: float

    @property
    def usd_per_hour(self) -> float | None:
        return None if self.instance.usd_per_hour is None else self.count * self.instance.usd_per_hour

    @property
    def usd_per_million(self) -> float | None:
        cost = self.usd_per_hour
        return None if cost is None else cost / (self.peak_rps * 3600) * 1e6

    @property
    def estimated(self) -> bool:
        return any(c.estimate for c in self.capacities)


@dataclass
class Plan:
    headroom: float
    options: dict[str, list[Option]] = field(default_factory=dict)  # service -> priced options, cheapest first
    unpriced: dict[str, list[Option]] = field(default_factory=dict)  # feasible but no price in the catalog
    infeasible: dict[str, list[str]] = field(default_factory=dict)  # service -> "type: why" lines

    def best(self, service: str) -> Option | None:
        return (self.options.get(service) or [None])[0]


def load_catalog(path: Path = CATALOG) -> list[Instance]:
    data = yaml.safe_load(path.read_text())
    try:
        return [Instance(**row) for row in data["instances"]]
    except (KeyError, TypeError) as e:
        raise PlanError(f"{path}: every instance needs {list(Instance.__dataclass_fields__)}: {e}") from e


def load_price_list(path: Path, catalog: list[Instance]) -> list[Instance]:
    """Override catalog prices with an AWS Price List offer file (bulk JSON: ``products`` + ``terms.OnDemand``).
    EC2 rows count when Linux, shared tenancy, no pre-installed software, capacity ``Used``; SageMaker rows when
    their usage is real-time hosting (``instanceName`` ``ml.*``, component ``Hosting``)."""
    offer = json.loads(path.read_text())
    prices: dict[str, float] = {}
    for sku, product in offer.get("products", {}).items():
        a = product.get("attributes", {})
        ec2 = (a.get("operatingSystem") == "Linux" and a.get("tenancy") == "Shared"
               and a.get("preInstalledSw") == "NA" and a.get("capacitystatus", "Used") == "Used")
        hosting = a.get("instanceName", "").startswith("ml.") and a.get("component", "Hosting") == "Hosting"
        name = a.get("instanceType") if ec2 else a.get("instanceName") if hosting else None
        if not name:
            continue
        for term in offer.get("terms", {}).get("OnDemand", {}).get(sku, {}).values():
            for dim in term.get("priceDimensions", {}).values():
                usd = float(dim.get("pricePerUnit", {}).get("USD", 0) or 0)
                if usd > 0:
                    prices[name] = usd
    origin = f"AWS Price List offer file {path.name} ({offer.get('publicationDate', 'undated')})"
    return [Instance(**{**i.__dict__, "usd_per_hour": prices[i.name], "source": origin,
                        "source_date": offer.get("publicationDate"), "source_kind": "official"})
            if i.name in prices else i for i in catalog]


def load_slos(path: Path) -> tuple[float, list[Service]]:
    data = yaml.safe_load(path.read_text()) or {}
    headroom = float(data.get("headroom", 1.25))
    if headroom < 1:
        raise PlanError(f"{path}: headroom {headroom} must be >= 1 (it multiplies the peak load)")
    services = []
    for i, svc in enumerate(data.get("services") or []):
        try:
            models = tuple(ModelSlo(model=m, p95_ms=float(v["p95_ms"]), peak_rps=float(v["peak_rps"]),
                                    alternatives=tuple(v.get("alternatives") or ()))
                           for m, v in svc["models"].items())
        except (KeyError, TypeError, AttributeError) as e:
            raise PlanError(f"{path}: services[{i}] needs models: {{MODEL: {{p95_ms, peak_rps, alternatives?}}}} "
                            f"({e})") from e
        if not models or any(m.p95_ms <= 0 or m.peak_rps <= 0 for m in models):
            raise PlanError(f"{path}: services[{i}]: p95_ms and peak_rps must be > 0")
        services.append(Service(name=svc.get("name") or "+".join(m.model for m in models), models=models))
    if not services:
        raise PlanError(f"{path}: no services")
    return headroom, services


def load_profile(model: str, hardware: str, profiles: Path = PROFILES) -> dict | None:
    path = profiles / hardware / f"{model}.json"
    return json.loads(path.read_text()) if path.exists() else None


def best_row(profile: dict, p95_ms: float) -> tuple[str, dict] | None:
    """The profile's highest-throughput row within ``p95_ms``, open loop first (``sweep.best_row``)."""
    return sweep.best_row(profile["variants"], p95_ms)


def capacity(slo: ModelSlo, instance: Instance, profiles: Path = PROFILES) -> Capacity | str:
    """One instance's capacity for the model (the best of its alternatives) within its p95, or why there is none."""
    found = [_capacity(m, slo.p95_ms, instance, profiles) for m in slo.candidates]
    measured = [c for c in found if isinstance(c, Capacity)]
    return max(measured, key=lambda c: c.infer_per_s) if measured else "; ".join(found)


def _capacity(model: str, p95_ms: float, instance: Instance, profiles: Path) -> Capacity | str:
    profile = load_profile(model, instance.profile, profiles)
    if profile is None:
        return f"no measured profile of {model} on {instance.profile}"
    found = best_row(profile, p95_ms)
    if found is None:
        return f"no measured config of {model} meets p95 <= {p95_ms:g} ms on {instance.profile}"
    variant, row = found
    scale, estimate = 1.0, None
    closed = None if row.get("request_rate") else (
        f"closed loop ({load_label(row)}): no open-loop rate measured within p95 {p95_ms:g} ms; Poisson arrivals at "
        "this throughput see a higher p95")
    machine = profile.get("provenance", {}).get("machine") or {}
    if instance.gpu is None:  # no cloud CPU type is the machine the cpu profile was measured on
        measured = int(machine.get("cores") or 1)
        scale = instance.vcpus / measured
        estimate = (f"estimate: measured on {measured} vCPUs ({machine.get('cpu', '?')}), scaled x{scale:g} "
                    "linearly in vCPUs, same per-vCPU speed assumed; p95 as measured")
    elif instance.gpu_count > 1:
        scale = instance.gpu_count
        estimate = (f"estimate: measured on one {instance.gpu}, x{scale} for {scale} GPUs (one instance group per "
                    "GPU, linear); p95 as measured")
    proxy = profile.get("proxy") and f"proxy config: {profile['proxy']}"  # not the config the target deploys
    estimate = "; ".join(filter(None, (estimate, closed, proxy))) or None
    return Capacity(model=model, infer_per_s=row["infer_per_s"] * scale, p95_ms=row["p95_ms"], variant=variant,
                    load=load_label(row), estimate=estimate)


def plan(headroom: float, services: list[Service], catalog: list[Instance], profiles: Path = PROFILES) -> Plan:
    result = Plan(headroom=headroom)
    for svc in services:
        priced, unpriced, why = [], [], []
        for inst in catalog:
            caps = [capacity(m, inst, profiles) for m in svc.models]
            missing = [c for c in caps if isinstance(c, str)]
            if missing:
                why.append(f"{inst.name}: {'; '.join(missing)}")
                continue
            load = sum(m.peak_rps * headroom / c.infer_per_s for m, c in zip(svc.models, caps))
            count = max(1, math.ceil(load - 1e-9))
            option = Option(service=svc.name, instance=inst, count=count, capacities=tuple(caps),
                            utilisation=load / count, peak_rps=sum(m.peak_rps for m in svc.models))
            (priced if inst.usd_per_hour is not None else unpriced).append(option)
        priced.sort(key=lambda o: (o.usd_per_hour, o.estimated, o.instance.name))
        result.options[svc.name], result.unpriced[svc.name], result.infeasible[svc.name] = priced, unpriced, why
    return result


def _fmt_money(x: float | None) -> str:
    return "-" if x is None else f"${x:,.2f}"


def report(result: Plan, services: list[Service], out: Path, profiles: Path = PROFILES, top: int = 5) -> Path:
    """Markdown report: per service the ranked options, the unpriced and infeasible types, and a throughput-vs-p95
    plot of every measured config of each model (PNG beside the report)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# Capacity plan (headroom x{result.headroom:g})", ""]
    for svc in services:
        slo = ", ".join(f"{' or '.join(m.candidates)}: p95 <= {m.p95_ms:g} ms at {m.peak_rps:g} req/s"
                        for m in svc.models)
        lines += [f"## {svc.name}", "", slo, "", "| rank | instance | count | config (per model) | predicted p95 ms | "
                  "capacity req/s per instance | utilisation | $/hour | $ per million req | price source |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for rank, o in enumerate(result.options[svc.name][:top], start=1):
            lines.append(_row(str(rank), o))
        for o in result.unpriced[svc.name]:
            lines.append(_row("unpriced", o))
        estimates = {c.estimate for o in result.options[svc.name] + result.unpriced[svc.name]
                     for c in o.capacities if c.estimate}
        lines += [""] + [f"- {e}" for e in sorted(estimates)]
        if result.infeasible[svc.name]:
            lines += ["", "Not planned:", ""] + [f"- {w}" for w in result.infeasible[svc.name]]
        for m in svc.models:
            for model in m.candidates:
                png = _plot(model, m.p95_ms, out.parent, profiles)
                if png:
                    lines += ["", f"![{model}: throughput vs p95 per config]({png.name})"]
        lines.append("")
    out.write_text("\n".join(lines))
    return out


def _row(rank: str, o: Option) -> str:
    configs = "; ".join(f"{c.model} {c.variant} @ {c.load}" for c in o.capacities)
    p95 = "; ".join(f"{c.p95_ms:.1f}" for c in o.capacities)
    cap = "; ".join(f"{c.infer_per_s:.0f}" + (" (est.)" if c.estimate else "") for c in o.capacities)
    src = "-" if o.instance.source is None else f"{o.instance.source_kind}, {o.instance.source_date}"
    return (f"| {rank} | {o.instance.name} | {o.count} | {configs} | {p95} | {cap} | {o.utilisation:.0%} | "
            f"{_fmt_money(o.usd_per_hour)} | {_fmt_money(o.usd_per_million)} | {src} |")


def _plot(model: str, p95_ms: float, folder: Path, profiles: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for hw in sorted(p.name for p in profiles.iterdir() if p.is_dir()):
        profile = load_profile(model, hw, profiles)
        for v in (profile or {}).get("variants", []):
            rows = v["rows"]
            ax.plot([r["p95_ms"] for r in rows], [r["infer_per_s"] for r in rows], marker="o", ms=3,
                    label=f"{hw}: {v['variant']}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.axvline(p95_ms, color="red", ls="--", lw=1, label=f"p95 target {p95_ms:g} ms")
    ax.set(xlabel="client p95 latency (ms)", ylabel="throughput (req/s)", title=f"{model}: every measured config")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = folder / f"{model}-throughput-vs-p95.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
