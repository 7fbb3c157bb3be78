"""``tritonrepo add``: recognise a model on disk, read its tensors, convert it to one ONNX graph, validate the graph
against the framework model, and install it into the repository (spec file, configs, artifacts, a server test).

Formats (``detect``): a Hugging Face checkpoint folder (config.json; the task comes from its architecture), an ONNX
file, a TorchScript file (it records no shapes: give ``--input NAME:DTYPE:DIMS``), a TensorFlow SavedModel folder
(its ``serving_default`` signature, converted by tf2onnx).

Validation (DESIGN.md §4): the framework model and the ONNX graph answer the same sample requests (real sentences
for a checkpoint with a tokenizer, the engineer's ``--samples`` file, or else seeded random tensors of the declared
shapes); every output must agree element-wise within the model's ``atol + rtol * |framework|``. The requests and the
framework's answers are kept as ``reference.npz``: the model's server test and ``tritonrepo check`` replay them
against the served model. Before that, a batch of 1 and a batch of 3 are run through the framework model: a model
whose outputs do not follow the batch (a reshape to batch 1 baked in) is refused, since Triton batches requests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Collection
from pathlib import Path

import numpy as np

from tritonrepo import added, render
from tritonrepo.added import AddedModel, Source
from tritonrepo.errors import AddError, ValidationError
from tritonrepo.paths import ASSETS, MODEL_REPOSITORY, ROOT, require
from tritonrepo.specs import Tensor
from tritonrepo.validate import REFERENCE, Checks, compare, save_reference

from .artifacts import publish, staging_dir

log = logging.getLogger(__name__)

ARTIFACTS = ASSETS / "artifacts" / "added"
RECIPE_VERSION = 1  # bump when conversion or validation changes: cached exports are rebuilt
OPSET = 17
TEXT_REFERENCE = "reference.text.npz"
VARIABLE = (8, 5)  # sizes given to a variable dimension by the two shape probes

# numpy dtype name -> Triton dtype
_NUMPY_TO_TRITON = {"float16": "FP16", "float32": "FP32", "float64": "FP64", "int8": "INT8", "int16": "INT16",
                    "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
                    "uint64": "UINT64", "bool": "BOOL", "object": "BYTES", "bytes": "BYTES", "str": "BYTES"}


def triton_dtype(dtype, what: str) -> str:
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    name = "bytes" if name.startswith(("bytes", "str")) else name
    if name not in _NUMPY_TO_TRITON:
        raise AddError(f"{what}: dtype {name} has no Triton type (Triton has {sorted(set(_NUMPY_TO_TRITON.values()))})"
                       "; cast it in the model (e.g. to float32) and export again")
    return _NUMPY_TO_TRITON[name]


def numpy_dtype(triton: str):
    return np.object_ if triton == "BYTES" else np.dtype({v: k for k, v in _NUMPY_TO_TRITON.items()
                                                          if k not in ("object", "bytes", "str")}[triton])


def detect(path: Path) -> str:
    """The format of the model at ``path`` (one of added.FORMATS), or AddError saying what it looks like instead."""
    if not path.exists():
        raise AddError(f"{path} does not exist")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "tensorflow"
        if (path / "config.json").exists():
            return "huggingface"
        raise AddError(f"{path} is a folder but neither a Hugging Face checkpoint (config.json) nor a TensorFlow "
                       "SavedModel (saved_model.pb)")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":  # torch.save and torch.jit.save both write zip archives; only TorchScript holds code
        with zipfile.ZipFile(path) as z:
            if any(n.split("/", 1)[-1].startswith("code/") for n in z.namelist()):
                return "torchscript"
        raise AddError(f"{path} is a PyTorch checkpoint without code (a state dict or pickled module): script or "
                       "trace the model (torch.jit.script / torch.jit.trace) and torch.jit.save it, or export ONNX")
    if path.suffix == ".onnx":
        return "onnx"
    raise AddError(f"{path}: not a format `add` reads (Hugging Face folder, .onnx, TorchScript, SavedModel folder)")


def source_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a folder's relative file names and contents in sorted order."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(p.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _synthetic(inputs: tuple[Tensor, ...], rows: int, variable: int, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for t in inputs:
        shape = (rows, *(variable if d == -1 else d for d in t.dims))
        if t.dtype == "BYTES":
            raise AddError(f"input '{t.name}' is BYTES (strings): random data cannot stand in for it; give real "
                           "samples with --samples FILE.npz (one array per input, rows first)")
        if t.dtype == "BOOL":
            feeds[t.name] = rng.random(shape) > 0.5
        elif t.dtype.startswith(("INT", "UINT")):
            feeds[t.name] = rng.integers(0, 10, shape).astype(numpy_dtype(t.dtype))
        else:
            feeds[t.name] = rng.standard_normal(shape).astype(numpy_dtype(t.dtype))
    return feeds


def probe_outputs(run, inputs: tuple[Tensor, ...], names=None, samples: dict | None = None) -> tuple[Tensor, ...]:
    """Run batches of 1 and 3 (variable dims 8, then 5; or the first rows of ``samples``) and read each output's
    dtype and dims; AddError when an output does not follow the batch."""
    if samples:
        one, three = run({k: v[:1] for k, v in samples.items()}), run({k: v[:3] for k, v in samples.items()})
    else:
        rng = np.random.default_rng(0)
        one = run(_synthetic(inputs, 1, VARIABLE[0], rng))
        three = run(_synthetic(inputs, 3, VARIABLE[1], rng))
    tensors = []
    for i, (key, a) in enumerate(one.items()):
        b = three[key]
        if a.ndim == 0 or a.shape[0] != 1 or b.shape[0] != 3:
            raise AddError(f"output '{key}' does not follow the batch (shape {list(a.shape)} for a batch of 1, "
                           f"{list(b.shape)} for 3): Triton batches requests along axis 0; export the model with a "
                           "dynamic batch axis (e.g. torch.onnx dynamic_axes {0: 'batch'}, a Keras Input without "
                           "batch_size)")
        if a.ndim == 1:
            raise AddError(f"output '{key}' has only the batch axis; reshape it to [batch, 1] in the model")
        dims = tuple(x if x == y else -1 for x, y in zip(a.shape[1:], b.shape[1:]))
        tensors.append(Tensor(name=names[i] if names else key, dtype=triton_dtype(a.dtype, f"output '{key}'"),
                              dims=dims))
    return tuple(tensors)


# ---- the four frameworks -----------------------------------------------------------------------------------------
class Framework:
    """One source model: its tensors, how to run it, how to make its ONNX graph, and sample requests."""

    format = ""

    def __init__(self, path: Path, *, inputs: tuple[Tensor, ...] = (), output_names: tuple[str, ...] = (),
                 task: str = "", samples: Path | None = None):
        self.path, self.given_inputs, self.output_names, self.task = path, inputs, output_names, task
        self.samples_file = samples
        self.texts: list[str] = []  # the sentences behind token-id requests, when they came from real text

    def samples(self, inputs: tuple[Tensor, ...]) -> dict[str, np.ndarray] | None:
        """The --samples arrays (rows first), typed as the inputs, or None."""
        if not self.samples_file:
            return None
        with np.load(self.samples_file, allow_pickle=False) as data:
            missing = [t.name for t in inputs if t.name not in data]
            if missing:
                raise AddError(f"{self.samples_file}: no arrays for inputs {missing} (it has {list(data)})")
            arrays = {t.name: data[t.name].astype(np.object_ if t.dtype == "BYTES" else numpy_dtype(t.dtype))
                      for t in inputs}
        if len({len(a) for a in arrays.values()}) != 1 or len(next(iter(arrays.values()))) < 3:
            raise AddError(f"{self.samples_file}: every array needs the same number of rows, at least 3")
        return arrays

    def signature(self) -> dict:
        """inputs, outputs (and for checkpoints task, ragged, labels) for AddedModel."""
        raise NotImplementedError

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def to_onnx(self, model: AddedModel, dest: Path) -> None:
        raise NotImplementedError

    def requests(self, model: AddedModel, count: int = 8) -> list[dict[str, np.ndarray]]:
        """Sample requests: the --samples file cut into requests of up to 4 rows, or seeded random tensors."""
        arrays = self.samples(model.inputs)
        if arrays:
            rows = len(next(iter(arrays.values())))
            return [{k: v[i:i + 4] for k, v in arrays.items()} for i in range(0, rows, 4)][:count]
        rng = np.random.default_rng(1)
        return [_synthetic(model.inputs, 1 + i % 3, VARIABLE[i % 2], rng) for i in range(count)]


class OnnxFile(Framework):
    format = "onnx"

    def _session(self):
        import onnxruntime as ort

        try:
            return ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types
            raise AddError(f"ONNX Runtime cannot load {self.path.name} ({str(e)[:400]}); Triton's ONNX Runtime "
                           "backends would fail the same way (unsupported op or opset, custom domain?)") from e

    def signature(self) -> dict:
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        inputs = []
        for value in (v for v in graph.input if v.name not in initializers):
            t = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            if not dims or dims[0] != -1:
                raise AddError(f"input '{value.name}' has no batch axis (shape {dims or 'scalar'}): Triton batches "
                               "requests along a variable first axis; export the graph with a dynamic axis 0")
            np_type = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type != onnx.TensorProto.STRING \
                else np.object_
            inputs.append(Tensor(name=value.name, dtype=triton_dtype(np_type, f"input '{value.name}'"),
                                 dims=tuple(dims[1:]) or (1,)))
        session = self._session()
        names = [o.name for o in session.get_outputs()]
        outputs = probe_outputs(lambda f: dict(zip(names, session.run(names, f))), tuple(inputs),
                                samples=self.samples(tuple(inputs)))
        return {"inputs": tuple(inputs), "outputs": outputs}

    def run(self, feeds):
        session = getattr(self, "_cached", None) or self._session()
        self._cached = session
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def to_onnx(self, model, dest):
        shutil.copy(self.path, dest)


class TorchScriptFile(Framework):
    format = "torchscript"

    def _module(self):
        import torch

        if getattr(self, "_loaded", None) is None:
            try:
                self._loaded = torch.jit.load(str(self.path), map_location="cpu").eval()
            except RuntimeError as e:
                raise AddError(f"torch.jit.load cannot read {self.path.name}: {str(e)[:300]}") from e
        return self._loaded

    def signature(self) -> dict:
        if not self.given_inputs:
            raise AddError("a TorchScript file records no input shapes: give each input of forward() in order as "
                           "--input NAME:DTYPE:DIMS (dims without the batch axis, -1 variable), e.g. "
                           "--input features:FP32:16")
        args = [a for a in self._module().graph.inputs()][1:]  # the first is self
        if len(args) != len(self.given_inputs):
            raise AddError(f"forward() takes {len(args)} tensors, {len(self.given_inputs)} --input given")
        return {"inputs": self.given_inputs,
                "outputs": probe_outputs(self.run, self.given_inputs, self.output_names or None,
                                         samples=self.samples(self.given_inputs))}

    def run(self, feeds):
        import torch

        with torch.no_grad():
            out = self._module()(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if not all(isinstance(o, torch.Tensor) for o in outs):
            raise AddError("forward() must return a tensor or a tuple of tensors")
        names = self.output_names or tuple(f"output_{i}" for i in range(len(outs)))
        if len(names) != len(outs):
            raise AddError(f"forward() returns {len(outs)} tensors, {len(names)} --output names given")
        return {n: o.numpy() for n, o in zip(names, outs)}

    def to_onnx(self, model, dest):
        import torch

        sample = _synthetic(model.inputs, 2, VARIABLE[0], np.random.default_rng(0))
        axes = {t.name: {0: "batch", **{i + 1: f"{t.name}_{i + 1}" for i, d in enumerate(t.dims) if d == -1}}
                for t in (*model.inputs, *model.outputs)}
        with torch.no_grad():
            torch.onnx.export(self._module(), tuple(torch.from_numpy(v) for v in sample.values()), str(dest),
                              input_names=[t.name for t in model.inputs],
                              output_names=[t.name for t in model.outputs], dynamic_axes=axes, opset_version=OPSET,
                              dynamo=False)


class HuggingFaceCheckpoint(Framework):
    format = "huggingface"
    TOKENS = (Tensor(name="input_ids", dtype="INT64", dims=(-1,)), Tensor(name="attention_mask", dtype="INT64",
                                                                         dims=(-1,)))

    def _config(self):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(self.path))

    def _task(self, config) -> str:
        if self.task:
            return self.task
        arch = (config.architectures or [""])[0]
        for suffix, task in (("ForTokenClassification", "token-classification"),
                             ("ForSequenceClassification", "sequence-classification"), ("Model", "feature-extraction")):
            if arch.endswith(suffix):
                return task
        raise AddError(f"architecture {arch or '(none in config.json)'} is not a task `add` serves "
                       f"({', '.join(added.HF_TASKS)}); pass --task if the checkpoint is one of them")

    def _model(self):
        if getattr(self, "_loaded", None) is None:
            from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            cls = {"token-classification": AutoModelForTokenClassification, "feature-extraction": AutoModel,
                   "sequence-classification": AutoModelForSequenceClassification}[self._task(self._config())]
            # eager attention exports a plain MatMul/Softmax graph that ONNX Runtime fuses at load
            self._loaded = cls.from_pretrained(str(self.path), attn_implementation="eager").eval()
        return self._loaded

    def _field(self) -> str:
        return "last_hidden_state" if self._task(self._config()) == "feature-extraction" else "logits"

    def signature(self) -> dict:
        config = self._config()
        task = self._task(config)
        width = config.hidden_size if task == "feature-extraction" else config.num_labels
        dims = (width,) if task == "sequence-classification" else (-1, width)
        labels = [config.id2label[i] for i in range(config.num_labels)] if task != "feature-extraction" else []
        if all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
            labels = []  # transformers' placeholders, not names
        return {"inputs": self.TOKENS, "outputs": (Tensor(name=self._field(), dtype="FP32", dims=dims),),
                "task": task, "ragged": True, "labels": tuple(labels),
                "text_input": (self.path / "tokenizer.json").exists(), "max_tokens": self._max_tokens()}

    def _max_tokens(self) -> int:
        return min(512, getattr(self._config(), "max_position_embeddings", 512))

    def run(self, feeds):
        import torch

        with torch.no_grad():
            out = self._model()(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return {self._field(): getattr(out, self._field()).float().numpy()}

    def to_onnx(self, model, dest):
        from .hf import logits_to_onnx

        axes = {0: "batch", 1: "sequence"} if model.outputs[0].dims[0] == -1 else {0: "batch"}
        logits_to_onnx(self._model(), dest, tuple(t.name for t in self.TOKENS), self._field(), axes, OPSET,
                       field=self._field())

    def requests(self, model, count: int = 8):
        """One tokenized real sentence per request (CoNLL-2003 test, various lengths) when the checkpoint has a
        tokenizer.json; else random ids within its vocabulary."""
        if self.samples_file:
            return super().requests(model, count)
        if (self.path / "tokenizer.json").exists():
            from tokenizers import Tokenizer

            from tritonrepo.datasets import conll_sentences

            tok = Tokenizer.from_file(str(self.path / "tokenizer.json"))
            tok.no_padding()
            tok.enable_truncation(self._max_tokens())
            self.texts = conll_sentences("test")[:count]  # what the text ensemble's reference sends
            encodings = tok.encode_batch(self.texts)
            return [{"input_ids": np.array([e.ids], np.int64), "attention_mask": np.array([e.attention_mask],
                                                                                          np.int64)}
                    for e in encodings]
        rng = np.random.default_rng(1)
        vocab = self._config().vocab_size
        return [{"input_ids": (ids := rng.integers(1, vocab, (1, n))), "attention_mask": np.ones_like(ids)}
                for n in (5, 12, 7, 20, 3, 9, 16, 11)[:count]]


class SavedModel(Framework):
    format = "tensorflow"

    def _signature(self):
        if getattr(self, "_sig", None) is None:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            try:
                import tensorflow as tf
            except ImportError as e:
                raise AddError("TensorFlow is not installed in this venv: pip install -e '.[tensorflow]'") from e
            loaded = tf.saved_model.load(str(self.path))
            if "serving_default" not in loaded.signatures:
                raise AddError(f"{self.path} has no serving_default signature (it has {list(loaded.signatures)}); "
                               "save it with model.export(path) or tf.saved_model.save(..., signatures=...)")
            self._loaded, self._sig = loaded, loaded.signatures["serving_default"]
        return self._sig

    def signature(self) -> dict:
        sig = self._signature()
        inputs = []
        for name, spec in sorted(sig.structured_input_signature[1].items()):
            shape = spec.shape.as_list() if spec.shape.rank is not None else []
            if not shape or shape[0] is not None:
                raise AddError(f"input '{name}' has no batch axis (shape {shape or 'unknown rank'}): save the model "
                               "with a variable first dimension (a Keras Input without batch_size)")
            inputs.append(Tensor(name=name, dtype=triton_dtype(spec.dtype.as_numpy_dtype, f"input '{name}'"),
                                 dims=tuple(-1 if d is None else d for d in shape[1:]) or (1,)))
        return {"inputs": tuple(inputs),
                "outputs": probe_outputs(self.run, tuple(inputs), samples=self.samples(tuple(inputs)))}

    def run(self, feeds):
        import tensorflow as tf

        out = self._signature()(**{k: tf.constant(v) for k, v in feeds.items()})
        return {k: out[k].numpy() for k in sorted(out)}

    def to_onnx(self, model, dest):
        argv = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(self.path), "--signature_def",
                "serving_default", "--opset", str(OPSET), "--output", str(dest)]
        done = subprocess.run(argv, capture_output=True, text=True, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"})
        if done.returncode != 0 or not dest.exists():
            lines = [ln for ln in done.stderr.splitlines() if "ERROR" in ln or "Unsupported" in ln or "Error" in ln]
            raise AddError("tf2onnx could not convert the SavedModel (an op ONNX lacks?):\n"
                           + "\n".join(lines[-10:] or done.stderr.splitlines()[-10:]))


FRAMEWORKS = {cls.format: cls for cls in (OnnxFile, TorchScriptFile, HuggingFaceCheckpoint, SavedModel)}


# ---- export, validation, installation ----------------------------------------------------------------------------
def _onnx_run(path: Path, model: AddedModel):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_in = {i.name for i in session.get_inputs()}
    got_out = {o.name for o in session.get_outputs()}
    want_in, want_out = set(model.model_spec().input_names), set(model.model_spec().output_names)
    if got_in != want_in or not want_out <= got_out:
        raise AddError(f"the converted graph's tensors {sorted(got_in)} -> {sorted(got_out)} differ from the spec's "
                       f"{sorted(want_in)} -> {sorted(want_out)}")
    names = list(want_out)
    return lambda feeds: dict(zip(names, session.run(names, feeds)))


def fingerprint(model: AddedModel) -> str:
    return hashlib.sha256(f"{RECIPE_VERSION}|{model.to_yaml()}".encode()).hexdigest()[:16]


def export(model: AddedModel, framework: Framework | None = None, *, out_dir: Path | None = None,
           force: bool = False) -> dict:
    """Convert, validate, keep the artifacts in ``out_dir`` (cached by the spec file, which holds the source's hash).
    Returns the validation report; raises ValidationError with every failed check, writing nothing."""
    out_dir = out_dir or ARTIFACTS / model.name
    key = fingerprint(model)
    report_path = out_dir / "validation.json"
    if not force and report_path.exists() and json.loads(report_path.read_text()).get("fingerprint") == key:
        return json.loads(report_path.read_text())
    source = Path(model.source.path)
    require(source, f"the source of added model '{model.name}'")
    if source_sha256(source) != model.source.sha256:
        raise AddError(f"{source} changed since `tritonrepo add {model.name}` read it (SHA-256 differs): re-run "
                       "`tritonrepo add` with --force to read its tensors again")
    framework = framework or FRAMEWORKS[model.source.format](
        source, inputs=model.inputs, output_names=model.model_spec().output_names, task=model.task,
        samples=Path(model.samples) if model.samples else None)
    t0 = time.perf_counter()
    work = staging_dir(out_dir)
    log.info("%s: converting the %s model to ONNX (opset %d)", model.name, model.source.format, OPSET)
    framework.to_onnx(model, work / added.ONNX_FILE)
    served = _onnx_run(work / added.ONNX_FILE, model)
    requests = framework.requests(model)
    checks = Checks(f"{model.name} {added.ONNX_FILE}")
    answers = []
    for i, request in enumerate(requests):
        expected, got = framework.run(request), served(request)
        answers.append({t.name: expected[t.name] for t in model.outputs})
        for name in model.model_spec().output_names:
            compare(checks, name, expected[name], got[name], {"atol": model.atol, "rtol": model.rtol},
                    f"request {i}")
    if checks.failures:
        shutil.rmtree(work, ignore_errors=True)
        raise ValidationError(checks.artifact, checks.failures)
    tolerance = {"atol": model.atol, "rtol": model.rtol}
    save_reference(work / REFERENCE, requests, answers, tolerance)
    if model.text_input and framework.texts:  # the same sentences as strings, for the ensemble behind the tokenizer
        texts = [{"TEXT": np.array([[t.encode()]], dtype=object)} for t in framework.texts]
        save_reference(work / TEXT_REFERENCE, texts, answers, tolerance)
    report = {"fingerprint": key, "model": model.name, "format": model.source.format, "source": model.source.path,
              "reference": f"the {model.source.format} model itself, on the same requests",
              "requests": len(requests), "rows": int(sum(len(next(iter(r.values()))) for r in requests)),
              "tolerance": {"atol": model.atol, "rtol": model.rtol}, "metrics": checks.metrics,
              "seconds": round(time.perf_counter() - t0, 1)}
    (work / "validation.json").write_text(json.dumps(report, indent=2))
    publish(work, out_dir)
    log.info("%s validated against its framework model: %s", model.name, checks.metrics)
    return report


def install(model: AddedModel, repository: Path, out_dir: Path | None = None) -> list[Path]:
    """Configs from the spec, the ONNX Runtime Python model, the validated graph and reference requests; for the
    native TensorFlow backend also the SavedModel as model.savedmodel/ (what GPU targets load)."""
    from tritonrepo.repository import install_python_models
    from tritonrepo.tuning import with_tuning

    out_dir = out_dir or ARTIFACTS / model.name
    placed = []
    for spec in with_tuning(model.specs()):  # as `tritonrepo render` writes them (perf/tuned/ applied)
        for rel, text in render.render_spec(spec).items():
            (repository / rel).parent.mkdir(parents=True, exist_ok=True)
            (repository / rel).write_text(text)
            placed.append(repository / rel)
        (repository / spec.name / "1").mkdir(parents=True, exist_ok=True)
    placed += install_python_models(repository, model.specs())
    version = repository / model.model_name / "1"
    copies = [(out_dir / name, version / name) for name in (added.ONNX_FILE, REFERENCE, "validation.json")]
    if model.text_input:
        copies.append((Path(model.source.path) / "tokenizer.json",
                       repository / f"{model.name}_tokenizer" / "1" / "tokenizer.json"))
    if (out_dir / TEXT_REFERENCE).exists():
        copies.append((out_dir / TEXT_REFERENCE, repository / model.name / "1" / REFERENCE))
    for src, dest in copies:
        shutil.copy2(src, dest)
        placed.append(dest)
    if model.gpu_backend == "tensorflow_savedmodel":
        shutil.rmtree(version / added.SAVEDMODEL_DIR, ignore_errors=True)
        shutil.copytree(model.source.path, version / added.SAVEDMODEL_DIR)
        placed.append(version / added.SAVEDMODEL_DIR)
    return placed


def stage(name: str, destination: Path, repository: Path = MODEL_REPOSITORY) -> Path:
    """A repository in ``destination`` holding only the added model ``name`` of ``repository``, built (export
    cached) and ready to serve: what the model's server test runs."""
    model = added.load(name, repository)
    export(model)
    added.save(model, destination)
    install(model, destination)
    return destination


def install_all(repository: Path, source_repository: Path = MODEL_REPOSITORY) -> list[dict]:
    """Export (cached) and install every model added to ``source_repository`` into ``repository``."""
    reports = []
    for model in added.load_all(source_repository):
        reports.append(export(model))
        install(model, repository)
    return reports


TEST_TEMPLATE = '''"""Written by `tritonrepo add {name}`: the served model answers what its {format} model computed.

Builds the model from its source if needed (export cached in .assets/artifacts/added/{name}), serves it alone in the
real tritonserver, replays the reference requests kept at export and compares within the tolerance of
model_repository/{name}/model.yaml.
"""

import pytest

from tritonrepo import check
from tritonrepo.export import added

pytestmark = pytest.mark.server


def test_{name}_serves_what_its_framework_model_computes(tmp_path):
    report = check.run(added.stage("{name}", tmp_path), models=["{name}"])
    assert report.ok, report.text()
'''


def add(name: str, source: Path, *, repository: Path = MODEL_REPOSITORY, tests_dir: Path | None = ROOT / "tests" /
        "server", inputs: tuple[Tensor, ...] = (), output_names: tuple[str, ...] = (), task: str = "",
        max_batch_size: int = 32, tf_native: bool = False, samples: Path | None = None, atol: float = 1e-4,
        rtol: float = 1e-3, p95_bound_ms: float = 100.0, force: bool = False, reserved: Collection[str] = ()) -> dict:
    """Scaffold the model ``name`` from ``source``: read its tensors, convert and validate it, then write its spec
    file, configs, artifacts and (``tests_dir``) its server test. Returns what was written and the validation.
    ``reserved``: names taken besides the repository's folders (the CLI gives the built-in models')."""
    source = Path(source).resolve()
    if added.path_of(name, repository).exists() and not force:
        raise AddError(f"'{name}' is already added ({added.path_of(name, repository)}); --force replaces it")
    taken = set(reserved) | {p.parent.name for p in repository.glob("*/config.pbtxt")}
    if added.path_of(name, repository).exists():  # --force: its own folders are not a clash
        taken -= {s.name for s in added.load(name, repository).specs()}
    clash = sorted(taken & {name, f"{name}_model", f"{name}_tokenizer"})
    if clash:
        raise AddError(f"the repository already has models named {clash}; choose another name")
    fmt = detect(source)
    framework = FRAMEWORKS[fmt](source, inputs=inputs, output_names=output_names, task=task, samples=samples)
    log.info("%s: reading the %s model's tensors", name, fmt)
    sig = framework.signature()
    model = AddedModel(name=name, source=Source(format=fmt, path=str(source), sha256=source_sha256(source)),
                       inputs=sig["inputs"], outputs=sig["outputs"], task=sig.get("task", ""),
                       ragged=sig.get("ragged", False), labels=sig.get("labels", ()), max_batch_size=max_batch_size,
                       text_input=sig.get("text_input", False), max_tokens=sig.get("max_tokens", 512),
                       gpu_backend="tensorflow_savedmodel" if tf_native else "onnxruntime_onnx", atol=atol,
                       rtol=rtol, p95_bound_ms=p95_bound_ms,
                       samples=str(Path(samples).resolve()) if samples else "",
                       description=f"{sig.get('task') or 'tensor'} model added from {source.name} ({fmt})")
    if tf_native and fmt != "tensorflow":
        raise AddError("--tf-native is for TensorFlow SavedModels only")
    report = export(model, framework, force=True)
    files = [added.save(model, repository)] + install(model, repository)
    if tests_dir:
        test = tests_dir / f"test_added_{name}.py"
        test.parent.mkdir(parents=True, exist_ok=True)
        test.write_text(TEST_TEMPLATE.format(name=name, format=fmt))
        files.append(test)
    return {"model": model, "validation": report, "files": files}
