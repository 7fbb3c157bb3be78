"""``tritonrepo check``: lint a repository's configs, load every model in a real local Triton, send each a warm-up
request, and compare served outputs with the framework model's wherever a reference was kept at export.

Lint reads the config files themselves (hand edits and imported models included), per target:
batching (max_batch_size vs dynamic batching and preferred sizes), instance groups (GPU kinds on the CPU target,
TensorRT plans on CPU), the one-instance bounded queue that stalls (README, "Known limits"), and ensemble wiring
(every step model, tensor, dtype and batch size). For the main repository it also reports drift from the specs it
is given (the CLI gives the registry's).
For the checked target it adds what would keep the repository from loading in the serving images
(``deployable``: missing files, backends, instance kinds, imports the images cannot satisfy).

Serving: models load one by one (explicit model control), so one broken model is named and the others still get
checked. A model with ``1/reference.npz`` (written by its exporter: the requests and what the framework model
answered) replays it concurrently, so the dynamic batcher joins requests, and is compared within the stored tolerance.
Other entry models get a request made from their config (text for strings, a real clip for video bytes); models that
only serve as ensemble steps or BLS callees are exercised through their callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import deployable
from .added import load_all
from .contracts import SEGMENT, VIDEO
from .deployable import Finding
from .errors import ModelLoadError, RenderDriftError
from .paths import MODEL_REPOSITORY, VIDEO_DIR
from .specs import ONE_INSTANCE_QUEUE, AnySpec, with_dependencies
from .targets import TARGETS, Target
from .validate import REFERENCE, Checks, compare, load_reference

WARMUP_TEXT = "Warm-up request from tritonrepo check: Reuters reports rain in Paris."


@dataclass
class Served:
    model: str
    status: str  # "reference", "warm-up", "through <callers>", "load failed", "failed"
    ok: bool
    detail: str = ""
    metrics: dict = field(default_factory=dict)


@dataclass
class Report:
    findings: list[Finding]
    served: list[Served]

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings) and all(s.ok for s in self.served)

    def text(self) -> str:
        lines = [f"{f.level}: {f.model} ({f.where}): {f.message}" for f in self.findings]
        lines += [f"{'ok' if s.ok else 'FAILED'}: {s.model}: {s.status} {s.detail}".rstrip() for s in self.served]
        return "\n".join(lines)


# ---- lint -------------------------------------------------------------------------------------------------------
def _configs(repository: Path) -> tuple[dict[str, dict[str, object]], list[Finding]]:
    """model -> target -> ModelConfig (config.pbtxt stands for targets without a configs/<target>.pbtxt)."""
    from google.protobuf import text_format

    from .render import parse

    out: dict[str, dict[str, object]] = {}
    findings = []
    for default in sorted(repository.glob("*/config.pbtxt")):
        model = default.parent.name
        out[model] = {}
        for target in TARGETS:
            path = default.parent / "configs" / f"{target}.pbtxt"
            if not path.exists():
                findings.append(Finding("warning", model, f"{model}/configs/{target}.pbtxt",
                                        f"missing: --model-config-name={target} falls back to config.pbtxt"))
                path = default
            try:
                out[model][target] = parse(path.read_text())
            except text_format.ParseError as e:
                findings.append(Finding("error", model, str(path.relative_to(repository)), f"does not parse: {e}"))
    return out, findings


def _lint_model(model: str, target: Target, cfg, where: str) -> list[Finding]:
    found = []

    def add(level: str, message: str) -> None:
        found.append(Finding(level, model, where, message))

    batching = cfg.dynamic_batching if cfg.HasField("dynamic_batching") else None
    if batching and cfg.max_batch_size == 0:
        add("error", "dynamic batching with max_batch_size 0: the model has no batch axis to batch along")
    if batching:
        sizes = list(batching.preferred_batch_size)
        if any(s > cfg.max_batch_size or s < 1 for s in sizes):
            add("error", f"preferred_batch_size {sizes} outside 1..max_batch_size {cfg.max_batch_size}")
        if sizes != sorted(set(sizes)):
            add("warning", f"preferred_batch_size {sizes} not strictly increasing")
        policy = batching.default_queue_policy
        if (policy.max_queue_size or policy.default_timeout_microseconds) and \
                sum(g.count or 1 for g in cfg.instance_group) == 1:
            add("warning", f"one instance: {ONE_INSTANCE_QUEUE}")
    elif cfg.max_batch_size > 1 and not cfg.HasField("sequence_batching") and cfg.platform != "ensemble":
        add("warning", f"max_batch_size {cfg.max_batch_size} without dynamic batching: requests run one by one "
                       "unless clients send batches")
    kinds = {g.kind for g in cfg.instance_group}
    from tritonclient.grpc import model_config_pb2 as mc

    if not TARGETS[target].is_gpu and mc.ModelInstanceGroup.KIND_GPU in kinds:
        add("error", f"KIND_GPU instances on target '{target}', which has no GPU")
    if cfg.platform == "tensorrt_plan" and mc.ModelInstanceGroup.KIND_CPU in kinds:
        add("error", "a TensorRT plan on KIND_CPU instances: plans run on GPUs only")
    return found


def _lint_ensemble(model: str, target: Target, cfg, configs: dict, where: str) -> list[Finding]:
    """Ensemble maps against the step models' tensors on the same target (the config-level twin of
    specs.check_repository, for repositories edited or imported by hand)."""
    found = []
    available = {t.name: t.data_type for t in cfg.input}
    for i, step in enumerate(cfg.ensemble_scheduling.step):
        label = f"step {i} ({step.model_name})"
        inner = configs.get(step.model_name, {}).get(target)
        if inner is None:
            found.append(Finding("error", model, where, f"{label}: no model '{step.model_name}' in the repository"))
            continue
        inner_in = {t.name: t for t in inner.input}
        inner_out = {t.name: t for t in inner.output}
        for step_in, ens in step.input_map.items():
            if step_in not in inner_in:
                found.append(Finding("error", model, where, f"{label}: '{step.model_name}' has no input '{step_in}'"))
            elif ens not in available:
                found.append(Finding("error", model, where, f"{label}: '{ens}' is used before a step produces it"))
            elif available[ens] != inner_in[step_in].data_type:
                found.append(Finding("error", model, where, f"{label}: '{ens}' and '{step_in}' differ in dtype"))
        unfed = [n for n, t in inner_in.items() if not t.optional and n not in step.input_map]
        if unfed:
            found.append(Finding("error", model, where, f"{label}: required inputs {unfed} are not mapped"))
        for step_out, ens in step.output_map.items():
            if step_out not in inner_out:
                found.append(Finding("error", model, where, f"{label}: '{step.model_name}' has no output "
                                                            f"'{step_out}'"))
            else:
                available[ens] = inner_out[step_out].data_type
        if inner.max_batch_size < cfg.max_batch_size:
            found.append(Finding("error", model, where, f"{label}: max_batch_size {inner.max_batch_size} < the "
                                                        f"ensemble's {cfg.max_batch_size}"))
    missing = [t.name for t in cfg.output if t.name not in available]
    if missing:
        found.append(Finding("error", model, where, f"no step produces outputs {missing}"))
    return found


def lint(repository: Path, specs: Sequence[AnySpec] = ()) -> list[Finding]:
    """Findings over the repository's configs; for the main repository, its drift from ``specs`` too."""
    configs, findings = _configs(repository)
    per_config = []
    for model, per_target in configs.items():
        for target, cfg in per_target.items():
            where = f"{model}/configs/{target}.pbtxt"
            if cfg.platform == "ensemble":
                per_config += _lint_ensemble(model, target, cfg, configs, where)
            else:
                per_config += _lint_model(model, target, cfg, where)
    targets: dict[tuple, list[str]] = {}  # one finding per model and message, naming every target it holds on
    for f in per_config:
        targets.setdefault((f.level, f.model, f.message), []).append(Path(f.where).stem)
    for (level, model, message), names in targets.items():
        where = f"{model}/configs/{names[0]}.pbtxt" if len(names) == 1 else f"{model}/configs/{{{','.join(names)}}}"
        findings.append(Finding(level, model, where, message))
    if specs and repository.resolve() == MODEL_REPOSITORY.resolve():
        from . import render

        try:
            render.check(repository, list(specs))
        except RenderDriftError as e:
            findings.append(Finding("error", "*", "model_repository/", str(e)))
    return findings


# ---- serving ----------------------------------------------------------------------------------------------------
def _dtype_name(config_type: str) -> str:
    return "BYTES" if config_type == "TYPE_STRING" else config_type.removeprefix("TYPE_")


def warmup_inputs(config: dict) -> dict[str, np.ndarray]:
    """One request made from a model's config: texts for strings, bikes.mp4 for encoded video bytes, ones or zeros
    otherwise; optional inputs left out."""
    videos = {VIDEO.name, SEGMENT.name}
    batch = (1,) if config.get("max_batch_size", 0) else ()
    feeds = {}
    for t in config["input"]:
        if t.get("optional"):
            continue
        dtype, dims = _dtype_name(t["data_type"]), [int(d) for d in t["dims"]]
        if t["name"] in videos:
            clip = np.frombuffer((VIDEO_DIR / "bikes.mp4").read_bytes(), np.uint8)
            feeds[t["name"]] = clip[None] if batch else clip
        elif dtype == "BYTES":
            feeds[t["name"]] = np.full((*batch, *(1 if d == -1 else d for d in dims)), WARMUP_TEXT.encode(),
                                       dtype=np.object_)
        else:
            from tritonclient.utils import triton_to_np_dtype

            shape = (*batch, *(8 if d == -1 else d for d in dims))
            feeds[t["name"]] = np.ones(shape, dtype=triton_to_np_dtype(dtype))
    return feeds


def _infer(client, model: str, config: dict, feeds: dict[str, np.ndarray], seq: int = 0) -> dict[str, np.ndarray]:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, array in feeds.items():
        t = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        t.set_data_from_numpy(array)
        inputs.append(t)
    outputs = [grpcclient.InferRequestedOutput(o["name"]) for o in config["output"]]
    extra = dict(sequence_id=seq, sequence_start=True, sequence_end=True) if seq else {}
    result = client.infer(model, inputs, outputs=outputs, client_timeout=300, **extra)
    return {o["name"]: result.as_numpy(o["name"]) for o in config["output"]}


def _replay(client, model: str, config: dict, path: Path) -> Served:

    tolerance, pairs = load_reference(path)
    with ThreadPoolExecutor(4) as pool:  # concurrent: the dynamic batcher joins (ragged) requests
        answers = list(pool.map(lambda p: _infer(client, model, config, p[0]), pairs))
    checks = Checks(model)
    for i, ((_, expected), got) in enumerate(zip(pairs, answers)):
        for name, want in expected.items():
            compare(checks, name, want, got[name], tolerance, f"request {i}")
    detail = f"{len(pairs)} requests vs the framework model: {checks.metrics} (bound {tolerance})"
    if checks.failures:
        detail += ": " + "; ".join(checks.failures[:5])
    return Served(model, "reference", not checks.failures, detail, checks.metrics)


def _callers(configs: dict[str, dict], specs: list[AnySpec]) -> dict[str, list[str]]:
    """model -> the models that call it (ensemble steps from the configs, BLS calls from the specs)."""
    callers: dict[str, list[str]] = {}
    for name, cfg in configs.items():
        for step in cfg.get("ensemble_scheduling", {}).get("step", []):
            callers.setdefault(step["model_name"], []).append(name)
    for spec in specs:
        if spec.name in configs:
            for callee in getattr(spec, "calls", ()):
                callers.setdefault(callee, []).append(spec.name)
    return callers


def serve(repository: Path, *, target: Target = Target.CPU, models: list[str] | None = None, url: str | None = None,
          specs: Sequence[AnySpec] = ()) -> list[Served]:
    """Load each model (or use the server at ``url``) and exercise it. ``models``: these and what they need.
    ``specs``: the specs the repository was built from, beside its added models': what each model calls."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from .server import TritonServer

    known = list({s.name: s for s in [*specs, *(s for m in load_all(repository) for s in m.specs())]}.values())
    every = [p.parent.name for p in repository.glob("*/config.pbtxt")]
    names = with_dependencies(known, models) if models else sorted(every)
    server = None if url else TritonServer(repository, model_config_name=target, explicit_models=[]).start()
    client = grpcclient.InferenceServerClient(url or server.grpc_url)
    results, configs = [], {}
    try:
        ensembles = {n for n in names if "platform: \"ensemble\"" in (repository / n / "config.pbtxt").read_text()}
        for name in sorted(names, key=lambda n: (n in ensembles, n)):  # steps first: an ensemble loads its own
            try:
                if not url:
                    client.load_model(name, headers=server.admin_headers)
                configs[name] = client.get_model_config(name, as_json=True)["config"]
            except InferenceServerException as e:
                results.append(Served(name, "load failed", False, e.message()[:500]))
        callers = _callers(configs, known)
        for name, config in sorted(configs.items()):
            reference = repository / name / "1" / REFERENCE
            try:
                if reference.exists():
                    results.append(_replay(client, name, config, reference))
                elif name in callers:
                    results.append(Served(name, f"through {', '.join(sorted(callers[name]))}", True, "loaded"))
                elif config.get("model_transaction_policy", {}).get("decoupled"):
                    results.append(Served(name, "loaded", True, "decoupled: answers streams only, not warmed up"))
                else:
                    seq = 1 if config.get("sequence_batching") else 0
                    out = _infer(client, name, config, warmup_inputs(config), seq)
                    shapes = {k: list(v.shape) for k, v in out.items()}
                    results.append(Served(name, "warm-up", True, f"outputs {shapes}"))
            except InferenceServerException as e:
                results.append(Served(name, "failed", False, e.message()[:500]))
    finally:
        client.close()
        if server:
            server.stop()
    return results


def run(repository: Path = MODEL_REPOSITORY, *, target: Target = Target.CPU, models: list[str] | None = None,
        url: str | None = None, serve_models: bool = True, specs: Sequence[AnySpec] = ()) -> Report:
    """Lint, then serve and exercise. ``specs``: what the repository was built from (the registry's, the CLI's)."""
    findings = lint(repository, specs) + deployable.check(repository, target)
    if models:
        findings = [f for f in findings if f.model in models or f.model == "*"]
    served = []
    if serve_models:
        try:
            served = serve(repository, target=target, models=models, url=url, specs=specs)
        except ModelLoadError as e:
            served = [Served(m, "load failed", False, why) for m, why in e.failed.items()]
    return Report(findings, served)
