"""Models added with ``tritonrepo add``: each is one reviewed file, ``model_repository/<name>/model.yaml``.

The file names the source (format, path, SHA-256), the tensors read from the model, the batching and the validation
tolerance. ``AddedModel.specs()`` turns it into the specs every other tool reads (render, build, check, perf
sweeps, the planner), so an added model needs no Python of its own. Edit the file, then run ``tritonrepo render``.

How each format is served: it is converted once to an ONNX graph and validated against the framework model
(export/added.py). The CPU target runs that graph with ONNX Runtime inside the Python backend (``onnx_encoder``);
GPU targets run it on Triton's native ``onnxruntime_onnx`` backend. A TensorFlow SavedModel can instead be served by
Triton's native ``tensorflow_savedmodel`` backend on GPU targets (``gpu_backend: tensorflow_savedmodel``, ``add
--tf-native``). ONNX is the default: one artifact, the one validated here, serves every target; the TensorFlow backend
keeps the GPU memory TensorFlow grabs until Triton exits, which starves the models sharing the card; and ONNX Runtime
can hand the graph to TensorRT. The native path is for graphs tf2onnx converts badly, and it cannot be validated on
a host without the NGC image's TensorFlow backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .ensembles.parameters import EncoderParameters, TokenizerParameters
from .errors import SpecError
from .paths import MODEL_REPOSITORY
from .specs import (MAX_TEXT_BYTES, AnySpec, Backend, Batching, Deployment, EnsembleSpec, InputLimits, Kind,
                    ModelSpec, Step, Tensor, check_repository)
from .targets import GPU_TARGETS, Target

SPEC_FILE = "model.yaml"
FORMATS = ("huggingface", "onnx", "torchscript", "tensorflow")
HF_TASKS = ("feature-extraction", "token-classification", "sequence-classification")
GPU_BACKENDS = (Backend.ONNXRUNTIME.value, "tensorflow_savedmodel")
ONNX_FILE = "model.onnx"
SAVEDMODEL_DIR = "model.savedmodel"  # the native TensorFlow backend's default file name
# Bounded CPU queue with two instances, like the served encoders (models.ENCODER_MAX_QUEUE): overload is refused at
# once instead of queueing without bound; one instance with a bounded queue stalls (README, "Known limits").
CPU_INSTANCES, CPU_MAX_QUEUE = 2, 256


@dataclass(frozen=True, kw_only=True)
class Source:
    format: str
    path: str
    sha256: str

    def __post_init__(self):
        if self.format not in FORMATS:
            raise SpecError(f"source format {self.format!r} is not one of {FORMATS}")


@dataclass(frozen=True, kw_only=True)
class AddedModel:
    name: str
    source: Source
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    max_batch_size: int = 32
    task: str = ""  # Hugging Face checkpoints: one of HF_TASKS
    # Token inputs (input_ids, attention_mask) whose requests may differ in length: the CPU model right-pads them
    # with 0 and sorts rows by length (Hugging Face checkpoints). Other variable dims are never padded: the batcher
    # then joins only requests of one shape.
    ragged: bool = False
    gpu_backend: str = Backend.ONNXRUNTIME.value
    atol: float = 1e-4  # validation: |served - framework| <= atol + rtol * |framework|, element-wise
    rtol: float = 1e-3
    samples: str = ""  # the engineer's validation inputs (.npz, one array per input), else seeded random tensors
    p95_bound_ms: float = 100.0  # the perf sweep's bound (`tritonrepo perf sweep <name>`)
    description: str = ""
    labels: tuple[str, ...] = field(default=())  # class names of a classifier's last output axis, when known
    # A Hugging Face checkpoint with a tokenizer.json is served behind it: `<name>` takes UTF-8 strings (an ensemble of
    # `<name>_tokenizer` and `<name>_model`, which takes the token ids), truncated at max_tokens.
    text_input: bool = False
    max_tokens: int = 512

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise SpecError(f"model '{self.name}', field 'max_batch_size': {self.max_batch_size}; an added model "
                            "needs a batch axis (max_batch_size >= 1)")
        if self.task and self.task not in HF_TASKS:
            raise SpecError(f"model '{self.name}', field 'task': {self.task!r} is not one of {HF_TASKS}")
        if self.gpu_backend not in GPU_BACKENDS:
            raise SpecError(f"model '{self.name}', field 'gpu_backend': {self.gpu_backend!r} not in {GPU_BACKENDS}")
        if self.gpu_backend != Backend.ONNXRUNTIME.value and self.source.format != "tensorflow":
            raise SpecError(f"model '{self.name}', field 'gpu_backend': the native TensorFlow backend serves only a "
                            f"SavedModel, not {self.source.format}")
        if self.text_input and [t.name for t in self.inputs] != ["input_ids", "attention_mask"]:
            raise SpecError(f"model '{self.name}', field 'text_input': needs the inputs input_ids, attention_mask")
        check_repository(self.specs())  # every spec-level check (names, dtypes, dims, wiring), naming this model

    @property
    def model_name(self) -> str:
        """The model that runs the converted graph: ``<name>`` itself, or ``<name>_model`` behind a tokenizer."""
        return f"{self.name}_model" if self.text_input else self.name

    def specs(self) -> list[AnySpec]:
        """The specs this file stands for: the model, and behind a tokenizer also the tokenizer and the ensemble."""
        model = self.model_spec()
        if not self.text_input:
            return [model]
        text = Tensor(name="TEXT", dtype="BYTES", dims=(1,))

        def tokenizer(pad: int) -> Deployment:  # each request padded to its own longest row (CPU: no rounding, so
            # per-token outputs have exactly the text's tokens; GPU: lengths rounded to 32, the buckets the native
            # backends batch)
            return Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=1,
                              batching=Batching(max_batch_size=max(256, self.max_batch_size), max_queue_delay_us=200),
                              parameters=TokenizerParameters.of(max_length=self.max_tokens, pad_to_multiple_of=pad),
                              limits=InputLimits(max_text_bytes=MAX_TEXT_BYTES))

        tok = ModelSpec(name=f"{self.name}_tokenizer", inputs=(text,), outputs=self.inputs,
                        python_model="text_tokenizer",
                        deployments={Target.CPU: tokenizer(1)} | {t: tokenizer(32) for t in GPU_TARGETS},
                        description=f"UTF-8 text -> {self.name}'s token ids (its tokenizer.json)")
        ids = {t.name: t.name for t in self.inputs}
        ensemble = EnsembleSpec(
            name=self.name, inputs=(text,), outputs=self.outputs, max_batch_size=self.max_batch_size,
            description=self.description or f"UTF-8 text -> {self.task} outputs",
            steps=(Step(model=tok.name, input_map={"TEXT": "TEXT"}, output_map=ids),
                   Step(model=model.name, input_map=ids, output_map={t.name: t.name for t in self.outputs})))
        return [tok, model, ensemble]

    def model_spec(self) -> ModelSpec:
        cpu = Deployment(
            backend=Backend.PYTHON, kind=Kind.CPU, count=CPU_INSTANCES, model_filename=ONNX_FILE,
            batching=Batching(max_batch_size=self.max_batch_size, max_queue_size=CPU_MAX_QUEUE),
            parameters=EncoderParameters.of(intra_op_threads=1, sort_by_length=self.ragged),
            ragged_batching=self.ragged)
        native = self.gpu_backend != Backend.ONNXRUNTIME.value
        gpu = Deployment(backend=Backend(self.gpu_backend), kind=Kind.GPU, count=1,
                         model_filename=SAVEDMODEL_DIR if native else ONNX_FILE,
                         batching=Batching(max_batch_size=self.max_batch_size, max_queue_delay_us=500))
        return ModelSpec(name=self.model_name, inputs=self.inputs, outputs=self.outputs, python_model="onnx_encoder",
                         deployments={Target.CPU: cpu} | {t: gpu for t in GPU_TARGETS},
                         description=self.description or f"added from a {self.source.format} model")

    # -- the reviewed file -----------------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        import yaml

        data = {
            "name": self.name, "description": self.description,
            "source": {"format": self.source.format, "path": self.source.path, "sha256": self.source.sha256},
            "task": self.task or None,
            "inputs": [_tensor_dict(t) for t in self.inputs], "outputs": [_tensor_dict(t) for t in self.outputs],
            "labels": list(self.labels) or None,
            "text_input": self.text_input or None, "max_tokens": self.max_tokens if self.text_input else None,
            "max_batch_size": self.max_batch_size, "ragged": self.ragged, "gpu_backend": self.gpu_backend,
            "validation": {"atol": self.atol, "rtol": self.rtol} | ({"samples": self.samples} if self.samples else {}),
            "sweep": {"p95_bound_ms": self.p95_bound_ms},
        }
        head = (f"# Written by `tritonrepo add {self.name}`; the spec of this model (tritonrepo/added.py).\n"
                "# Edit it, then run `tritonrepo render` (configs) and `tritonrepo build` (artifacts).\n")
        return head + yaml.safe_dump({k: v for k, v in data.items() if v is not None}, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, where: str = "model.yaml") -> "AddedModel":
        import yaml

        try:
            d = yaml.safe_load(text)
            return cls(name=d["name"], description=d.get("description", ""), source=Source(**d["source"]),
                       task=d.get("task") or "", inputs=tuple(_tensor(t) for t in d["inputs"]),
                       outputs=tuple(_tensor(t) for t in d["outputs"]), labels=tuple(d.get("labels") or ()),
                       max_batch_size=d.get("max_batch_size", 32), ragged=d.get("ragged", False),
                       text_input=d.get("text_input", False), max_tokens=d.get("max_tokens", 512),
                       gpu_backend=d.get("gpu_backend", Backend.ONNXRUNTIME.value),
                       atol=d.get("validation", {}).get("atol", 1e-4), rtol=d.get("validation", {}).get("rtol", 1e-3),
                       samples=d.get("validation", {}).get("samples", ""),
                       p95_bound_ms=d.get("sweep", {}).get("p95_bound_ms", 100.0))
        except (yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
            raise SpecError(f"{where}: not a valid added-model file ({type(e).__name__}: {e})") from e


def _tensor_dict(t: Tensor) -> dict:
    return {"name": t.name, "dtype": t.dtype.value, "dims": list(t.dims)}


def _tensor(d: dict) -> Tensor:
    return Tensor(name=d["name"], dtype=d["dtype"], dims=tuple(d["dims"]))


def path_of(name: str, repository: Path = MODEL_REPOSITORY) -> Path:
    return repository / name / SPEC_FILE


def load(name: str, repository: Path = MODEL_REPOSITORY) -> AddedModel:
    path = path_of(name, repository)
    if not path.exists():
        raise SpecError(f"no added model '{name}' ({path} does not exist; `tritonrepo add` writes it)")
    return AddedModel.from_yaml(path.read_text(), str(path))


def load_all(repository: Path = MODEL_REPOSITORY) -> list[AddedModel]:
    return [AddedModel.from_yaml(p.read_text(), str(p)) for p in sorted(repository.glob(f"*/{SPEC_FILE}"))]


def spec_of(name: str, repository: Path = MODEL_REPOSITORY) -> AnySpec | None:
    """The spec named ``name`` among the added models' (a tokenizer or model behind an ensemble included)."""
    return next((s for m in load_all(repository) for s in m.specs() if s.name == name), None)


def save(model: AddedModel, repository: Path = MODEL_REPOSITORY) -> Path:
    path = path_of(model.name, repository)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model.to_yaml())
    return path
