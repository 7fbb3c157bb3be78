"""A breaking-news traffic spike against a capacity plan and the SageMaker autoscaling policy it emits.

A discrete-event simulation, request by request:

- One instance is ``servers`` identical parallel servers in front of one FIFO queue (M/G/k), with lognormal service
  times calibrated from a sweep profile (``InstanceModel.from_profile``; ``InstanceModel.fit`` shows how well it
  reproduces the profile's measured open-loop p95 curve).
- Traffic is Poisson with the rate of a ``Trace``: the steady daily peak, a linear ramp to ``factor`` x, a hold, a
  linear decay.
- The autoscaler is the target-tracking policy ``deploy.package_sagemaker`` emits (``Policy``), stepped minute by
  minute as SageMaker / Application Auto Scaling does it (``scaling_timeline``).
- Requests are routed uniformly at random across the instances in service, so one representative instance sees Poisson
  arrivals at rate(t) / n(t); only it is simulated, which is exact for its latency, not an approximation.

``ASSUMPTIONS`` lists what is assumed; ``study`` writes them into its JSON beside the results.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tritonrepo.errors import TritonRepoError

from .perf_analyzer import PerfRow, usable
from .profile_file import Profile
from .provenance import provenance

log = logging.getLogger(__name__)

MAX_REQUESTS = 10_000_000  # per simulate(): fifo_sojourn takes ~0.35 us a request, so a few seconds
HEADROOMS = (1.0, 1.15, 1.3, 1.5, 2.0)
_Z95 = 1.6448536269514722  # standard normal 95th percentile
ASSUMPTIONS = (
    ("service time: lognormal fitted to the p50 and p95 of the variant's lowest-concurrency closed-loop row (c=1: "
     "one request alone, client overhead included)"),
    ("parallelism: k servers per measured machine, k = round(saturation throughput x mean service time) (Little's law "
     "at saturation); an instance with vcpu_scale x the measured vCPUs has round(k x vcpu_scale) servers of the same "
     "speed (the planner's linear vCPU scaling)"),
    "one FIFO queue per instance, unbounded: no request timeout (SageMaker's is 60 s), drop or retry",
    ("uniform random routing: one representative instance, present from the start and never removed, gets Poisson "
     "arrivals at rate(t) / in-service(t), piecewise constant per second; it keeps its backlog when instances join "
     "(conservative: new instances start empty and would see lower latency)"),
    ("autoscaler metric: the trace's expected invocations in each whole minute / instances in service at its end, "
     "available at once (no CloudWatch publishing delay)"),
    ("scale-out when the last 3 datapoints > TargetValue, scale-in when the last 15 < 0.9 x TargetValue; desired = "
     "ceil(in-service x metric / TargetValue) clamped to [min, max]; one endpoint update at a time (SageMaker refuses "
     "updates while the endpoint is Updating): a scale-out completes when its instances serve, and the scale-out "
     "cooldown counts from then; scale-in removes instances at once, at most once per scale-in cooldown"),
    ("startup: a launched instance serves after startup_s (provisioning, image pull, model load: an assumed figure, "
     "not measured) and is billed from launch, per second"),
)


class SimulationError(TritonRepoError, ValueError):
    """A trace, policy or profile that cannot be simulated; the message says what to change."""


def fifo_sojourn(arrivals: np.ndarray, service: np.ndarray, servers: int) -> np.ndarray:
    """Sojourn times (wait + service) of a FIFO queue with ``servers`` identical servers, exactly: request i starts at
    max(its arrival, the earliest time a server is free) (a heap of server-free times). ``arrivals`` sorted."""
    arrivals, service = np.asarray(arrivals, dtype=float), np.asarray(service, dtype=float)
    if servers < 1 or arrivals.shape != service.shape or np.any(np.diff(arrivals) < 0):
        raise SimulationError("fifo_sojourn needs servers >= 1 and sorted arrivals, one service time each")
    ends = np.empty(len(arrivals))
    free = [-math.inf] * servers
    push = heapq.heapreplace
    for lo in range(0, len(arrivals), 1 << 20):  # Python floats a chunk at a time: fast, bounded memory
        chunk: list[float] = []
        append = chunk.append
        for a, s in zip(arrivals[lo:lo + (1 << 20)].tolist(), service[lo:lo + (1 << 20)].tolist()):
            first = free[0]
            end = (a if a > first else first) + s  # noqa: FURB136 (hot loop: faster than max())
            push(free, end)
            append(end)
        ends[lo:lo + len(chunk)] = chunk
    return ends - arrivals


def _rows(profile: Profile, variant: str) -> tuple[PerfRow, ...]:
    if found := profile.variant(variant):
        return found.rows
    raise SimulationError(f"no variant {variant!r} in the profile; it has {[v.variant for v in profile.variants]}")


def _open_rows(rows: Iterable[PerfRow]) -> list[PerfRow]:
    """The open-loop rows the server kept up with, by rate."""
    return sorted((r for r in rows if r.request_rate and usable(r)), key=lambda r: r.request_rate)


@dataclass(frozen=True, kw_only=True)
class InstanceModel:
    """One instance: ``servers`` parallel servers with lognormal service times (median ``median_s``, log-sd
    ``sigma``); ``measured_servers`` on the profiled machine, which ``vcpu_scale`` x its vCPUs makes ``servers``."""

    variant: str
    median_s: float
    sigma: float
    servers: int
    measured_servers: int
    vcpu_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.median_s <= 0 or self.sigma < 0 or self.servers < 1 or self.measured_servers < 1:
            raise SimulationError(f"InstanceModel {self.variant}: median_s > 0, sigma >= 0, servers >= 1 needed")

    @property
    def mean_s(self) -> float:
        return self.median_s * math.exp(self.sigma**2 / 2)

    @property
    def capacity_rps(self) -> float:
        """Saturation throughput of one instance (the queue grows without bound above it)."""
        return self.servers / self.mean_s

    def service_times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(math.log(self.median_s), self.sigma, n)

    @classmethod
    def from_profile(cls, profile: Profile, variant: str, vcpu_scale: float = 1.0) -> InstanceModel:
        closed = [r for r in _rows(profile, variant) if not r.request_rate and r.concurrency >= 1]
        if not closed:
            raise SimulationError(f"variant {variant!r} has no closed-loop row to calibrate on: sweep it at c=1")
        low = min(closed, key=lambda r: r.concurrency)
        if low.concurrency != 1:
            log.warning("%s: lowest concurrency is c%s, not c1: its latency includes queueing", variant,
                        low.concurrency)
        median, p95 = low.p50_ms / 1e3, low.p95_ms / 1e3
        sigma = max(0.0, math.log(p95 / median) / _Z95)
        mean = median * math.exp(sigma**2 / 2)
        k = max(1, round(max(r.infer_per_s for r in closed) * mean))
        return cls(variant=variant, median_s=median, sigma=sigma, servers=max(1, round(k * vcpu_scale)),
                   measured_servers=k, vcpu_scale=vcpu_scale)

    @classmethod
    def fitted(cls, profile: Profile, variant: str, vcpu_scale: float = 1.0, rows: tuple[PerfRow, ...] = (),
               requests: int = 20_000, seed: int = 0, anchor: tuple[float, float] | None = None) -> InstanceModel:
        """The service-time shape of the lowest-rate open-loop row (least queueing), then the servers k (1-6) and a
        factor on the service times (0.5-2) that reproduce the measured open-loop p95 curve best (least squares in log
        p95, common random numbers), among those whose saturation is above every throughput measured. ``rows``: more
        open-loop rows of the variant (the capacity runs of plan --verify). ``anchor``: (the planned capacity on the
        profiled machine, the p95 target), weighted as much as all the rows together, so that the model saturates
        where the plan says the target is reached (rows measured at different times scatter, and a flat fit through
        them would put no queue anywhere). Needs two open-loop rows; with fewer, ``from_profile``'s model."""
        base = cls.from_profile(profile, variant, vcpu_scale)
        measured = _open_rows([*_rows(profile, variant), *rows])
        if len(measured) < 2:
            return base
        low = measured[0]  # the lowest rate queues least: its spread is the service times' (the c=1 row may be old)
        base = replace(base, median_s=low.p50_ms / 1e3, sigma=max(0.0, math.log(low.p95_ms / low.p50_ms) / _Z95))
        rng = np.random.default_rng(seed)
        gaps, shape = rng.exponential(1.0, requests), np.exp(base.sigma * rng.standard_normal(requests))
        top = max(r.infer_per_s for r in measured)  # the open-loop rows: the closed-loop ones may be another day's
        best = (math.inf, base)
        for k in range(1, 7):
            for factor in np.arange(0.5, 2.01, 0.05):
                model = replace(base, median_s=base.median_s * factor, servers=max(1, round(k * vcpu_scale)),
                                measured_servers=k)
                if k / model.mean_s <= top:
                    continue
                def miss(rate: float, p95_ms: float) -> float:
                    sojourn = fifo_sojourn(np.cumsum(gaps / rate), model.median_s * shape, k)
                    return math.log(np.percentile(sojourn, 95) * 1e3 / p95_ms) ** 2

                error = sum(miss(r.request_rate, r.p95_ms) for r in measured)
                if anchor:
                    error += len(measured) * miss(*anchor)
                best = min(best, (error, model), key=lambda b: b[0])
        return best[1]

    def fit(self, profile: Profile, requests: int = 40_000, seed: int = 0,
            rows: tuple[PerfRow, ...] = ()) -> list[dict]:
        """Measured against modelled p50/p95 at each open-loop rate of the variant, on the measured machine
        (``measured_servers``), ``requests`` Poisson arrivals per rate."""
        rng = np.random.default_rng(seed)
        table = []
        for row in _open_rows([*_rows(profile, self.variant), *rows]):
            rate = row.request_rate
            arrivals = np.cumsum(rng.exponential(1 / rate, requests))
            sojourn = fifo_sojourn(arrivals, self.service_times(rng, requests), self.measured_servers) * 1e3
            p50, p95 = (round(float(p), 2) for p in np.percentile(sojourn, [50, 95]))
            table.append({"request_rate": rate, "utilisation": round(rate * self.mean_s / self.measured_servers, 3),
                          "measured_p50_ms": row.p50_ms, "model_p50_ms": p50,
                          "measured_p95_ms": row.p95_ms, "model_p95_ms": p95})
        return table


@dataclass(frozen=True, kw_only=True)
class Trace:
    """Whole-service request rate: ``steady_rps``, from ``spike_at_s`` a linear ramp to ``factor`` x steady within
    ``ramp_s``, held ``hold_s``, a linear decay back over ``decay_s``; ``duration_s`` whole minutes."""

    steady_rps: float
    duration_s: int = 1800
    spike_at_s: float = 600
    factor: float = 5.0
    ramp_s: float = 60
    hold_s: float = 600
    decay_s: float = 300

    def __post_init__(self) -> None:
        if self.steady_rps <= 0 or self.factor <= 0 or min(self.spike_at_s, self.ramp_s, self.hold_s, self.decay_s) < 0:
            raise SimulationError(f"Trace: steady_rps and factor must be > 0, times >= 0 ({self})")
        if self.duration_s < 60 or self.duration_s % 60:
            raise SimulationError(f"Trace: duration_s {self.duration_s} must be whole minutes (>= 60)")

    def rate(self, t: float | np.ndarray) -> float | np.ndarray:
        """Requests/s at time ``t`` (seconds; scalar or array)."""
        knots = np.cumsum([0, self.spike_at_s, self.ramp_s, self.hold_s, self.decay_s])
        return self.steady_rps * np.interp(t, knots, [1, 1, self.factor, self.factor, 1])


@dataclass(frozen=True, kw_only=True)
class Policy:
    """SageMaker target tracking on SageMakerVariantInvocationsPerInstance (``target_value`` invocations per instance
    per minute) with the variant's scalable-target bounds and an assumed instance ``startup_s``."""

    target_value: float
    min_capacity: int
    max_capacity: int
    scale_out_cooldown_s: int = 60
    scale_in_cooldown_s: int = 300
    startup_s: int = 360
    out_datapoints: int = 3
    in_datapoints: int = 15
    in_ratio: float = 0.9

    def __post_init__(self) -> None:
        if self.target_value <= 0 or not 1 <= self.min_capacity <= self.max_capacity:
            raise SimulationError(f"Policy: target_value > 0 and 1 <= min <= max needed ({self})")

    @classmethod
    def emitted(cls, capacity_rps: float, headroom: float, count: int, max_capacity: int | None = None,
                startup_s: int = 360) -> Policy:
        """What ``deploy.package_sagemaker`` emits for a plan of ``count`` instances of ``capacity_rps`` each."""
        return cls(target_value=round(capacity_rps / headroom * 60, 1), min_capacity=count,
                   max_capacity=max_capacity or 2 * count, startup_s=startup_s)


@dataclass
class Timeline:
    """Per second: instances in service and starting (both billed); the scaling events."""

    in_service: np.ndarray
    starting: np.ndarray
    events: list[dict] = field(default_factory=list)

    @property
    def instance_seconds(self) -> int:
        return int(self.in_service.sum() + self.starting.sum())


def scaling_timeline(trace: Trace, policy: Policy, count: int) -> Timeline:
    """Step the autoscaler second by second from ``count`` instances in service; it decides at each minute's end."""
    offered = trace.rate(np.arange(trace.duration_s) + 0.5)
    if count < 1:
        raise SimulationError(f"scaling_timeline: count {count} must be >= 1")
    serving, starting, ready_at, metrics = count, 0, math.inf, []  # starting instances serve from ready_at
    last_out_done = last_in = -math.inf
    line = Timeline(np.empty(trace.duration_s, dtype=int), np.empty(trace.duration_s, dtype=int))
    for sec in range(trace.duration_s):
        if starting and sec >= ready_at:
            serving, starting, last_out_done = serving + starting, 0, sec
            line.events.append({"t_s": sec, "action": "in service", "in_service": serving})
        line.in_service[sec], line.starting[sec] = serving, starting
        if (sec + 1) % 60:
            continue
        t, invocations = sec + 1, float(offered[sec - 59:sec + 1].sum())
        metrics.append(invocations / serving)
        current, target = serving + starting, policy.target_value
        desired = min(max(math.ceil(serving * metrics[-1] / target - 1e-9), policy.min_capacity), policy.max_capacity)
        high = len(metrics) >= policy.out_datapoints and min(metrics[-policy.out_datapoints:]) > target
        low = (len(metrics) >= policy.in_datapoints
               and max(metrics[-policy.in_datapoints:]) < policy.in_ratio * target)
        if high and desired > current and not starting and t - last_out_done >= policy.scale_out_cooldown_s:
            starting, ready_at = desired - current, t + policy.startup_s
            line.events.append({"t_s": t, "action": "scale-out", "from": current, "to": desired,
                                "metric": round(metrics[-1], 1)})
        elif low and desired < current and not starting and t - last_in >= policy.scale_in_cooldown_s:
            serving, last_in = desired, t
            line.events.append({"t_s": t, "action": "scale-in", "from": current, "to": desired,
                                "metric": round(metrics[-1], 1)})
    return line


def simulate(trace: Trace, model: InstanceModel, policy: Policy, count: int, p95_target_ms: float,
             usd_per_hour: float | None, seed: int = 0, max_requests: int = MAX_REQUESTS) -> dict:
    """The trace against ``count`` instances under ``policy``: per minute the offered rate, instances in service and
    starting (at the minute's end) and the p95 of the requests arriving in it; totals over the trace."""
    line = scaling_timeline(trace, policy, count)
    offered = trace.rate(np.arange(trace.duration_s) + 0.5)
    per_instance = offered / line.in_service
    expected = float(per_instance.sum())
    if expected > max_requests:
        raise SimulationError(f"{expected:,.0f} requests on the representative instance exceed max_requests="
                              f"{max_requests:,}: plan on smaller instances, shorten the trace or raise max_requests")
    rng = np.random.default_rng(seed)
    counts = rng.poisson(per_instance)
    arrivals = np.sort(np.repeat(np.arange(trace.duration_s, dtype=float), counts) + rng.random(counts.sum()))
    sojourn = fifo_sojourn(arrivals, model.service_times(rng, len(arrivals)), model.servers) * 1e3
    edges = np.searchsorted(arrivals, np.arange(0, trace.duration_s + 1, 60))
    minutes = []
    for m in range(trace.duration_s // 60):
        ms = sojourn[edges[m]:edges[m + 1]]
        minutes.append({"minute": m, "offered_rps": round(float(offered[60 * m:60 * m + 60].mean()), 1),
                        "in_service": int(line.in_service[60 * m + 59]), "starting": int(line.starting[60 * m + 59]),
                        "requests": len(ms), "p95_ms": round(float(np.percentile(ms, 95)), 2) if len(ms) else None})
    p95s = [m["p95_ms"] for m in minutes if m["p95_ms"] is not None]
    over = int((sojourn > p95_target_ms).sum())
    hours = line.instance_seconds / 3600
    return {"count": count, "policy": asdict(policy), "requests": len(sojourn),
            "minutes_over_target": sum(p > p95_target_ms for p in p95s), "worst_p95_ms": max(p95s, default=None),
            "requests_over_target": over, "share_over_target": over / max(1, len(sojourn)),
            "max_in_service": int(line.in_service.max()), "instance_hours": round(hours, 3),
            "cost_usd": None if usd_per_hour is None else round(hours * usd_per_hour, 2),
            "events": line.events, "minutes": minutes}


def study(*, model_name: str, profile: Profile, variant: str, capacity_rps: float, vcpu_scale: float, peak_rps: float,
          p95_target_ms: float, usd_per_hour: float | None, plan_headroom: float,
          headrooms: tuple[float, ...] = HEADROOMS, trace: Trace | None = None, startup_s: int = 360,
          out_dir: Path, seed: int = 0, rows: tuple[PerfRow, ...] = (),
          max_factors: tuple[float, ...] = (2.0,)) -> dict:
    """Simulate the spike for each headroom h (the plan's included): count = ceil(peak x h / capacity), the policy
    ``deploy.package_sagemaker`` emits for it, and the trace with ``steady_rps`` = ``peak_rps`` (the SLO's peak is
    the steady daily peak; the spike goes ``factor`` x above it). Writes ``simulation-<model>.json`` and ``.png``."""
    model = InstanceModel.fitted(profile, variant, vcpu_scale, rows, seed=seed,
                                 anchor=(capacity_rps / vcpu_scale, p95_target_ms))
    calibration = model.fit(profile, seed=seed, rows=rows)
    trace = replace(trace or Trace(steady_rps=peak_rps), steady_rps=peak_rps)
    results = []
    for h in sorted({*headrooms, plan_headroom}):
        count = max(1, math.ceil(peak_rps * h / capacity_rps - 1e-9))
        for factor in max_factors:  # MaxCapacity = factor x count (package_sagemaker emits 2x unless told)
            policy = Policy.emitted(capacity_rps, h, count, max_capacity=math.ceil(factor * count),
                                    startup_s=startup_s)
            log.info("simulating headroom %s, max %s: %s instances, TargetValue %s", h, policy.max_capacity, count,
                     policy.target_value)
            results.append({"headroom": h, "plan": h == plan_headroom and factor == max_factors[0],
                            **simulate(trace, model, policy, count, p95_target_ms, usd_per_hour, seed=seed)})
    out = {"inputs": {"model": model_name, "variant": variant, "capacity_rps": capacity_rps, "vcpu_scale": vcpu_scale,
                      "peak_rps": peak_rps, "p95_target_ms": p95_target_ms, "usd_per_hour": usd_per_hour,
                      "plan_headroom": plan_headroom, "startup_s": startup_s, "seed": seed, "trace": asdict(trace),
                      "max_factors": list(max_factors)},
           "model": {**asdict(model), "mean_ms": round(model.mean_s * 1e3, 3),
                     "capacity_rps": round(model.capacity_rps, 1)},
           "assumptions": list(ASSUMPTIONS), "calibration": calibration, "results": results,
           "provenance": provenance()}
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"simulation-{model_name}.json", out_dir / f"simulation-{model_name}.png"
    json_path.write_text(json.dumps(out, indent=1) + "\n")
    _plot(trace, results, p95_target_ms, png_path, f"{model_name}: x{trace.factor:g} spike, startup {startup_s} s")
    return {**out, "markdown": _markdown(results, p95_target_ms), "calibration_markdown": _calibration_md(calibration),
            "json": json_path, "png": png_path}


def _markdown(results: list[dict], p95_target_ms: float) -> str:
    lines = [(f"| headroom | instances (steady / max reached / max) | TargetValue (inv/instance/min) | minutes p95 > "
              f"{p95_target_ms:g} ms | worst minute p95 ms | requests over target | instance-hours | cost |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        cost = "unpriced" if r["cost_usd"] is None else f"${r['cost_usd']:,.2f}"
        lines.append(f"| {r['headroom']:g}{' (plan)' if r['plan'] else ''} | {r['count']} / {r['max_in_service']} / "
                     f"{r['policy']['max_capacity']} | {r['policy']['target_value']:,.1f} | {r['minutes_over_target']} "
                     f"| {r['worst_p95_ms']:,.1f} | {r['share_over_target']:.1%} | {r['instance_hours']:.2f} "
                     f"| {cost} |")
    return "\n".join(lines)


def _calibration_md(calibration: list[dict]) -> str:
    lines = ["| request rate /s | utilisation (model) | p50 ms measured / model | p95 ms measured / model |",
             "|---|---|---|---|"]
    lines += [f"| {c['request_rate']:g} | {c['utilisation']:.0%} | {c['measured_p50_ms']:.1f} / "
              f"{c['model_p50_ms']:.1f} | {c['measured_p95_ms']:.1f} / {c['model_p95_ms']:.1f} |" for c in calibration]
    return "\n".join(lines)


def _plot(trace: Trace, results: list[dict], p95_target_ms: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (load, lat, inst) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    t = np.arange(trace.duration_s) / 60
    load.plot(t, trace.rate(t * 60), color="black")
    load.set(ylabel="offered req/s (service)", title=title)
    for r in results:
        x = np.array([m["minute"] for m in r["minutes"]])
        label = (f"headroom {r['headroom']:g}{' (plan)' if r['plan'] else ''}: {r['count']} inst., max "
                 f"{r['policy']['max_capacity']}")
        lat.plot(x + 0.5, [m["p95_ms"] for m in r["minutes"]], marker="o", ms=3, label=label)
        inst.step(x + 1, [m["in_service"] for m in r["minutes"]], where="pre", label=label)  # at each minute's end
    lat.axhline(p95_target_ms, color="red", ls="--", lw=1, label=f"p95 target {p95_target_ms:g} ms")
    lat.set(ylabel="p95 per minute (ms)", yscale="log")
    lat.legend(fontsize=7)
    inst.set(ylabel="instances in service", xlabel="minute")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
