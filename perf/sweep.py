"""Config sweeps: for each variant of a model's deployment, load it into a running Triton (explicit model control,
config override through the repository API), drive the served entry model with the real perf_analyzer on real
inputs over a concurrency range, stop the range once p95 passes its bound, and write a profile with provenance.

A built-in model's sweep is a ``SweepPlan`` its family declares (``FAMILY.plans`` in ``export/<family>.py``); models
of ``tritonrepo add`` get theirs from their spec file (``plan_for``), driven by the reference requests kept at their
export.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import tritonclient.grpc as grpcclient
from google.protobuf import json_format
from tritonclient.utils import InferenceServerException

from tritonrepo import added, render, tuning
from tritonrepo.errors import TritonRepoError
from tritonrepo.export.families import input_sets, spec, sweep_plans, with_dependencies
from tritonrepo.paths import MODEL_REPOSITORY, ROOT
from tritonrepo.server import TritonServer
from tritonrepo.specs import ModelSpec
from tritonrepo.targets import Target
from tritonrepo.tuning import UNTUNED, SweepPlan, Variant, grid
from tritonrepo.validate import REFERENCE, load_reference

from . import perf_analyzer, profile_file
from .perf_analyzer import PerfRow
from .profile_file import Best, Profile, Swept
from .provenance import provenance

log = logging.getLogger(__name__)
PROFILES = ROOT / "perf" / "profiles"
PLANS: dict[str, SweepPlan] = sweep_plans()  # every built-in family's (export/<family>.py FAMILY)


def plan_for(name: str, repository: Path = MODEL_REPOSITORY) -> SweepPlan:
    """The model's sweep plan: its PLANS entry, or for a model of `tritonrepo add` one made from its spec file (the
    ONNX Runtime grid of the encoders, its own p95 bound, its reference requests as inputs)."""
    if name in PLANS:
        return PLANS[name]
    if not added.path_of(name, repository).exists():
        raise TritonRepoError(f"no sweep plan for {name!r}; known: {sorted(PLANS)} and the models of `tritonrepo add`")
    model = added.load(name, repository)
    if model.text_input:  # strings through its tokenizer: the 2,000 real CoNLL test sentences the SBERT plans send
        tensor, inputs = "TEXT", "conll-test-sentences"
    else:  # tensors: the reference requests kept at export (the --samples file, or seeded random tensors)
        tensor, inputs = model.model_spec().input_names, f"reference:{name}"
    return SweepPlan(swept=model.model_name, entry=name, input_tensor=tensor, inputs=inputs,
                     variants=(UNTUNED, *grid(instances=(1, 2), delays=(0, 1000), threads=(1, 2))),
                     p95_bound_ms=model.p95_bound_ms)


def write_inputs(plan: SweepPlan, path: Path, limit: int = 2000, repository: Path = MODEL_REPOSITORY) -> Path:
    """The plan's real input set as perf_analyzer --input-data JSON: one a family declares (``Family.inputs``), an
    added model's reference requests (``reference:MODEL``) or a file written beforehand (``file:PATH``)."""
    if plan.inputs.startswith("file:"):
        return Path(plan.inputs.removeprefix("file:"))
    if plan.inputs.startswith("reference:"):  # an added model: each row of its reference requests, one request each
        _, pairs = load_reference(repository / plan.entry / "1" / REFERENCE)
        rows = [{k: v[i] for k, v in request.items()} for request, _ in pairs
                for i in range(len(next(iter(request.values()))))]
        return perf_analyzer.write_rows(path, rows[:limit])
    sets = input_sets()
    if plan.inputs not in sets:
        raise KeyError(f"unknown input set {plan.inputs!r}; known: {sorted(sets)}")
    return perf_analyzer.write_rows(path, sets[plan.inputs](plan, limit, repository))


def variant_config(plan: SweepPlan, variant: Variant, target: Target, repository: Path = MODEL_REPOSITORY) -> str:
    """The swept model's config for this variant, as the JSON the repository load API takes."""
    swept = plan.spec or spec(plan.swept, repository)
    if not isinstance(swept, ModelSpec):
        raise TritonRepoError(f"{plan.swept} is an ensemble; sweep one of its steps")
    varied = dataclasses.replace(swept, deployments=swept.deployments | {
        target: variant.apply(swept.deployment(target))})
    return json_format.MessageToJson(render.model_config(varied, target), preserving_proto_field_name=True)


def sweep_variant(client, server_url: str, plan: SweepPlan, variant: Variant, data: Path, target: Target,
                  measurement_ms: int, repository: Path = MODEL_REPOSITORY,
                  closed_rows: list[PerfRow] | None = None, headers: dict[str, str] | None = None) -> list[PerfRow]:
    """The variant's closed-loop range; or, given that range (``closed_rows``), its open-loop capacity search.
    ``headers``: the server's admin key (TritonServer.admin_headers), which its model-repository API requires."""
    try:
        client.load_model(plan.swept, config=variant_config(plan, variant, target, repository), headers=headers)
    except InferenceServerException as e:
        raise TritonRepoError(f"could not load {plan.swept} as {variant.name}: {e.message()}") from e
    rows = []

    def measure(what: str, **load) -> PerfRow | None:
        try:
            row = perf_analyzer.run(plan.entry, server_url, data, measurement_ms=measurement_ms, **load)
        except TritonRepoError as e:  # a load level that cannot be measured ends its range, not the sweep
            log.warning("%s %s %s: no measurement, range ended: %s", plan.entry, variant.name, what, str(e)[:300])
            return None
        rows.append(row)
        log.info("%s %s %s: %.0f infer/s, p95 %.1f ms", plan.entry, variant.name, what, row.infer_per_s, row.p95_ms)
        return row

    if closed_rows is None:
        for c in plan.concurrencies:
            row = measure(f"c={c}", concurrency=c)
            if row is None or row.p95_ms > plan.p95_bound_ms:
                break  # higher concurrency only queues more
        return rows
    rows += closed_rows
    closed = best([Swept(variant.name, tuple(closed_rows))], plan.p95_bound_ms)
    if closed:
        capacity_search(lambda rate: measure(f"Poisson {rate:g}/s", request_rate=rate), closed.infer_per_s,
                        max(r.infer_per_s for r in closed_rows), plan.p95_bound_ms, plan.rate_probes)
    return rows


def capacity_search(measure, closed_best: float, saturation: float, p95_bound_ms: float, probes: int,
                    ok=None, start: float | None = None) -> float:
    """The highest Poisson rate served within the bound (p95 within it, the rate delivered: ``usable``), as MLPerf's
    server scenario searches for it: a first rate at 75% of the closed-loop best within the bound (open loop gives
    15-46% less here), up by 25% while rates pass (never past the closed loop's saturation throughput, which no
    arrival rate can beat), then halving the bracket, until it is within 5% or ``probes`` rates were measured.
    ``measure(rate)`` returns the row (None: no measurement, a failure). Returns the highest passing rate (0: none).
    ``ok(row)`` replaces the pass test (a mix of models: each within its own target); ``start`` the first rate."""
    passed, failed = 0.0, None
    rate = round(start or 0.75 * closed_best, 1)
    ok = ok or (lambda row: row.p95_ms <= p95_bound_ms and perf_analyzer.usable(row))
    for _ in range(probes):
        row = measure(rate)
        if row is not None and ok(row):
            passed = rate
        else:
            failed = rate
        if failed is None:
            if passed >= saturation:
                break
            rate = round(min(passed * 1.25, saturation), 1)
        elif failed - passed <= 0.05 * failed:
            break
        else:
            rate = round((passed + failed) / 2, 1)
    return passed


def rate_candidates(results: list[Swept], plan: SweepPlan) -> list[str]:
    """The variants whose open-loop capacity is searched: the ``rate_variants`` with the most closed-loop throughput
    within the bound, and the untuned config (the gain is measured against it, open loop against open loop)."""
    if not plan.rate_probes:
        return []
    ranked = [(found.infer_per_s, r.variant) for r in results
              if (found := best([r], plan.p95_bound_ms))]
    top = [name for _, name in sorted(ranked, reverse=True)[:plan.rate_variants]]
    return top + [name for _, name in ranked if name == UNTUNED.name and name not in top]


def best_row(variants: Iterable[Swept], p95_bound_ms: float) -> tuple[str, PerfRow] | None:
    """The variant and row with the highest throughput within the p95 bound: among the open-loop (Poisson) rows when
    one qualifies, since independent users arrive open loop (a closed loop slows its own arrivals when latency grows,
    so the same p95 comes with more throughput: 412/s at p95 73 ms closed loop against 311/s at p95 91 ms open loop for
    sbert_int8 here); else among the closed-loop rows. Rows the server did not keep up with never count (``usable``)."""
    rows = [(v.variant, row) for v in variants for row in v.rows
            if row.p95_ms <= p95_bound_ms and perf_analyzer.usable(row)]
    rows = [vr for vr in rows if vr[1].request_rate] or rows
    return max(rows, key=lambda vr: vr[1].infer_per_s) if rows else None


def best(variants: Iterable[Swept], p95_bound_ms: float) -> Best | None:
    """``best_row`` as the profile records it (the variant ``perf apply`` writes back, and the planner's choice)."""
    found = best_row(variants, p95_bound_ms)
    if found is None:
        return None
    name, row = found
    return Best(variant=name, concurrency=row.concurrency, request_rate=row.request_rate, load=row.load,
                infer_per_s=row.infer_per_s, p95_ms=row.p95_ms)


def record_best(profile: Profile, profile_path: Path, folder: Path = tuning.TUNED) -> Path:
    """Write the profile's best variant as its swept model's tuned deployment on the profile's target
    (``perf/tuned/<target>.json``, which ``tuning.with_tuning`` applies over the specs)."""
    top = profile.best
    if profile.proxy:
        raise ValueError(f"{profile_path}: measured with a stand-in for the {profile.target} config "
                         f"({profile.proxy}); its best variant is not that config's")
    if not top:
        raise ValueError(f"{profile_path}: no variant met p95 <= {profile.p95_bound_ms} ms; nothing to apply")
    path = folder / f"{profile.target}.json"
    tuned = json.loads(path.read_text()) if path.exists() else {}
    try:
        source = str(profile_path.resolve().relative_to(ROOT))
    except ValueError:
        source = str(profile_path)
    tuned[profile.swept] = {
        "variant": profile.variant(top.variant).config, "profile": source, "measured_on": profile.machine or None,
        "date": profile.provenance.get("date"), "infer_per_s": top.infer_per_s, "p95_ms": top.p95_ms,
        "p95_bound_ms": profile.p95_bound_ms, "gain_vs_untuned": profile.gain_vs_untuned,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(tuned.items())), indent=2) + "\n")
    return path


def run(name: str, *, target: Target = Target.CPU, plan: SweepPlan | None = None, repository: Path = MODEL_REPOSITORY,
        out_dir: Path = PROFILES, measurement_ms: int = 3000, hardware: str | None = None,
        only: tuple[str, ...] = (), rates_only: bool = False) -> tuple[Profile, Path]:
    """Sweep the plan's variants (``only``: just those named, e.g. a short sweep) and write the profile
    (``rates_only``: keep the profile's closed-loop rows and measure its variants' Poisson rates again). Returns the
    profile and where it was written."""
    plan = plan or plan_for(name, repository)
    path = out_dir / (hardware or target) / f"{plan.entry}.json"
    if rates_only and not path.exists():
        raise TritonRepoError(f"{name}: no profile at {path} to measure the rates of; sweep it first")
    before = profile_file.read(path) if rates_only else None
    if before:  # the variants that profile holds
        plan = dataclasses.replace(plan, variants=tuple(v for v in plan.variants if before.variant(v.name)))
    if only:
        unknown = set(only) - {v.name for v in plan.variants}
        if unknown:
            raise TritonRepoError(f"{name}: no variants {sorted(unknown)}; known: {[v.name for v in plan.variants]}")
        plan = dataclasses.replace(plan, variants=tuple(v for v in plan.variants if v.name in only))
    origin = provenance()
    t0 = time.perf_counter()
    results: list[Swept] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_inputs(plan, Path(tmp) / "inputs.json", repository=repository)
        needed = with_dependencies([plan.entry], repository)  # not the rest of the repository
        with TritonServer(repository, model_config_name=target, explicit_models=needed) as server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            for variant in plan.variants:  # closed loop (kept from the profile when only its rates are measured)
                rows = ([r for r in before.variant(variant.name).rows if not r.request_rate] if before else
                        sweep_variant(client, server.grpc_url, plan, variant, data, target, measurement_ms, repository,
                                      headers=server.admin_headers))
                results.append(Swept(variant.name, tuple(rows), variant.to_dict()))
            by_name, searched = {v.name: v for v in plan.variants}, rate_candidates(results, plan)
            for i, result in enumerate(results):  # then open loop, for the variants worth it (ranked on closed loop)
                if result.variant in searched:
                    rows = sweep_variant(client, server.grpc_url, plan, by_name[result.variant], data, target,
                                         measurement_ms, repository, closed_rows=list(result.rows),
                                         headers=server.admin_headers)
                    results[i] = dataclasses.replace(result, rows=tuple(rows))
            client.close()
    top = best(results, plan.p95_bound_ms)
    untuned = best([r for r in results if r.variant == UNTUNED.name], plan.p95_bound_ms)
    wall_s = round(time.perf_counter() - t0, 1)
    profile = Profile(
        model=plan.entry, swept=plan.swept, target=target, provenance=origin, inputs=plan.inputs,
        p95_bound_ms=plan.p95_bound_ms, measurement_ms=measurement_ms, wall_s=wall_s, variants=tuple(results),
        best=top, untuned=untuned,
        gain_vs_untuned=round(top.infer_per_s / untuned.infer_per_s, 2) if top and untuned else None)
    if before:  # the closed-loop rows keep their provenance; the rates get theirs
        profile = dataclasses.replace(profile, provenance=before.provenance, wall_s=before.wall_s,
                                      rates_remeasured={"provenance": origin, "wall_s": wall_s})
    return profile, profile_file.write(path, profile)
