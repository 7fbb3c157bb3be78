"""Deployment artifacts: the compose stack's dashboard, and SageMaker packaging (model.tar.gz + endpoint JSON)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import deployable, render
from .errors import SpecError, ToolNotFoundError
from .export.families import all_specs
from .paths import MODEL_REPOSITORY, ROOT
from .server import TritonServer, free_port
from .specs import dependencies
from .targets import TARGETS, Target

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "triton.json"


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation (``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}``), to read the stack's
    command lines as compose runs them."""
    def one(m: re.Match) -> str:
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        if op == ":?":
            raise SpecError(f"{name} is not set: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def dashboard_metrics(path: Path = DASHBOARD) -> set[str]:
    """Every Triton (nv_*) and ingestion (ingest_*) metric name the dashboard's queries use."""
    dash = json.loads(Path(path).read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dash.get("templating", {}).get("list", []) if "query" in v]
    return {m for e in exprs for m in re.findall(r"\b((?:nv|ingest)_[a-z_]+)\b", e)}


# ---- SageMaker ---------------------------------------------------------------------------------------------------

# The SageMaker Triton images (sagemaker-python-sdk image_uri_config/sagemaker-tritonserver.json): account
# 763104351884 in most regions. The SDK lists 24.09, not 24.10 (the local server's release): 24.09 is the closest.
SAGEMAKER_TRITON_VERSION = "24.09"
_SAGEMAKER_ACCOUNTS = {"af-south-1": "626614931356", "ap-east-1": "871362719292", "ap-northeast-3": "364406365360",
                       "ap-southeast-3": "907027046896", "ca-west-1": "204538143572", "eu-south-1": "692866216735",
                       "il-central-1": "780543022126", "me-south-1": "217643126080"}


def sagemaker_image(region: str, version: str = SAGEMAKER_TRITON_VERSION) -> str:
    account = _SAGEMAKER_ACCOUNTS.get(region, "763104351884")
    return f"{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-tritonserver:{version}-py3"


@dataclass(frozen=True)
class Placement:
    """Where an endpoint runs: instance type and count, and the requests per second one instance sustains within
    the p95 target (the planner's measured capacity), which the autoscaling policy tracks."""

    instance_type: str
    count: int
    target: Target  # hardware target whose configs/<target>.pbtxt the package carries
    rps_per_instance: float
    source: str  # "plan: ..." or "given"


def placement_from_plan(slo_file: Path, service: str, profiles: Path | None = None) -> Placement:
    """The cheapest SageMaker option the planner finds for ``service`` (measured profiles, catalog prices)."""
    from .perf import planner

    headroom, services = planner.load_slos(slo_file)
    # the endpoint serves the models the SLO names: size those, not their alternatives (e.g. another precision)
    chosen = [dataclasses.replace(s, models=tuple(dataclasses.replace(m, alternatives=()) for m in s.models))
              for s in services if s.name == service]
    if not chosen:
        raise SpecError(f"{slo_file}: no service {service!r} (has {[s.name for s in services]})")
    catalog = [i for i in planner.load_catalog() if i.platform == "sagemaker"]
    result = planner.plan(headroom, chosen, catalog, *([profiles] if profiles else []))
    best = result.best(service)
    price = "unpriced in the catalog"
    if best is None:  # feasible types without a catalog price: the fewest instances, said so
        unpriced = sorted(result.unpriced.get(service, []), key=lambda o: (o.count, o.instance.vcpus))
        if not unpriced:
            why = "; ".join(result.infeasible.get(service, [])[:5]) or "no SageMaker type in the catalog"
            raise SpecError(f"no SageMaker instance type meets {service}'s SLO: {why}")
        best = unpriced[0]
    else:
        price = f"${best.usd_per_hour:.2f}/h"
    if best.instance.profile not in TARGETS:
        raise SpecError(f"{best.instance.name}: no hardware target {best.instance.profile!r} to render configs for")
    per_instance = min(c.infer_per_s for c in best.capacities) / headroom
    estimate = "; ".join(c.estimate for c in best.capacities if c.estimate)
    return Placement(best.instance.name, best.count, best.instance.profile, per_instance,
                     f"plan: {slo_file.name} service {service}, {price}, utilisation {best.utilisation:.0%} at "
                     f"{best.peak_rps:g} req/s" + (f" ({estimate})" if estimate else ""))


def stage_sagemaker(model: str, target: Target, staged: Path, repository: Path = MODEL_REPOSITORY) -> list[str]:
    """Lay out in ``staged`` what ``model.tar.gz`` holds: ``model`` and everything it loads as top-level folders,
    each with its version folders (hard links where possible) and ``target``'s config as config.pbtxt. Refused
    unless every file those configs name is there and the code needs only the image's packages (``deployable``).
    Returns the models."""
    specs = {s.name: s for s in all_specs()}
    if model not in specs:
        raise SpecError(f"no model named {model!r}; known: {sorted(specs)}")
    models = [model, *dependencies(list(specs.values()), model)]
    missing = [m for m in models if not any((repository / m).glob("[0-9]*"))]
    if missing:
        raise ToolNotFoundError(f"{missing} have no version folder in {repository}: run `tritonrepo build`")
    for name in models:
        for version in sorted((repository / name).glob("[0-9]*")):
            shutil.copytree(version, staged / name / version.name, copy_function=_link_or_copy,
                            ignore=shutil.ignore_patterns("__pycache__"))
        config = render.model_config(specs[name], target)
        (staged / name / "config.pbtxt").write_text(render.to_text(config, target))
    problems = deployable.check(staged, target)
    if problems:
        raise ToolNotFoundError(f"the {target} archive of {model} would not load:\n" + "\n".join(
            f"{f.model} ({f.where}): {f.message}" for f in problems))
    return models


def package_sagemaker(model: str, placement: Placement, out: Path, *, repository: Path = MODEL_REPOSITORY,
                      region: str = "us-east-1", image: str | None = None, endpoint: str | None = None,
                      model_data_url: str | None = None, max_instances: int | None = None,
                      role_arn: str = "arn:aws:iam::ACCOUNT_ID:role/SageMakerExecutionRole") -> dict[str, Path]:
    """``out/model.tar.gz`` as the SageMaker Triton container expects it (``stage_sagemaker``; no top-level
    config.pbtxt) and ``out/endpoint.json``: CreateModel, CreateEndpointConfig, CreateEndpoint, RegisterScalableTarget
    and PutScalingPolicy requests, each as boto3 / ``aws ... --cli-input-json`` takes it."""
    specs = {s.name: s for s in all_specs()}
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "model.tar.gz"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        models = stage_sagemaker(model, placement.target, Path(tmp), repository)
        with tarfile.open(archive, "w:gz") as tar:
            for folder in sorted(Path(tmp).iterdir()):
                tar.add(folder, arcname=folder.name)
    endpoint = endpoint or model.replace("_", "-")
    environment = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": model,
                   # explicit model control: what the default model calls through BLS must be loaded too
                   # (an ensemble's steps load with it)
                   "SAGEMAKER_TRITON_ADDITIONAL_ARGS": " ".join(
                       [f"--load-model={m}" for m in getattr(specs[model], "calls", ())]
                       + ["--cache-config=local,size=268435456", "--metrics-config=summary_latencies=true"]),
                   "SAGEMAKER_TRITON_LOG_VERBOSE": "false"}
    variant = "AllTraffic"
    resource = f"endpoint/{endpoint}/variant/{variant}"
    requests = {
        "provenance": {"model": model, "models_in_archive": models, "target": placement.target,
                       "placement": placement.source, "sustained_rps_per_instance": round(placement.rps_per_instance, 1),
                       "image": f"deploy/sagemaker.Dockerfile built FROM {sagemaker_image(region)} (AWS's image "
                                "lacks the Python-backend packages), pushed to your ECR"},
        "CreateModel": {
            "ModelName": endpoint, "ExecutionRoleArn": role_arn,
            "PrimaryContainer": {"Image": image or f"ACCOUNT_ID.dkr.ecr.{region}.amazonaws.com/tritonrepo-sagemaker-"
                                                   f"triton:{SAGEMAKER_TRITON_VERSION}",
                                 "ModelDataUrl": model_data_url or f"s3://BUCKET/{endpoint}/model.tar.gz",
                                 "Environment": environment}},
        "CreateEndpointConfig": {
            "EndpointConfigName": endpoint,
            "ProductionVariants": [{"VariantName": variant, "ModelName": endpoint, "InitialVariantWeight": 1.0,
                                    "InstanceType": placement.instance_type,
                                    "InitialInstanceCount": placement.count}]},
        "CreateEndpoint": {"EndpointName": endpoint, "EndpointConfigName": endpoint},
        "RegisterScalableTarget": {
            "ServiceNamespace": "sagemaker", "ResourceId": resource,
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "MinCapacity": placement.count, "MaxCapacity": max_instances or 2 * placement.count},
        "PutScalingPolicy": {
            "PolicyName": f"{endpoint}-invocations", "PolicyType": "TargetTrackingScaling",
            "ServiceNamespace": "sagemaker", "ResourceId": resource,
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "TargetTrackingScalingPolicyConfiguration": {
                # invocations per instance per minute that one instance sustains within the p95 (with headroom)
                "TargetValue": round(placement.rps_per_instance * 60, 1),
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                "ScaleInCooldown": 300, "ScaleOutCooldown": 60}},
    }
    spec_file = out / "endpoint.json"
    spec_file.write_text(json.dumps(requests, indent=2) + "\n")
    return {"archive": archive, "endpoint": spec_file}


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def sagemaker_server(model_dir: Path, environment: dict[str, str], **kw) -> TritonServer:
    """The local tritonserver started as the SageMaker container's ``serve`` script starts it: the unpacked
    model.tar.gz as repository, explicit model control loading ``SAGEMAKER_TRITON_DEFAULT_MODEL_NAME``,
    ``SAGEMAKER_TRITON_ADDITIONAL_ARGS`` appended, and only the SageMaker endpoint (/ping, /invocations) open."""
    if (Path(model_dir) / "config.pbtxt").exists():
        raise SpecError(f"{model_dir}: a top-level config.pbtxt; SageMaker wants the model folders at the top")
    default = environment["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"]
    extra = shlex.split(environment.get("SAGEMAKER_TRITON_ADDITIONAL_ARGS", ""))
    cache = [a for a in extra if a.startswith("--cache-config=local,size=")]  # the cache library's folder differs
    return TritonServer(model_dir, explicit_models=[default], sagemaker_port=free_port(), env=environment,
                        response_cache_mb=int(cache[-1].rsplit("=", 1)[1]) >> 20 if cache else 0,
                        extra_args=[a for a in extra if a not in cache], **kw)
