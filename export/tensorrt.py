"""Opt-in TensorRT plans per GPU architecture, built on the GPU host from the repository's validated ONNX files and
validated against them.

By default the GPU configs of the fp32 text encoders run their ONNX graph through ONNX Runtime's TensorRT provider
(FP16, engines cached at load; ``specs.TensorRTAccelerator``), which works on any NVIDIA GPU from a repository
built anywhere. Native plans skip ONNX Runtime and the first-start engine build, but a plan is tied to its GPU
architecture and TensorRT release, so it is built where it serves: ``tritonrepo export tensorrt --target a10g
--repository SRC --out DEST`` on the GPU host (the compose override ``deploy/compose.tensorrt.yml`` runs it as a
one-shot service in ``deploy/tensorrt.Dockerfile``, TensorRT 10.5 = the NGC 24.10 release of the server). It copies
SRC to DEST, builds each plan into DEST's version folder (``model.sm86.plan`` for compute capability 8.6), validates
it, and only then writes that model's ``configs/<target>.pbtxt`` as a ``tensorrt_plan`` config
(``text_specs.tensorrt_plan``): a model whose plan fails keeps its ONNX Runtime config, so a plan config never names a
plan that was not validated. ``trtexec_argv`` gives the same build as a ``trtexec`` command line.

Precision: FP16 by default; INT8 (``--int8``, dev checkout only) calibrates with TensorRT's entropy calibrator on
real CoNLL sentences, never on random tensors. Validation, against the fp32 ONNX graph on ONNX Runtime (CPU; itself
validated against the framework model at export), on real sentences not used for calibration: the texts of the
repository's SBERT reference requests (``sbert/1/reference.npz``), tokenized by the model's own tokenizer. Every
failure is collected and nothing is kept unless all pass: embeddings cosine >= 0.999 (INT8 0.99), NER per-token
argmax agreement >= 99.5% (INT8 98%).
"""


from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonrepo import render
from tritonrepo.errors import ToolNotFoundError, ValidationError
from tritonrepo.targets import TARGETS, Target
from tritonrepo.text_specs import tensorrt_plan

from .ner import NER_MAX_TOKENS
from .sbert import SBERT_MAX_TOKENS

log = logging.getLogger(__name__)

TENSORRT_VERSION = "10.5"  # NGC 24.10
PLANNED = ("sbert_encoder", "ner_encoder")  # the encoders whose plans have validation gates
TOKENIZERS = {"sbert_encoder": "sbert_tokenizer", "ner_encoder": "ner_tokenizer"}


Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input -> (min, opt, max)


def spec(model: str):
    """The model's spec as the repository serves it (perf/tuned/ applied)."""
    from .families import spec as served_spec  # here: the registry imports every module of this package

    return served_spec(model)


def profile_shapes(model: str, target: Target) -> Shapes:
    """The optimization profile of ``model`` on ``target``: the one its ONNX Runtime config gives the TensorRT
    provider (batch 1..max_batch_size, opt the largest preferred batch; sequence lengths up to the tokenizer's
    limit, opt a typical text's length)."""
    return {name: (lo, opt, hi) for name, lo, opt, hi in spec(model).deployment(target).accelerator.profile}


def trtexec_argv(onnx: Path, plan: Path, shapes: Shapes, *, int8_calibration_cache: Path | None = None,
                 workspace_mib: int = 4096, trtexec: str = "trtexec") -> list[str]:
    """The ``trtexec`` command that builds the same plan (FP16; INT8 from a calibration cache that
    ``build_plan(..., calibration=...)`` wrote)."""
    def dims(i: int) -> str:
        return ",".join(f"{name}:{'x'.join(map(str, s[i]))}" for name, s in shapes.items())

    argv = [trtexec, f"--onnx={onnx}", f"--saveEngine={plan}", "--fp16", f"--minShapes={dims(0)}",
            f"--optShapes={dims(1)}", f"--maxShapes={dims(2)}", f"--memPoolSize=workspace:{workspace_mib}M",
            "--skipInference"]
    if int8_calibration_cache:
        argv += ["--int8", f"--calib={int8_calibration_cache}"]
    return argv


@dataclass(frozen=True)
class Gate:
    metric: str  # cosine (rows) or argmax (per token, masked)
    fp16: float
    int8: float


GATES = {"sbert_encoder": Gate("cosine", 0.999, 0.99), "ner_encoder": Gate("argmax", 0.995, 0.98)}


def compare(model: str, reference: np.ndarray, got: np.ndarray, int8: bool, mask: np.ndarray | None = None) -> list:
    """The gate's failures (empty when the plan's outputs pass)."""
    gate = GATES[model]
    bound = gate.int8 if int8 else gate.fp16
    if reference.shape != got.shape:
        return [f"{model}: output shape {got.shape} != ONNX {reference.shape}"]
    if gate.metric == "cosine":
        cos = (reference * got).sum(-1) / (np.linalg.norm(reference, axis=-1) * np.linalg.norm(got, axis=-1))
        value, ok = float(cos.min()), float(cos.min()) >= bound
    else:
        same = reference.argmax(-1) == got.argmax(-1)
        value = float(same[mask.astype(bool)].mean() if mask is not None else same.mean())
        ok = value >= bound
    return [] if ok else [f"{model}: {gate.metric} {value:.4f} fails the {'int8' if int8 else 'fp16'} gate {bound}"]


def build_plan(onnx: Path, plan: Path, shapes: Shapes, *, calibration: list[dict[str, np.ndarray]] | None = None,
               calibration_cache: Path | None = None, workspace_mib: int = 4096) -> Path:
    """Build a plan with the TensorRT Python API on this machine's GPU: FP16, plus INT8 when ``calibration``
    batches are given (entropy calibration; the cache is written for trtexec)."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch always
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ValidationError(str(plan), [f"ONNX parse: {e}" for e in errors])
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if calibration:
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_calibration_profile(profile)
        config.int8_calibrator = _calibrator(trt, calibration, calibration_cache or plan.with_suffix(".calib"))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValidationError(str(plan), ["TensorRT could not build the engine (see its log above)"])
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(bytes(serialized))
    return plan


def run_plan(plan: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a plan once on this GPU (torch CUDA tensors as buffers); outputs as NumPy."""
    import torch

    trt = _tensorrt()
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(plan).read_bytes())
    context = engine.create_execution_context()
    buffers, outputs = {}, {}
    for name, array in feeds.items():
        buffers[name] = torch.from_numpy(np.ascontiguousarray(array)).cuda()
        context.set_input_shape(name, array.shape)
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            dtype = torch.from_numpy(np.zeros(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
            buffers[name] = outputs[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype,
                                                        device="cuda")
    for name, tensor in buffers.items():
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.Stream()
    context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return {name: t.cpu().numpy() for name, t in outputs.items()}


def export_plans(target: Target, repository: Path, out: Path, *, int8: bool = False,
                 models: tuple[str, ...] = PLANNED) -> dict:
    """On the GPU of ``target``: copy ``repository`` to ``out``, build each model's plan there from its validated
    fp32 ONNX, validate it, and switch that model's ``configs/<target>.pbtxt`` in ``out`` to the plan. Refuses when
    this GPU is not the target's architecture; raises ValidationError naming every failed gate (the failed plans are
    removed, their configs stay on ONNX Runtime)."""
    import onnxruntime as ort
    import torch

    cc = TARGETS[target].compute_capability
    if cc is None:
        raise ToolNotFoundError(f"target {target} has no GPU: TensorRT plans are for GPU targets")
    if not torch.cuda.is_available():
        raise ToolNotFoundError("building TensorRT plans needs the target's GPU: none is visible here")
    here = "{}.{}".format(*torch.cuda.get_device_capability())
    if here != cc:
        raise ToolNotFoundError(f"this GPU is compute capability {here}; target {target} is {cc}: build its plans "
                                "on a GPU of that architecture")
    stage(repository, out)
    texts = validation_texts(out)
    report, failures = {}, []
    for model in models:
        version = out / model / "1"
        onnx, plan = version / "model.fp32.onnx", version / TARGETS[target].plan_filename
        tokenizer = out / TOKENIZERS[model] / "1" / "tokenizer.json"
        feeds = _encode(tokenizer, texts, spec(model).input_names, max_tokens(model))
        calibration = _calibration_batches(tokenizer, max_tokens(model)) if int8 else None
        build_plan(onnx, plan, profile_shapes(model, target), calibration=calibration)
        reference = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        got = next(iter(run_plan(plan, feeds).values()))
        failed = compare(model, reference, got.astype(np.float32), int8, mask=feeds.get("attention_mask"))
        if failed:
            plan.unlink()
            failures += failed
            continue
        report[model] = {"plan": str(plan), "precision": "int8+fp16" if int8 else "fp16", "texts": len(texts),
                         "gpu": torch.cuda.get_device_name(), "tensorrt": _tensorrt().__version__}
        (version / "validation.tensorrt.json").write_text(json.dumps(report[model], indent=2))
        activate(out, model, target)
    if failures:
        raise ValidationError(f"TensorRT plans for {target}", failures)
    return report


def stage(repository: Path, out: Path) -> None:
    """Make ``out`` a copy of ``repository`` (its contents replaced: ``out`` may be a mounted volume)."""
    if Path(out).resolve() == Path(repository).resolve():
        return
    out.mkdir(parents=True, exist_ok=True)
    for child in out.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    shutil.copytree(repository, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))


def activate(repository: Path, model: str, target: Target) -> Path:
    """Write ``model``'s ``configs/<target>.pbtxt`` as the native plan config (call only once its plan passed)."""
    path = repository / model / "configs" / f"{target}.pbtxt"
    path.write_text(render.to_text(render.model_config(tensorrt_plan(spec(model), target), target), target))
    return path


def validation_texts(repository: Path) -> list[str]:
    """Real sentences shipped in the repository: the texts of the SBERT ensemble's reference requests."""
    from tritonrepo.validate import REFERENCE, load_reference

    path = repository / "sbert" / "1" / REFERENCE
    if not path.exists():
        raise ToolNotFoundError(f"{path} missing: build the repository with `tritonrepo build` first")
    _, pairs = load_reference(path)
    return [t.decode() for inputs, _ in pairs for t in inputs["TEXT"].ravel()]


def max_tokens(model: str) -> int:
    return SBERT_MAX_TOKENS if model == "sbert_encoder" else NER_MAX_TOKENS


# ---- helpers that need the GPU host's packages -------------------------------------------------------------------


def _tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise ToolNotFoundError(f"TensorRT is not installed: pip install tensorrt-cu12=={TENSORRT_VERSION}.* on the "
                                "GPU host (the NGC 24.10 release's version)") from e
    return tensorrt


def _encode(tokenizer: Path, texts: list[str], names: tuple[str, ...], max_tokens: int) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    tok.enable_truncation(max_tokens)
    tok.enable_padding()
    enc = tok.encode_batch(texts)
    feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
             "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
    return {n: feeds[n] for n in names}


def _calibration_batches(tokenizer: Path, max_tokens: int) -> list[dict[str, np.ndarray]]:
    """INT8 calibration batches: 16 x 32 real CoNLL test sentences (a dev checkout's data; the validation texts are
    CoNLL valid sentences, so the two never overlap)."""
    from tritonrepo.datasets import conll_sentences

    names = ("input_ids", "attention_mask")
    sentences = conll_sentences("test")
    return [_encode(tokenizer, sentences[i:i + 32], names, max_tokens) for i in range(0, 32 * 16, 32)]


def _calibrator(trt, batches: list[dict[str, np.ndarray]], cache: Path):
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.batches, self.index, self.held = batches, 0, {}

        def get_batch_size(self):
            return len(next(iter(batches[0].values())))

        def get_batch(self, names):
            if self.index == len(self.batches):
                return None
            self.held = {n: torch.from_numpy(self.batches[self.index][n]).cuda() for n in names}
            self.index += 1
            return [self.held[n].data_ptr() for n in names]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, data):
            cache.write_bytes(bytes(data))

    return EntropyCalibrator()
