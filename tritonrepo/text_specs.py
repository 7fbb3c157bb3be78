"""Building blocks of the text families' specs (export/sbert.py, ner.py, rerank.py): the token tensors, the
tokenizer model and an encoder's deployment on every target, and the TensorRT plan variant of one. The specs
themselves live with their families; the registry (export/families.py) collects them.

GPU values are starting points sized from each card's memory and throughput class until a profile from that card
replaces them (tuning.py).
"""

from __future__ import annotations

import dataclasses

from .contracts import TEXT
from .ensembles.parameters import EncoderParameters, TokenizerParameters
from .errors import SpecError
from .specs import (MAX_TEXT_BYTES, Backend, Batching, Deployment, InputLimits, Kind, ModelSpec, Tensor,
                    TensorRTAccelerator)
from .targets import TARGETS, Target

PRECISIONS = ("fp32", "int8")  # each encoder is served as ONNX fp32 and int8, each behind its own ensemble
# Requests an encoder queues before Triton rejects more (RESOURCE_EXHAUSTED-like "Exceeds maximum queue size"):
# overload answers at once and clients back off (services/ingest.py), instead of latency growing without bound.
ENCODER_MAX_QUEUE = 256


def suffixed(name: str, precision: str) -> str:
    """The model's name at ``precision``: fp32 unsuffixed, ``<name>_int8``."""
    return name if precision == "fp32" else f"{name}_{precision}"


INPUT_IDS = Tensor(name="input_ids", dtype="INT64", dims=(-1,))
ATTENTION_MASK = Tensor(name="attention_mask", dtype="INT64", dims=(-1,))


@dataclasses.dataclass(frozen=True)
class GpuStart:
    """A text model's starting point on one GPU target: its encoder's batching and instances, and how many tokenizer
    instances feed it."""

    max_batch: int
    preferred: tuple[int, ...]
    queue_delay_us: int
    tokenizer_instances: int
    encoder_instances: int = 2  # 2: one instance behind a bounded queue stalls (specs.ONE_INSTANCE_QUEUE)


def gpu_starts(*, t4: GpuStart, a10g: GpuStart, a100: GpuStart, h100: GpuStart) -> dict[Target, GpuStart]:
    """A text model's starting point on each GPU target. The L4 starts where the A10G does (24 GB each, a similar
    fp16 throughput class) until a profile from it replaces it."""
    return {Target.T4: t4, Target.A10G: a10g, Target.L4: a10g, Target.A100: a100, Target.H100: h100}


def tokenizer_spec(name: str, max_tokens: int, outputs: tuple[Tensor, ...], gpu_tuning: dict[Target, GpuStart],
                   description: str, inputs: tuple[Tensor, ...] = (TEXT,), **parameters) -> ModelSpec:
    # Each request is padded to its own longest row, rounded up to pad_to_multiple_of. On GPU targets the native
    # encoder backends batch only requests of equal length, so lengths are rounded to 32 there (buckets), not 8.
    def dep(count: int, max_batch: int, delay_us: int, pad: int) -> Deployment:
        return Deployment(
            backend=Backend.PYTHON, kind=Kind.CPU, count=count, model_filename="tokenizer.json",
            batching=Batching(max_batch_size=max_batch, max_queue_delay_us=delay_us),
            parameters=TokenizerParameters.of(max_length=max_tokens, pad_to_multiple_of=pad, **parameters),
            limits=InputLimits(max_text_bytes=MAX_TEXT_BYTES),
        )

    deployments = {Target.CPU: dep(1, 256, 200, 8)}
    for target, start in gpu_tuning.items():
        deployments[target] = dep(start.tokenizer_instances, start.max_batch, min(start.queue_delay_us, 500), 32)
    return ModelSpec(name=name, description=description, inputs=inputs, outputs=outputs,
                     deployments=deployments, python_model="text_tokenizer")


# Where ONNX Runtime's TensorRT provider keeps the engines it builds at load (the compose stack mounts a volume here,
# so only the first start on a host builds them).
TRT_ENGINE_CACHE = "/tmp/trt-engines"


def encoder_deployments(name: str, precision: str, inputs: tuple[Tensor, ...], tokens: tuple[int, int],
                        gpu_tuning: dict[Target, GpuStart], request_batch: int, cpu_delay_us: int = 1000,
                        response_cache: bool = False) -> dict[str, Deployment]:
    """``tokens``: (typical, max) sequence length, the TensorRT profile's opt and max."""
    filename = f"model.{precision}.onnx"
    # int8 (MatMulNBits) rows are batch-invariant only at an even [rows x width]: ensembles/onnx_encoder.py
    multiple = 2 if precision == "int8" else 1
    deployments = {
        # Two single-threaded instances beat one with two threads on 2 cores (README, "Performance").
        Target.CPU: Deployment(
            backend=Backend.PYTHON, kind=Kind.CPU, count=2, model_filename=filename,
            batching=Batching(max_batch_size=256, max_queue_delay_us=cpu_delay_us, max_queue_size=ENCODER_MAX_QUEUE),
            parameters=EncoderParameters.of(intra_op_threads=1, sort_by_length=True, sequence_multiple=multiple),
            ragged_batching=True,
            response_cache=response_cache,
        ),
    }
    for target, start in gpu_tuning.items():
        if precision == "int8":
            # The int8 graph (8-bit MatMulNBits, int8 compute) runs on ORT's CPU kernels: on GPU hosts on the host's
            # CPUs, in the Python backend with the images' onnxruntime (1.23.2). The NGC 24.10 image's native ORT
            # backend (1.19.2) refuses it ("Only 4b quantization is supported for MatMulNBits", checked against that
            # release: tests/server/test_deployment.py). GPU serving uses the fp32 graph with TensorRT FP16.
            deployments[target] = dataclasses.replace(  # 2 instances: the bounded queue needs them
                deployments[Target.CPU],
                parameters=EncoderParameters.of(intra_op_threads=2, sort_by_length=True, sequence_multiple=multiple),
                batching=Batching(max_batch_size=max(start.max_batch, request_batch), max_queue_delay_us=1000,
                                  max_queue_size=ENCODER_MAX_QUEUE))
        else:  # the validated fp32 graph, run by TensorRT FP16 through ONNX Runtime: loads on any NVIDIA GPU, from
            # a repository built anywhere (plans built on the GPU host are opt-in: export/tensorrt.py)
            opt = (max(start.preferred or (max(1, start.max_batch // 2),)), tokens[0])
            deployments[target] = Deployment(
                backend=Backend.ONNXRUNTIME, kind=Kind.GPU, count=start.encoder_instances, model_filename=filename,
                response_cache=response_cache,
                batching=Batching(max_batch_size=start.max_batch, preferred_batch_sizes=start.preferred,
                                  max_queue_delay_us=start.queue_delay_us, max_queue_size=ENCODER_MAX_QUEUE),
                accelerator=TensorRTAccelerator(cache_path=f"{TRT_ENGINE_CACHE}/{name}", profile=tuple(
                    (t.name, (1, 1), opt, (start.max_batch, tokens[1])) for t in inputs)))
    return deployments


def encoder_spec(family: str, precision: str, description: str, inputs: tuple[Tensor, ...],
                 outputs: tuple[Tensor, ...], tokens: tuple[int, int], gpu_tuning: dict[Target, GpuStart],
                 request_batch: int, **deployment) -> ModelSpec:
    """``<family>_encoder`` (suffixed by precision): the family's ONNX graph on every target
    (``encoder_deployments``)."""
    name = suffixed(f"{family}_encoder", precision)
    return ModelSpec(name=name, description=f"{description}, ONNX {precision}", inputs=inputs, outputs=outputs,
                     deployments=encoder_deployments(name, precision, inputs, tokens, gpu_tuning, request_batch,
                                                     **deployment),
                     python_model="onnx_encoder")


def tensorrt_plan(spec: ModelSpec, target: Target) -> ModelSpec:
    """``spec`` with its deployment on GPU ``target`` served as a native TensorRT plan built for that GPU
    (``model.sm86.plan`` for compute capability 8.6) instead of ONNX Runtime's TensorRT provider: the config that
    ``tritonrepo export tensorrt`` writes beside a plan it built and validated on the GPU host."""
    dep = spec.deployment(target)
    if dep.accelerator is None:
        raise SpecError(f"model '{spec.name}' on target '{target}' has no TensorRT accelerator to replace with a plan")
    plan = dataclasses.replace(dep, backend=Backend.TENSORRT, model_filename=TARGETS[target].plan_filename,
                               accelerator=None)
    return dataclasses.replace(spec, deployments=spec.deployments | {target: plan})
