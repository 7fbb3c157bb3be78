"""TensorRT plans per GPU architecture, built from the validated ONNX files and validated against them.

On GPU targets the fp32 text encoders (``sbert_encoder``, ``ner_encoder``) are native ``tensorrt_plan`` models whose
configs map the target's compute capability to its plan (``cc_model_filenames {"8.6":
"model.sm86.plan"}``), so one repository can carry the plans of several GPU generations. A plan is tied to its GPU
architecture and TensorRT release: build it on the GPU it will serve on, with TensorRT 10.5 (the NGC 24.10 release
of the server; ``pip install tensorrt-cu12==10.5.0``), by ``tritonrepo export tensorrt --target a10g`` on that
host, or with the ``trtexec`` command line that ``trtexec_argv`` writes (inside the NGC image).

Precision: FP16 by default; INT8 (``--int8``) calibrates with TensorRT's entropy calibrator on real CoNLL sentences,
never on random tensors. Validation, against the ONNX fp32 graph on ONNX Runtime (itself validated against the
framework model at export), on real sentences not used for calibration; every failure is collected and nothing is
kept unless all pass: embeddings cosine >= 0.999 (INT8 0.99), NER per-token argmax agreement >= 99.5% (INT8 98%).
(TransNetV2 on GPU targets stays ``model.fp16.onnx`` on native ONNX Runtime, validated by its own export.)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonrepo.errors import ToolNotFoundError, ValidationError
from tritonrepo.models import NER_MAX_TOKENS, SBERT_MAX_TOKENS, spec
from tritonrepo.paths import ASSETS
from tritonrepo.targets import TARGETS

log = logging.getLogger(__name__)

ARTIFACTS = ASSETS / "artifacts" / "tensorrt"
TENSORRT_VERSION = "10.5"  # NGC 24.10
PLANNED = ("sbert_encoder", "ner_encoder")  # models served as TensorRT plans on GPU targets


Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input -> (min, opt, max)


def profile_shapes(model: str, target: str) -> Shapes:
    """The optimization profile of ``model`` on ``target``: batch from the target's deployment (opt = the largest
    preferred batch size), sequence lengths from the tokenizer's limits (opt = a typical text's length)."""
    dep = spec(model).deployment(target)
    max_batch = dep.batching.max_batch_size
    opt_batch = max(dep.batching.preferred_batch_sizes or (max(1, max_batch // 2),))
    max_len, opt_len = (SBERT_MAX_TOKENS, 64) if model == "sbert_encoder" else (NER_MAX_TOKENS, 32)
    shape = ((1, 1), (opt_batch, opt_len), (max_batch, max_len))
    return {"input_ids": shape, "attention_mask": shape}


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


def export_plans(target: str, *, int8: bool = False, models: tuple[str, ...] = PLANNED,
                 sources: dict[str, Path] | None = None) -> dict:
    """Build, validate and keep (``ARTIFACTS/<target>/<model>/``) the target's plans; refuses when this GPU is not
    the target's architecture. ``sources``: ONNX files other than the exported defaults. Install with ``install``."""
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
    report = {}
    for model in models:
        onnx = (sources or {}).get(model) or _onnx_source(model)
        plan = ARTIFACTS / target / model / TARGETS[target].plan_filename
        max_tokens = SBERT_MAX_TOKENS if model == "sbert_encoder" else NER_MAX_TOKENS
        feeds, calibration = _real_inputs(onnx.parent / "tokenizer.json", max_tokens)
        build_plan(onnx, plan, profile_shapes(model, target), calibration=calibration if int8 else None)
        reference = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        got = next(iter(run_plan(plan, feeds).values()))
        failures = compare(model, reference, got.astype(np.float32), int8, mask=feeds.get("attention_mask"))
        if failures:
            plan.unlink()
            raise ValidationError(str(plan), failures)
        report[model] = {"plan": str(plan), "precision": "int8+fp16" if int8 else "fp16", "gpu": torch.cuda.get_device_name(),
                         "tensorrt": _tensorrt().__version__}
        (plan.parent / "validation.json").write_text(json.dumps(report[model], indent=2))
    return report


def install(repository: Path, target: str) -> list[Path]:
    """Copy the target's validated plans into the repository's version folders."""
    import shutil

    placed = []
    for plan in sorted((ARTIFACTS / target).glob("*/model.sm*.plan")):
        dest = repository / plan.parent.name / "1" / plan.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(plan, dest)
        placed.append(dest)
    return placed


# ---- helpers that need the GPU host's packages -------------------------------------------------------------------


def _tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise ToolNotFoundError(f"TensorRT is not installed: pip install tensorrt-cu12=={TENSORRT_VERSION}.* on the "
                                "GPU host (the NGC 24.10 release's version)") from e
    return tensorrt


def _onnx_source(model: str) -> Path:
    from . import ner, sbert

    folder = {"sbert_encoder": sbert.ARTIFACTS, "ner_encoder": ner.NerExport().out_dir}[model]
    path = folder / "model.fp32.onnx"
    if not path.exists():
        raise ToolNotFoundError(f"{path} missing: run `tritonrepo export` for {model} first")
    return path


def _real_inputs(tokenizer: Path, max_tokens: int) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Validation inputs and INT8 calibration batches: real sentences, disjoint, with the model's own tokenizer."""
    from tokenizers import Tokenizer

    from tritonrepo.datasets import conll_sentences

    tok = Tokenizer.from_file(str(tokenizer))
    tok.enable_truncation(max_tokens)
    tok.enable_padding()

    def batch(texts):
        enc = tok.encode_batch(texts)
        return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}

    sentences = conll_sentences("test")
    return batch(sentences[:64]), [batch(sentences[i:i + 32]) for i in range(64, 64 + 32 * 16, 32)]


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
