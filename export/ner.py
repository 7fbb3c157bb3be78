"""The CoNLL-2003 token classifier -> ONNX fp32 + int8, validated against its PyTorch model, installed in the
repository.

The graph takes ``input_ids`` and ``attention_mask`` (no token types, so BERT and DistilBERT export alike) and returns
``logits`` [batch, seq, labels]; softmax and entity decoding run in the ``ner_decoder`` step, which reads the labels
and the training data's label bigram log probabilities (its ``viterbi`` prior) from ``labels.json``.

Gates (DESIGN.md §4), over the CoNLL-2003 test split through the same tokenizer the server uses:
fp32: max |logit - PyTorch logit| <= ``max_abs_diff`` over every real token of ``parity_sentences`` sentences;
int8: entity F1 (seqeval) within ``max_f1_drop`` of the fp32 graph's F1, on the test split as written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tritonrepo.contracts import ENTITIES, QUERY, TRUNCATED
from tritonrepo.datasets import read_conll, short_queries
from tritonrepo.ensembles.parameters import DecoderParameters
from tritonrepo.errors import ValidationError
from tritonrepo.specs import (MAX_TEXT_BYTES, AnySpec, Backend, Batching, Deployment, EnsembleSpec, InputLimits, Kind,
                              ModelSpec, Step, Tensor)
from tritonrepo.targets import Target
from tritonrepo.text_specs import (ATTENTION_MASK, INPUT_IDS, PRECISIONS, GpuStart, encoder_spec, gpu_starts,
                                   suffixed, tokenizer_spec)
from tritonrepo.tuning import UNTUNED, SweepPlan, grid
from tritonrepo.validate import Checks

from .artifacts import install as install_artifacts
from .family import Family, GpuProfile
from .hf import export_trained, logits_to_onnx
from .ner_train import NER_ARTIFACTS, NER_LABELS, NerTraining, evaluate, label_bigrams, train, training_sentences

log = logging.getLogger(__name__)

# ---- the served models: tokenizer -> encoder (fp32, int8) -> decoder behind one ensemble per precision -----------
NER_MAX_TOKENS = 128  # the training length; longer queries are truncated and flagged
NER_REQUEST_BATCH = 64

LOGITS = Tensor(name="logits", dtype="FP32", dims=(-1, len(NER_LABELS)))
OFFSETS = Tensor(name="offsets", dtype="INT32", dims=(-1, 2))
TOKEN_KIND = Tensor(name="token_kind", dtype="INT8", dims=(-1,))
TRUNCATED_TOKENS = Tensor(name="truncated", dtype="BOOL", dims=(1,))

# Short queries (~10 tokens) cost little per row: bigger batches, shorter queue delays than SBERT.
_GPU_TUNING = gpu_starts(
    t4=GpuStart(256, (32, 64), 500, tokenizer_instances=2),
    a10g=GpuStart(256, (32, 64, 128), 500, tokenizer_instances=4),
    a100=GpuStart(512, (64, 128, 256), 300, tokenizer_instances=8),
    h100=GpuStart(512, (64, 128, 256), 200, tokenizer_instances=8))

# Word-level by default: no entity starts or ends inside a word (``simple`` labels sub-words one by one and returns
# fragments such as "N" / "vid" / "ia" for "Nvidia"); ``simple`` stays available per request. ``viterbi`` labels a word
# by its first token, as training labels it (``first``), then picks the most probable valid IOB2 sequence under the
# training data's label bigrams: query-shaped test F1 0.8479 vs 0.8405 for ``first``, CoNLL test 0.8845 vs 0.8748
# (perf/reference/ner-eval-cpu-2core.json).
NER_AGGREGATION = "viterbi"


def _decoder_spec() -> ModelSpec:
    def dep(count: int, max_batch: int) -> Deployment:
        return Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=count, model_filename="labels.json",
                          batching=Batching(max_batch_size=max_batch, max_queue_delay_us=100),
                          parameters=DecoderParameters.of(aggregation_strategy=NER_AGGREGATION), ragged_batching=True,
                          # a client may call the step directly: the query as the tokenizer takes it, no wider logits
                          # than the tokenizer makes
                          limits=InputLimits(max_text_bytes=MAX_TEXT_BYTES, max_tokens=NER_MAX_TOKENS))

    deployments = {Target.CPU: dep(1, 256)} | {t: dep(start.tokenizer_instances, start.max_batch)
                                               for t, start in _GPU_TUNING.items()}
    return ModelSpec(
        name="ner_decoder",
        description="token logits -> entities (IOB2, word-level by default) with offsets in the query, as JSON",
        inputs=(QUERY, LOGITS, OFFSETS, TOKEN_KIND), outputs=(ENTITIES,), deployments=deployments,
        python_model="ner_decoder")


def _ensemble(precision: str) -> EnsembleSpec:
    return EnsembleSpec(
        name=suffixed("ner", precision),
        description=f"UTF-8 queries -> named entities (PER, ORG, LOC, MISC) with character offsets ({precision})",
        inputs=(QUERY,),
        outputs=(ENTITIES, TRUNCATED),
        max_batch_size=NER_REQUEST_BATCH,
        steps=(
            Step(model="ner_tokenizer", input_map={"TEXT": "QUERY"},
                 output_map={"input_ids": "input_ids", "attention_mask": "attention_mask", "offsets": "offsets",
                             "token_kind": "token_kind", "truncated": "TRUNCATED"}),
            Step(model=suffixed("ner_encoder", precision),
                 input_map={"input_ids": "input_ids", "attention_mask": "attention_mask"},
                 output_map={"logits": "logits"}),
            Step(model="ner_decoder",
                 input_map={"QUERY": "QUERY", "logits": "logits", "offsets": "offsets", "token_kind": "token_kind"},
                 output_map={"ENTITIES": "ENTITIES"}),
        ),
    )


SPECS: tuple[AnySpec, ...] = (
    tokenizer_spec("ner_tokenizer", NER_MAX_TOKENS, (INPUT_IDS, ATTENTION_MASK, OFFSETS, TOKEN_KIND, TRUNCATED_TOKENS),
                   _GPU_TUNING, "UTF-8 queries -> WordPiece ids, mask, character offsets, word starts (truncation "
                   "at 128)"),
    _decoder_spec(),
    *(spec for precision in PRECISIONS for spec in (
        # no queue delay on CPU: perf/profiles/cpu/ner_int8.json (d0 368/s vs d1000 259/s at p95 <= 30 ms). The cache
        # sits on the encoder, not the ensemble: the decoder reads the request parameter aggregation_strategy, which
        # the cache key ignores.
        encoder_spec("ner", precision, "token classifier (CoNLL-2003, IOB2) -> per-token logits",
                     (INPUT_IDS, ATTENTION_MASK), (LOGITS,), (32, NER_MAX_TOKENS), _GPU_TUNING, NER_REQUEST_BATCH,
                     cpu_delay_us=0, response_cache=True),
        _ensemble(precision))),
)


EXPORT_VERSION = 2  # bump when the export recipe changes: cached artifacts are rebuilt


@dataclass(frozen=True, kw_only=True)
class NerExport:
    training: NerTraining = field(default_factory=NerTraining)
    out_dir: Path = NER_ARTIFACTS / "export"
    opset: int = 17
    int8_block_size: int = 128
    max_abs_diff: float = 2e-3
    max_f1_drop: float = 0.005  # 0.5 F1 point
    parity_sentences: int = 1000

    def fingerprint(self, trained: dict) -> str:
        recipe = f"{EXPORT_VERSION}|{trained['fingerprint']}|{self.opset}|{self.int8_block_size}|" \
                 f"{self.max_abs_diff}|{self.max_f1_drop}|{self.parity_sentences}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def export_onnx(model_dir: Path, path: Path, opset: int = 17) -> None:
    """Any local Hugging Face token classifier (BERT, DistilBERT, ...) -> ONNX with dynamic batch and sequence."""
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    logits_to_onnx(model, path, (INPUT_IDS.name, ATTENTION_MASK.name), LOGITS.name,
                   {0: "batch", 1: "sequence"}, opset)


def onnx_logits(path: Path, threads: int = 0):
    """logits_fn (see ner_train.predict_words) running an exported graph with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = INPUT_IDS.name, ATTENTION_MASK.name

    def run(ids, mask):
        return session.run([LOGITS.name], dict(zip(names, (ids, mask))))[0]
    return run


def max_logit_diff(reference_fn, candidate_fn, tokenizer, sentences, batch_size: int = 64) -> float:
    """Largest |difference| of the two logits over every real (unpadded) token of the sentences."""
    worst = 0.0
    for start in range(0, len(sentences), batch_size):
        enc = tokenizer([w for w, _ in sentences[start:start + batch_size]], is_split_into_words=True,
                        truncation=True, max_length=NER_MAX_TOKENS, padding=True, return_tensors="np")
        ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
        diff = np.abs(reference_fn(ids, mask) - candidate_fn(ids, mask))[mask.astype(bool)]
        worst = max(worst, float(diff.max()))
    return worst


def export(cfg: NerExport = NerExport(), *, force: bool = False) -> dict:
    """Train if needed (cached), export, validate, keep the artifacts in cfg.out_dir. Returns the report."""
    trained = train(cfg.training)
    return export_trained(cfg, trained, what="NER", export_onnx=export_onnx, force=force,
                          validate=lambda model_dir, fp32, int8: _validate(cfg, trained, model_dir, fp32, int8))


def _validate(cfg: NerExport, trained: dict, model_dir: Path, fp32: Path, int8: Path):
    """Logit parity of the fp32 graph with PyTorch, entity F1 of both graphs, int8 within ``max_f1_drop``."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from .ner_train import torch_logits

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForTokenClassification.from_pretrained(str(model_dir)).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if tuple(labels) != NER_LABELS:
        raise ValidationError("ner export", [f"model labels {labels} != the served labels {NER_LABELS}"])
    sentences, _ = training_sentences(cfg.training, tokenizer)
    (fp32.parent / "labels.json").write_text(json.dumps({"labels": labels, **label_bigrams(sentences)}))

    test = read_conll("test")
    fp32_fn, int8_fn = onnx_logits(fp32), onnx_logits(int8)
    fp32_checks, int8_checks = Checks("ner model.fp32.onnx"), Checks("ner model.int8.onnx")
    log.info("validating logits against PyTorch on %d CoNLL-2003 test sentences", cfg.parity_sentences)
    diff = max_logit_diff(torch_logits(model), fp32_fn, tokenizer, test[: cfg.parity_sentences])
    fp32_checks.at_most("max_abs_diff", diff, cfg.max_abs_diff)
    fp32_checks.metrics["sentences"] = min(len(test), cfg.parity_sentences)
    log.info("entity F1 on the %d test sentences, fp32 and int8 graphs", len(test))
    fp32_eval = evaluate(fp32_fn, tokenizer, "test", NER_MAX_TOKENS)
    int8_eval = evaluate(int8_fn, tokenizer, "test", NER_MAX_TOKENS)
    fp32_checks.metrics |= {"test_f1": fp32_eval["cased"]["f1"], "test_f1_lowercased": fp32_eval["lowercased"]["f1"],
                            "test_f1_queries": fp32_eval["queries"]["f1"]}
    int8_checks.at_least("test_f1", int8_eval["cased"]["f1"], fp32_eval["cased"]["f1"] - cfg.max_f1_drop)
    int8_checks.metrics |= {"test_f1_lowercased": int8_eval["lowercased"]["f1"],
                            "test_f1_queries": int8_eval["queries"]["f1"]}
    int8_checks.metrics["f1_drop_vs_fp32"] = round(fp32_eval["cased"]["f1"] - int8_eval["cased"]["f1"], 4)
    return fp32_checks, int8_checks, {
        "model_type": model.config.model_type,
        "training": {k: trained[k] for k in ("steps", "train_seconds", "valid", "test")}}


def install(repository: Path, artifacts: Path = NER_ARTIFACTS / "export") -> list[Path]:
    """Copy validated artifacts into the repository's version folders."""
    return install_artifacts(repository, artifacts, (
        ("ner_encoder", "model.fp32.onnx"), ("ner_encoder_int8", "model.int8.onnx"),
        ("ner_tokenizer", "tokenizer.json"), ("ner_decoder", "labels.json")), "NER")


FAMILY = Family(
    name="ner", order=2, specs=SPECS, recipe=NerExport, exporter=export, installer=install, serves=("ner", "ner_int8"),
    plans={f"ner{suffix}": SweepPlan(swept=f"ner_encoder{suffix}", entry=f"ner{suffix}", input_tensor="QUERY",
                                     inputs="short-queries",
                                     variants=(UNTUNED, *grid(instances=(1, 2), delays=(0, 200, 1000), threads=(1, 2))),
                                     concurrencies=(1, 2, 4, 8, 16, 32), p95_bound_ms=30.0)
           for suffix in ("", "_int8")},
    inputs={"short-queries": lambda plan, limit, repository: [{plan.input_tensor: q} for q in short_queries(limit)]},
    evaluation="ner", gpu_profile=GpuProfile(plan="ner", checkpoint=NER_ARTIFACTS / "model", head="logits"))
