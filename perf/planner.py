"""Capacity planner: measured profiles x instance catalog x SLOs -> the cheapest instance type and count per service.

Inputs
- Profiles: ``perf/profiles/<hardware>/<model>.json`` written by ``tritonrepo perf sweep`` (every config variant's
  perf_analyzer rows: concurrency, throughput, client p95), with the capacity runs of ``tritonrepo plan --verify``
  (``capacity_runs``), and joint profiles ``<hardware>/joint/<a>+<b>.json`` of co-located models (perf/capacity.py).
- Catalog: ``perf/catalog/*.yaml`` (type, vCPUs, GPU, price with its source and date), optionally overridden by an
  AWS Price List offer file (``load_price_list``).
- SLOs (YAML): a headroom factor and services; a service is one model, or several models co-located on the same
  instances, each with its p95 target and peak requests/s.

Capacity of one instance of a type for a model = the highest throughput among the measured (variant, load) rows whose
p95 meets the target, on the type's hardware: the open-loop Poisson rates the server took (``perf_analyzer.usable``),
or the closed-loop concurrency rows where no open-loop row qualifies (labelled). Capacity runs of that variant at that
target are repeated measurements of the same figure, which supersede the sweep's one search: the capacity is the range
over them, the count is chosen at its low end, and their median is the estimate ``plan --verify`` judges. A CPU type
without its own profile is *estimated* from the ``cpu`` profile, scaled linearly by vCPUs (p95 taken as measured);
such options carry the estimate and its assumption. GPU types without a profile of their GPU are listed as
unmeasured, never estimated.

Co-located models: where a joint profile holds runs at the service's mix (shares within 10%, the same p95 targets),
count = ceil(total peak x headroom / the joint capacity's low end), labelled measured; elsewhere the *additive*
estimate, labelled: ceil(sum over the models of peak x headroom / capacity alone), which ignores interference between
the models (measured here: see docs/capacity.md).

p95 at the planned load: each model's p95 interpolated from its open-loop rows (joint rows for a measured mix) at the
rate one instance gets at the peak, with the p95 taken as non-decreasing in the rate; below the lowest measured rate
the lowest row's p95 is an upper bound. The headroom stays an input (the SLO file's): capacity is already the rate
at the p95 target, so headroom only buys time for autoscaling in a spike, and ``tritonrepo perf simulate`` shows
what each choice costs and how many minutes of a spike it keeps under the target.
Options are ranked by $/hour; types without a price are listed, unranked.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tritonrepo.errors import TritonRepoError
from tritonrepo.paths import ROOT

from . import perf_analyzer, profile_file, sweep
from .perf_analyzer import PerfRow
from .profile_file import Profile

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
    # the range of repeated measurements behind ``infer_per_s`` (its low end), on this type, and how many
    low: float = 0.0
    high: float = 0.0
    central: float = 0.0  # their median: the estimate verify judges (the count is sized on ``low``)
    runs: int = 1
    scale: float = 1.0  # this type's capacity over the profiled machine's
    machine_cores: int = 1  # vCPUs of the machine the profile was measured on
    curve: tuple[tuple[float, float], ...] = ()  # (Poisson rate, p95 ms) on the profiled machine, this variant


@dataclass(frozen=True)
class NoCapacity:
    """Why one instance type has no capacity for a model: no profile measured on its hardware, or no measured config
    within the p95 target."""

    reason: str


@dataclass(frozen=True)
class Option:
    service: str
    instance: Instance
    count: int
    capacities: tuple[Capacity, ...]
    utilisation: float  # load / (count x capacity), headroom included
    peak_rps: float
    colocation: str | None = None  # co-located models: "measured: ..." (a joint profile) or "additive estimate: ..."
    # the service's mix on the profiled machine: total req/s at the targets (low end) and its range
    measured_capacity: float = 0.0
    measured_range: tuple[float, float] = (0.0, 0.0)
    measured_central: float = 0.0  # the median of the measurements (additively: of each model's)
    machine_cores: int = 1
    p95_planned: tuple[tuple[float, str] | None, ...] = ()  # per model: (p95 ms, "~" | "<=" | ">=") at the peak

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

    @property
    def feasible(self) -> bool:
        """Every service has an option (priced or not)."""
        return all(self.options[s] or self.unpriced[s] for s in self.options)

    def to_json(self) -> dict:
        return {"headroom": self.headroom, "feasible": self.feasible, "services": {
            name: {"options": [_option_json(o) for o in self.options[name]],
                   "unpriced": [_option_json(o) for o in self.unpriced[name]],
                   "infeasible": self.infeasible[name]} for name in self.options}}


def _option_json(o: Option) -> dict:
    return {"instance": o.instance.name, "platform": o.instance.platform, "count": o.count,
            "usd_per_hour": o.usd_per_hour, "usd_per_million": o.usd_per_million,
            "utilisation": round(o.utilisation, 4),
            "peak_rps": o.peak_rps, "colocation": o.colocation, "estimated": o.estimated,
            "price_source": o.instance.source, "price_date": o.instance.source_date,
            "models": [{"model": c.model, "variant": c.variant, "load": c.load, "capacity_per_instance": c.infer_per_s,
                        "capacity_range": [c.low, c.high], "runs": c.runs, "p95_at_capacity_ms": c.p95_ms,
                        "p95_at_planned_load_ms": p and p[0], "p95_at_planned_load_bound": p and p[1],
                        "estimate": c.estimate} for c, p in zip(o.capacities, o.p95_planned)]}


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


def load_profile(model: str, hardware: str, profiles: Path = PROFILES) -> Profile | None:
    path = profiles / hardware / f"{model}.json"
    return profile_file.read(path) if path.exists() else None


def best_row(profile: Profile, p95_ms: float) -> tuple[str, PerfRow] | None:
    """The profile's highest-throughput row within ``p95_ms``, open loop first (``sweep.best_row``)."""
    return sweep.best_row(profile.variants, p95_ms)


def capacity(slo: ModelSlo, instance: Instance, profiles: Path = PROFILES) -> Capacity | NoCapacity:
    """One instance's capacity for the model (the best of its alternatives) within its p95, or why there is none."""
    found = [_capacity(m, slo.p95_ms, instance, profiles) for m in slo.candidates]
    measured = [c for c in found if isinstance(c, Capacity)]
    return (max(measured, key=lambda c: c.infer_per_s) if measured
            else NoCapacity("; ".join(c.reason for c in found)))


def _capacity(model: str, p95_ms: float, instance: Instance, profiles: Path) -> Capacity | NoCapacity:
    profile = load_profile(model, instance.profile, profiles)
    if profile is None:
        return NoCapacity(f"no measured profile of {model} on {instance.profile}")
    found = best_row(profile, p95_ms)
    if found is None:
        return NoCapacity(f"no measured config of {model} meets p95 <= {p95_ms:g} ms on {instance.profile}")
    variant, row = found
    closed = None if row.request_rate else (
        f"closed loop ({row.load}): no open-loop rate measured within p95 {p95_ms:g} ms; Poisson arrivals at "
        "this throughput see a higher p95")
    scale, estimate, cores = _scaling(profile, instance)
    proxy = profile.proxy and f"proxy config: {profile.proxy}"  # not the config the target deploys
    estimate = "; ".join(filter(None, (estimate, closed, proxy))) or None
    runs = [r for r in profile.capacity_runs if r["variants"].get(model) == variant
            and r["p95_ms"].get(model) == p95_ms and r["capacity"] > 0]
    # runs of this config at this target supersede the sweep's one search (another day, maybe another stack)
    measured = [r["capacity"] for r in runs] or [row.infer_per_s]
    curve = [(r["total_rate"], r["models"][model]["p95_ms"]) for run in runs for r in run["rows"]] or [
        (r.request_rate, r.p95_ms) for r in profile.variant(variant).rows if r.request_rate and perf_analyzer.usable(r)]
    return Capacity(model=model, infer_per_s=min(measured) * scale, p95_ms=row.p95_ms, variant=variant,
                    load=row.load, estimate=estimate, low=min(measured) * scale, high=max(measured) * scale,
                    central=statistics.median(measured) * scale,
                    runs=len(measured), scale=scale, machine_cores=cores, curve=tuple(curve))


def _scaling(profile: Profile, instance: Instance) -> tuple[float, str | None, int]:
    """This type's capacity over the profiled machine's, the assumption behind it, and the profiled vCPUs."""
    machine = profile.machine
    measured = int(machine.get("cores") or 1)
    if instance.gpu is None:  # no cloud CPU type is the machine the cpu profile was measured on
        scale = instance.vcpus / measured
        return scale, (f"estimate: measured on {measured} vCPUs ({machine.get('cpu', '?')}), scaled x{scale:g} "
                       "linearly in vCPUs, same per-vCPU speed assumed; p95 as measured"), measured
    if instance.gpu_count > 1:
        return instance.gpu_count, (f"estimate: measured on one {instance.gpu}, x{instance.gpu_count} for "
                                    f"{instance.gpu_count} GPUs (one instance group per GPU, linear); p95 as "
                                    "measured"), measured
    return 1.0, None, measured


def joint_path(models: list[str], hardware: str, profiles: Path = PROFILES) -> Path:
    return profiles / hardware / "joint" / f"{'+'.join(sorted(models))}.json"


def joint_runs(svc: Service, chosen: list[str], hardware: str, profiles: Path = PROFILES) -> list[dict]:
    """The joint profile's runs at this service's mix (shares within 10%, the same targets), in the configs of the
    latest of them."""
    path = joint_path(chosen, hardware, profiles)
    if not path.exists():
        return []
    total = sum(m.peak_rps for m in svc.models)
    want = {c: (m.peak_rps / total, m.p95_ms) for c, m in zip(chosen, svc.models)}
    runs = [r for r in profile_file.read_joint(path)["runs"] if r["capacity"] > 0 and set(r["shares"]) == set(want)
            and all(abs(r["shares"][c] - share) <= 0.1 * share and r["p95_ms"][c] == p95
                    for c, (share, p95) in want.items())]
    return [r for r in runs if r["variants"] == runs[-1]["variants"]] if runs else []


def p95_at(curve: tuple[tuple[float, float], ...], rate: float) -> tuple[float, str] | None:
    """The p95 at ``rate`` on a measured (rate, p95) curve: linear between rows, p95 non-decreasing in the rate
    (a running maximum over the rows, which are noisy); ``<=`` below the lowest row, ``>=`` past the highest."""
    if not curve:
        return None
    rates, p95s = zip(*sorted(curve))
    p95s = [max(p95s[: i + 1]) for i in range(len(p95s))]
    if rate <= rates[0]:
        return round(p95s[0], 1), "<="
    if rate >= rates[-1]:
        return round(p95s[-1], 1), ">="
    i = next(i for i, r in enumerate(rates) if r >= rate)
    w = (rate - rates[i - 1]) / ((rates[i] - rates[i - 1]) or 1)
    return round(p95s[i - 1] + w * (p95s[i] - p95s[i - 1]), 1), "~"


def _option(svc: Service, inst: Instance, caps: list[Capacity], headroom: float, profiles: Path) -> Option:
    peaks = [m.peak_rps for m in svc.models]
    total = sum(peaks)
    alone = total / sum(p / c.infer_per_s for p, c in zip(peaks, caps))  # additive: the mix's rate at utilisation 1
    alone_central = total / sum(p / c.central for p, c in zip(peaks, caps))
    runs = joint_runs(svc, [c.model for c in caps], inst.profile, profiles) if len(caps) > 1 else []
    colocation = None
    if runs:
        scale = caps[0].scale
        measured = [r["capacity"] for r in runs]
        mix = min(measured) * scale
        low, high, central = mix, max(measured) * scale, statistics.median(measured) * scale
        colocation = (f"measured: joint profile, {len(runs)} run(s), {min(measured):.0f}-{max(measured):.0f} req/s "
                      f"in all on the profiled machine (median {central / scale:.0f}); the additive estimate from the "
                      f"models alone was {alone_central / scale:.0f} req/s ({alone_central / central - 1:+.0%})")
        variants = runs[-1]["variants"]
        caps = [dataclasses.replace(c, variant=variants[c.model], infer_per_s=mix * p / total, low=mix * p / total,
                                    high=high * p / total, central=central * p / total, runs=len(runs),
                                    load=f"joint poisson {runs[-1]['rate']:g}/s",
                                    curve=tuple((r["total_rate"] * p / total, r["models"][c.model]["p95_ms"])
                                                for run in runs for r in run["rows"]))
                for c, p in zip(caps, peaks)]
    else:
        if len(caps) > 1:
            colocation = ("additive estimate: each model's capacity measured alone, shared in proportion to load; "
                          "interference not measured (no joint profile at this mix)")
        low, high, central = alone, total / sum(p / c.high for p, c in zip(peaks, caps)), alone_central
    count = max(1, math.ceil(total * headroom / low - 1e-9))
    utilisation = total / (count * low)  # at the peak, headroom excluded
    # each model at the rate one instance gets at the peak: a measured mix on its joint curve (per model's rate);
    # additively, its own curve at the instance's utilisation (its share of the CPU then is that of its rate alone)
    planned = [p95_at(c.curve, (p / count if runs else utilisation * c.infer_per_s) / c.scale)
               for p, c in zip(peaks, caps)]
    return Option(service=svc.name, instance=inst, count=count, capacities=tuple(caps),
                  utilisation=utilisation * headroom, peak_rps=total, colocation=colocation,
                  measured_capacity=low / caps[0].scale, measured_range=(low / caps[0].scale, high / caps[0].scale),
                  measured_central=central / caps[0].scale,
                  machine_cores=caps[0].machine_cores, p95_planned=tuple(planned))


def plan(headroom: float, services: list[Service], catalog: list[Instance], profiles: Path = PROFILES) -> Plan:
    result = Plan(headroom=headroom)
    for svc in services:
        priced, unpriced, why = [], [], []
        for inst in catalog:
            caps = [capacity(m, inst, profiles) for m in svc.models]
            missing = [c.reason for c in caps if isinstance(c, NoCapacity)]
            if missing:
                why.append(f"{inst.name}: {'; '.join(missing)}")
                continue
            option = _option(svc, inst, caps, headroom, profiles)
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
        lines += [f"## {svc.name}", "", slo, "", "| rank | instance | count | config (per model) | p95 ms at the "
                  "planned load | capacity req/s per instance (range, runs) | utilisation | $/hour | "
                  "$ per million req | price source |", "|---|---|---|---|---|---|---|---|---|---|"]
        for rank, o in enumerate(result.options[svc.name][:top], start=1):
            lines.append(_row(str(rank), o))
        for o in result.unpriced[svc.name]:
            lines.append(_row("unpriced", o))
        options = result.options[svc.name] + result.unpriced[svc.name]
        estimates = {c.estimate for o in options for c in o.capacities if c.estimate}
        estimates |= {f"co-location {o.colocation}" for o in options if o.colocation}
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
    p95 = "; ".join(planned_p95(p) for p in o.p95_planned)
    cap = "; ".join(capacity_range(c) + (" (est.)" if c.estimate else "") for c in o.capacities)
    src = "-" if o.instance.source is None else f"{o.instance.source_kind}, {o.instance.source_date}"
    return (f"| {rank} | {o.instance.name} | {o.count} | {configs} | {p95} | {cap} | {o.utilisation:.0%} | "
            f"{_fmt_money(o.usd_per_hour)} | {_fmt_money(o.usd_per_million)} | {src} |")


def planned_p95(p95: tuple[float, str] | None) -> str:
    return "-" if p95 is None else f"{'' if p95[1] == '~' else p95[1]}{p95[0]:.1f}"


def capacity_range(c: Capacity) -> str:
    spread = f"-{c.high:.0f}" if round(c.high) != round(c.low) else ""
    return f"{c.low:.0f}{spread} ({c.runs})"


def _plot(model: str, p95_ms: float, folder: Path, profiles: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for hw in sorted(p.name for p in profiles.iterdir() if p.is_dir()):
        profile = load_profile(model, hw, profiles)
        for v in profile.variants if profile else ():
            ax.plot([r.p95_ms for r in v.rows], [r.infer_per_s for r in v.rows], marker="o", ms=3,
                    label=f"{hw}: {v.variant}")
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
