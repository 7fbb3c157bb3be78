"""Typed, frozen model specs: the single source of truth for tensor names, shapes, dtypes and per-target deployment.

Export scripts, the config renderer, the clients and the perf sweeps all read tensor names from here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

from .errors import SpecError
from .targets import DEFAULT_TARGET, TARGETS, Choice, Target

DType = Choice("DType", [(n, n) for n in (  # Triton data types (model_config.proto DataType without TYPE_)
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BF16",
    "BYTES")])

# One UTF-8 text (query, passage, document) a text model reads; longer ones are refused. The tokenizers read only the
# first max_length tokens (at most 100 characters each), so this bounds the bytes a request copies and checks, not
# the model's work (docs/search.md: passages of any length up to it are accepted).
MAX_TEXT_BYTES = 1 << 20


class Backend(str, enum.Enum):
    PYTHON = "python"  # Python backend; the model's code comes from ensembles/<python_model>.py
    ONNXRUNTIME = "onnxruntime_onnx"  # native ONNX Runtime backend (NGC image)
    TENSORRT = "tensorrt_plan"  # native TensorRT backend (NGC image)
    TENSORFLOW = "tensorflow_savedmodel"  # native TensorFlow backend (NGC image); added SavedModels on GPU targets
    DALI = "dali"  # DALI backend (NGC image); the pipeline is dali.py in the version folder, serialized at load
    ENSEMBLE = "ensemble"


class Kind(str, enum.Enum):
    CPU = "KIND_CPU"
    GPU = "KIND_GPU"


def _fail(model: str, field_: str, why: str) -> SpecError:
    return SpecError(f"model '{model}', field '{field_}': {why}")


# Triton 2.51's dynamic batcher does not prefetch under a queue policy (a max_queue_size or a default timeout), so it
# hands a batch only to an instance waiting for one. When the one instance frees up, nothing wakes the batcher (core
# r24.10: dynamic_batch_scheduler.cc, rate_limiter.cc): a request that arrived in that gap waits out the batcher's
# 500 ms poll. Measured here: the sbert_encoder_int8 encoder alone at concurrency 1, p95 ~505 ms and 19-28 infer/s, against
# p95 8.8 ms and 209 infer/s without the bound or with 2 instances.
ONE_INSTANCE_QUEUE = ("a queue policy (max_queue_size, a queue timeout) needs 2 or more instances: with one, "
                      "Triton's dynamic batcher can miss the moment it frees up and hold a request for its 500 ms "
                      "poll; use 2 instances or drop the policy")


@dataclass(frozen=True, kw_only=True)
class Tensor:
    name: str
    dtype: DType  # a Triton type name ("FP32") is parsed into its DType
    dims: tuple[int, ...]  # without the batch dimension; -1 is variable
    optional: bool = False

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").isalnum():
            raise SpecError(f"tensor name {self.name!r} must be non-empty letters, digits and underscores")
        object.__setattr__(self, "dtype", DType.parse(self.dtype, f"tensor '{self.name}'"))
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise SpecError(f"tensor '{self.name}': dims {self.dims} must be non-empty, each -1 or positive")


@dataclass(frozen=True, kw_only=True)
class Batching:
    """Batching for one target. max_batch_size 0 means the model has no batch dimension."""

    max_batch_size: int
    dynamic: bool = True
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    max_queue_size: int = 0  # 0: unbounded queue; when full, requests are rejected at once (backpressure)
    queue_timeout_us: int = 0  # 0: none; a request queued longer is rejected (a client may ask for a shorter one)

    def check(self, model: str) -> None:
        if self.max_batch_size < 0:
            raise _fail(model, "max_batch_size", f"{self.max_batch_size} is negative")
        if self.dynamic and self.max_batch_size == 0:
            raise _fail(model, "batching.dynamic", "dynamic batching needs max_batch_size > 0")
        bad = [p for p in self.preferred_batch_sizes if not 0 < p <= self.max_batch_size]
        if bad:
            raise _fail(model, "preferred_batch_sizes", f"{bad} outside 1..max_batch_size={self.max_batch_size}")
        if list(self.preferred_batch_sizes) != sorted(set(self.preferred_batch_sizes)):
            raise _fail(model, "preferred_batch_sizes", f"{self.preferred_batch_sizes} must be strictly increasing")
        queue = (self.max_queue_delay_us, self.max_queue_size, self.queue_timeout_us)
        if not self.dynamic and (self.preferred_batch_sizes or any(queue)):
            raise _fail(model, "batching", "queue settings given but dynamic batching is off")
        if min(queue) < 0:
            raise _fail(model, "batching", "queue delay, size and timeout must be >= 0")


@dataclass(frozen=True, kw_only=True)
class Sequence:
    """Sequence batching (stateful models): every request of a sequence reaches the same instance, with START/END
    control tensors (INT32 [1]); a sequence idle longer than ``max_idle_us`` is released."""

    max_idle_us: int = 60_000_000
    max_candidates: int = 64  # sequences in flight per instance (strategy oldest)


@dataclass(frozen=True, kw_only=True)
class InputLimits:
    """What one request may ask of a Python-backend model, enforced by the model itself (not only by the clients):
    rendered as config ``parameters`` of the same names, so operators read and tune them in config.pbtxt. A request
    over a limit gets INVALID_ARGUMENT naming the parameter and its value; the model keeps serving. None: the limit
    does not apply to this model."""

    max_text_bytes: int | None = None  # one UTF-8 text (a row of a BYTES input)
    max_tokens: int | None = None  # token positions per row of a per-token input (ner_decoder's logits)
    max_request_bytes: int | None = None  # one request's encoded video (a file, or a live segment)
    max_frames: int | None = None  # frames of one request's video: the header's count, then as decoded
    max_pixels: int | None = None  # width x height of a frame: the header's, then each decoded frame's
    max_seconds: int | None = None  # wall-clock seconds of work on one request (decoding and inference)
    max_stream_frames: int | None = None  # frames of one live stream (a sequence), all its segments together

    def check(self, model: str) -> None:
        for name, value in self.parameters():
            if int(value) < 1:
                raise _fail(model, f"limits.{name}", f"{value} must be >= 1")

    def parameters(self) -> tuple[tuple[str, str], ...]:
        """The config parameters: (name, value) of every limit that applies."""
        return tuple((f.name, str(v)) for f in fields(self) if (v := getattr(self, f.name)) is not None)


@dataclass(frozen=True, kw_only=True)
class TensorRTAccelerator:
    """ONNX Runtime's TensorRT execution provider on a native ``onnxruntime_onnx`` GPU model: at load, TensorRT
    builds an engine from the validated ONNX graph for whatever NVIDIA GPU the host has (no per-GPU build step), and
    caches it in ``cache_path`` (a writable volume on the GPU host) for the next start. ``profile``: per input, the
    (min, opt, max) shapes the engine covers; inputs outside it would make ONNX Runtime rebuild the engine while
    serving, so max is the model's max_batch_size and token limit."""

    precision: str = "FP16"  # precision_mode: FP32, FP16 or INT8
    workspace_mib: int = 2048
    cache_path: str
    profile: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]

    def check(self, model: str) -> None:
        if self.precision not in ("FP32", "FP16", "INT8"):
            raise _fail(model, "accelerator.precision", f"{self.precision!r} is not FP32, FP16 or INT8")
        if not self.cache_path.startswith("/"):
            raise _fail(model, "accelerator.cache_path", f"{self.cache_path!r} must be an absolute path in the image")
        for name, lo, opt, hi in self.profile:
            if not (len(lo) == len(opt) == len(hi) and all(a <= b <= c for a, b, c in zip(lo, opt, hi))):
                raise _fail(model, "accelerator.profile", f"'{name}': need min <= opt <= max, got {lo} {opt} {hi}")


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """How a model runs on one hardware target."""

    backend: Backend
    batching: Batching
    kind: Kind = Kind.CPU
    count: int = 1
    model_filename: str | None = None  # file in the version folder (native backends) or passed to Python models
    parameters: tuple[tuple[str, str], ...] = ()  # config `parameters`, string values
    # Let the dynamic batcher put requests of different sequence lengths in one batch (allow_ragged_batch on every
    # variable-shape input). Only for backends that pad themselves (our Python models), never for native ORT/TRT.
    ragged_batching: bool = False
    decoupled: bool = False  # the model may send any number of responses per request (streaming)
    sequence: Sequence | None = None
    # Triton's response cache (used when the server runs with --cache-config): only for models whose output depends
    # on the input tensors alone, since the cache key ignores request parameters.
    response_cache: bool = False
    accelerator: TensorRTAccelerator | None = None  # native ONNX Runtime on KIND_GPU only
    limits: InputLimits = InputLimits()  # enforced by the Python model's code, rendered into `parameters`

    def check(self, model: str, target: Target) -> None:
        where = f"{model}@{target}"
        self.batching.check(where)
        if self.count < 1:
            raise _fail(where, "count", f"instance count {self.count} must be >= 1")
        if (self.batching.max_queue_size or self.batching.queue_timeout_us) and self.count == 1:
            raise _fail(where, "batching", ONE_INSTANCE_QUEUE)
        if self.kind is Kind.GPU and not TARGETS[target].is_gpu:
            raise _fail(where, "kind", f"KIND_GPU on target '{target}', which has no GPU")
        if self.backend is Backend.TENSORRT and self.kind is not Kind.GPU:
            raise _fail(where, "backend", "TensorRT plans run on KIND_GPU only")
        if self.backend is Backend.ENSEMBLE:
            raise _fail(where, "backend", "ensembles are EnsembleSpec, not a Deployment")
        if self.ragged_batching and (self.backend is not Backend.PYTHON or self.batching.max_batch_size == 0):
            raise _fail(where, "ragged_batching", "only for Python-backend models with max_batch_size > 0")
        if self.sequence and (self.batching.dynamic or self.batching.max_batch_size == 0):
            raise _fail(where, "sequence", "sequence batching replaces dynamic batching and needs max_batch_size > 0")
        if self.response_cache and (self.decoupled or self.sequence):
            raise _fail(where, "response_cache", "not for decoupled or sequence models")
        if self.backend is Backend.DALI and self.batching.max_batch_size == 0:
            raise _fail(where, "batching", "DALI pipelines need max_batch_size > 0")
        limits = self.limits.parameters()
        if limits and self.backend is not Backend.PYTHON:
            raise _fail(where, "limits", f"only Python-backend models read and enforce them, not {self.backend.value}")
        self.limits.check(where)
        twice = sorted({name for name, _ in limits} & {name for name, _ in self.parameters})
        if twice:
            raise _fail(where, "parameters", f"{twice} are limits: set them in `limits` only")
        if self.accelerator:
            if self.backend is not Backend.ONNXRUNTIME or self.kind is not Kind.GPU:
                raise _fail(where, "accelerator", "the TensorRT accelerator is for onnxruntime_onnx on KIND_GPU")
            self.accelerator.check(where)
            names = [name for name, *_ in self.accelerator.profile]
            if any(lo[0] < 1 or hi[0] > self.batching.max_batch_size for _, lo, _, hi in self.accelerator.profile):
                raise _fail(where, "accelerator.profile", f"batch sizes must lie in 1..{self.batching.max_batch_size}")
            if len(set(names)) != len(names):
                raise _fail(where, "accelerator.profile", f"inputs named twice: {names}")


class _Signature:
    """Tensor-name helpers shared by model and ensemble specs."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


@dataclass(frozen=True, kw_only=True)
class ModelSpec(_Signature):
    """A model served by a backend (not an ensemble)."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    deployments: dict[str, Deployment]  # target name -> deployment; every target in TARGETS
    python_model: str | None = None  # module in ensembles/ whose TritonPythonModel serves the Python backend
    dali_pipeline: str | None = None  # module in ensembles/ with the @autoserialize DALI pipeline (DALI backend)
    calls: tuple[str, ...] = ()  # models it calls through BLS: loaded and packaged with it
    description: str = ""

    def __post_init__(self):
        _check_common(self.name, self.inputs, self.outputs)
        missing = sorted(set(TARGETS) - set(self.deployments))
        unknown = sorted(set(self.deployments) - set(TARGETS))
        if missing or unknown:
            raise _fail(self.name, "deployments", f"missing targets {missing}, unknown targets {unknown}")
        for target, dep in self.deployments.items():
            dep.check(self.name, target)
            if dep.backend is Backend.PYTHON and not self.python_model:
                raise _fail(self.name, "python_model", f"target '{target}' uses the Python backend but no module")
            if dep.backend is Backend.DALI and not self.dali_pipeline:
                raise _fail(self.name, "dali_pipeline", f"target '{target}' uses the DALI backend but no pipeline")
            profiled = {name for name, *_ in dep.accelerator.profile} if dep.accelerator else set(self.input_names)
            if profiled != set(self.input_names):
                raise _fail(self.name, "accelerator.profile", f"target '{target}' profiles {sorted(profiled)}, "
                            f"the inputs are {list(self.input_names)}")

    def deployment(self, target: Target) -> Deployment:
        return self.deployments[target]


@dataclass(frozen=True, kw_only=True)
class Step:
    model: str
    input_map: dict[str, str]  # step input -> ensemble tensor
    output_map: dict[str, str]  # step output -> ensemble tensor


@dataclass(frozen=True, kw_only=True)
class EnsembleSpec(_Signature):
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    steps: tuple[Step, ...]
    max_batch_size: int
    response_cache: bool = False  # see Deployment.response_cache: no step may read request parameters
    description: str = ""

    def __post_init__(self):
        _check_common(self.name, self.inputs, self.outputs)
        if not self.steps:
            raise _fail(self.name, "steps", "an ensemble needs at least one step")
        if self.max_batch_size < 0:
            raise _fail(self.name, "max_batch_size", "must be >= 0")


AnySpec = ModelSpec | EnsembleSpec


def dependencies(specs: list[AnySpec], name: str) -> list[str]:
    """The models ``name`` needs loaded beside it (ensemble steps and BLS calls, transitively), in load order."""
    by_name = {s.name: s for s in specs}
    order: list[str] = []

    def visit(model: str) -> None:
        spec = by_name[model]
        needed = [step.model for step in spec.steps] if isinstance(spec, EnsembleSpec) else list(spec.calls)
        for m in needed:
            if m not in order:
                visit(m)
                order.append(m)

    visit(name)
    return order


def with_dependencies(specs: list[AnySpec], names) -> list[str]:
    """``names`` and every model they need loaded beside them (explicit model control loads an ensemble's steps, not
    what a model calls through BLS), sorted; names ``specs`` do not know are kept as given."""
    known = {s.name for s in specs}
    return sorted(set(names).union(*(dependencies(specs, n) for n in names if n in known)))


def _check_common(name: str, inputs: tuple[Tensor, ...], outputs: tuple[Tensor, ...]) -> None:
    if not name or not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise SpecError(f"model name {name!r}: letters, digits and underscores, starting with a letter")
    if not inputs:
        raise _fail(name, "inputs", "a model needs at least one input")
    if not outputs:
        raise _fail(name, "outputs", "a model needs at least one output")
    names = [t.name for t in (*inputs, *outputs)]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(name, "inputs/outputs", f"duplicate tensor names {dupes}")


def check_repository(specs: list[AnySpec]) -> None:
    """Cross-model checks: unique names, ensemble wiring (every tensor produced before it is used, dtypes agree),
    and on every target each step's max_batch_size at least the ensemble's."""
    by_name: dict[str, AnySpec] = {}
    for spec in specs:
        if spec.name in by_name:
            raise _fail(spec.name, "name", "two specs share this name")
        by_name[spec.name] = spec
    for spec in specs:
        unknown = [m for m in getattr(spec, "calls", ()) if m not in by_name]
        if unknown:
            raise _fail(spec.name, "calls", f"unknown models {unknown}")
    for ens in (s for s in specs if isinstance(s, EnsembleSpec)):
        available = {t.name: t for t in ens.inputs}
        for i, step in enumerate(ens.steps):
            where = f"steps[{i}] ({step.model})"
            inner = by_name.get(step.model)
            if inner is None:
                raise _fail(ens.name, where, f"unknown model '{step.model}'")
            if isinstance(inner, EnsembleSpec):
                raise _fail(ens.name, where, "nested ensembles are not supported")
            inner_in = {t.name: t for t in inner.inputs}
            inner_out = {t.name: t for t in inner.outputs}
            for step_in, ens_t in step.input_map.items():
                if step_in not in inner_in:
                    raise _fail(ens.name, where, f"'{step.model}' has no input '{step_in}'")
                if ens_t not in available:
                    raise _fail(ens.name, where, f"tensor '{ens_t}' is used before any step produces it")
                if available[ens_t].dtype != inner_in[step_in].dtype:
                    raise _fail(ens.name, where, f"'{ens_t}' is {available[ens_t].dtype}, "
                                f"'{step.model}.{step_in}' wants {inner_in[step_in].dtype}")
            unfed = [t.name for t in inner.inputs if not t.optional and t.name not in step.input_map]
            if unfed:
                raise _fail(ens.name, where, f"required inputs {unfed} are not mapped")
            for step_out, ens_t in step.output_map.items():
                if step_out not in inner_out:
                    raise _fail(ens.name, where, f"'{step.model}' has no output '{step_out}'")
                available[ens_t] = inner_out[step_out]
            for target, dep in inner.deployments.items():
                if dep.batching.max_batch_size < ens.max_batch_size:
                    raise _fail(ens.name, where, f"on target '{target}' max_batch_size "
                                f"{dep.batching.max_batch_size} < the ensemble's {ens.max_batch_size}")
        for out in ens.outputs:
            if out.name not in available:
                raise _fail(ens.name, "outputs", f"no step produces '{out.name}'")
            if available[out.name].dtype != out.dtype:
                raise _fail(ens.name, "outputs", f"'{out.name}' is produced as {available[out.name].dtype}")


__all__ = [
    "AnySpec", "Backend", "Batching", "DEFAULT_TARGET", "Deployment", "EnsembleSpec", "InputLimits", "Kind",
    "ModelSpec", "Sequence", "Step", "Tensor", "TensorRTAccelerator", "check_repository", "dependencies",
]
