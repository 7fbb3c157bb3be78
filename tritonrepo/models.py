"""The models this repository serves, as specs. Adding a model = adding its specs here (and its export step).

Per-target tuning: the CPU values were measured on the development machine (see perf/ and the README); GPU values
are starting points sized from each card's memory and throughput class until a profile from that card replaces them.
"""

from __future__ import annotations

from .specs import AnySpec, Backend, Batching, Deployment, EnsembleSpec, Kind, ModelSpec, Step, Tensor

# ---- SBERT all-MiniLM-L6-v2 -----------------------------------------------------------------------------------
SBERT_DIM = 384
SBERT_MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
SBERT_REQUEST_BATCH = 64  # the ensemble's max_batch_size: clients split larger inputs into requests of this size

TEXT = Tensor(name="TEXT", dtype="BYTES", dims=(1,))
EMBEDDING = Tensor(name="EMBEDDING", dtype="FP32", dims=(SBERT_DIM,))
INPUT_IDS = Tensor(name="input_ids", dtype="INT64", dims=(-1,))
ATTENTION_MASK = Tensor(name="attention_mask", dtype="INT64", dims=(-1,))
SENTENCE_EMBEDDING = Tensor(name="sentence_embedding", dtype="FP32", dims=(SBERT_DIM,))

# GPU starting points: (encoder instances, max batch, preferred batch sizes, queue delay us, tokenizer instances)
_GPU_TUNING = {
    "t4": (1, 128, (32, 64), 2000, 4),
    "a10g": (2, 128, (32, 64, 128), 1000, 4),
    "l4": (2, 128, (32, 64, 128), 1000, 4),
    "a100": (2, 256, (64, 128, 256), 1000, 8),
    "h100": (2, 256, (64, 128, 256), 500, 8),
}


def _tokenizer_spec() -> ModelSpec:
    def dep(count: int, max_batch: int, delay_us: int) -> Deployment:
        return Deployment(
            backend=Backend.PYTHON, kind=Kind.CPU, count=count,
            batching=Batching(max_batch_size=max_batch, max_queue_delay_us=delay_us),
            parameters=(("max_length", str(SBERT_MAX_TOKENS)), ("pad_to_multiple_of", "8")),
        )

    deployments = {"cpu": dep(1, 256, 200)}
    for target, (_, max_batch, _, delay, tok_count) in _GPU_TUNING.items():
        deployments[target] = dep(tok_count, max_batch, min(delay, 500))
    return ModelSpec(
        name="sbert_tokenizer",
        description="UTF-8 text -> WordPiece ids and attention mask (HF tokenizers, truncation at 256 tokens)",
        inputs=(TEXT,),
        outputs=(INPUT_IDS, ATTENTION_MASK),
        deployments=deployments,
        python_model="text_tokenizer",
    )


def _encoder_spec(precision: str) -> ModelSpec:
    """MiniLM encoder with mean pooling and L2 normalisation folded into the ONNX graph."""
    filename = f"model.{precision}.onnx"
    deployments = {
        # Two single-threaded instances beat one with two threads on 2 cores (README, "Performance").
        "cpu": Deployment(
            backend=Backend.PYTHON, kind=Kind.CPU, count=2, model_filename=filename,
            batching=Batching(max_batch_size=256, max_queue_delay_us=1000),
            parameters=(("intra_op_threads", "1"), ("sort_by_length", "true")), ragged_batching=True,
        ),
    }
    for target, (count, max_batch, preferred, delay, _) in _GPU_TUNING.items():
        if precision == "int8":
            # The int8 graph (MatMulNBits, int8 compute) targets ORT's CPU kernels: on GPU hosts the int8 variant runs
            # on the host's CPUs through the native ORT backend. GPU serving uses the fp32 graph with TensorRT FP16.
            deployments[target] = Deployment(
                backend=Backend.ONNXRUNTIME, kind=Kind.CPU, count=1, model_filename=filename,
                batching=Batching(max_batch_size=max(max_batch, SBERT_REQUEST_BATCH), max_queue_delay_us=1000))
        else:
            deployments[target] = Deployment(
                backend=Backend.ONNXRUNTIME, kind=Kind.GPU, count=count, model_filename=filename,
                trt_accelerator="FP16",
                batching=Batching(max_batch_size=max_batch, preferred_batch_sizes=preferred,
                                  max_queue_delay_us=delay))
    suffix = "" if precision == "fp32" else f"_{precision}"
    return ModelSpec(
        name=f"sbert_encoder{suffix}",
        description=f"all-MiniLM-L6-v2 encoder + mean pooling + L2 norm, ONNX {precision}",
        inputs=(INPUT_IDS, ATTENTION_MASK),
        outputs=(SENTENCE_EMBEDDING,),
        deployments=deployments,
        python_model="onnx_encoder",
    )


def _sbert_ensemble(precision: str) -> EnsembleSpec:
    suffix = "" if precision == "fp32" else f"_{precision}"
    return EnsembleSpec(
        name=f"sbert{suffix}",
        description=f"UTF-8 strings -> L2-normalised all-MiniLM-L6-v2 embeddings ({precision})",
        inputs=(TEXT,),
        outputs=(EMBEDDING,),
        max_batch_size=SBERT_REQUEST_BATCH,
        steps=(
            Step(model="sbert_tokenizer", input_map={"TEXT": "TEXT"},
                 output_map={"input_ids": "input_ids", "attention_mask": "attention_mask"}),
            Step(model=f"sbert_encoder{suffix}",
                 input_map={"input_ids": "input_ids", "attention_mask": "attention_mask"},
                 output_map={"sentence_embedding": "EMBEDDING"}),
        ),
    )


SBERT_PRECISIONS = ("fp32", "int8")


def all_specs() -> list[AnySpec]:
    specs: list[AnySpec] = [_tokenizer_spec()]
    for precision in SBERT_PRECISIONS:
        specs += [_encoder_spec(precision), _sbert_ensemble(precision)]
    return specs


def spec(name: str) -> AnySpec:
    for s in all_specs():
        if s.name == name:
            return s
    raise KeyError(f"no model named {name!r}; known: {[s.name for s in all_specs()]}")
