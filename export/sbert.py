"""all-MiniLM-L6-v2 (sentence-transformers) -> ONNX fp32 + dynamic int8, validated, installed into the repository.

The ONNX graph is the BERT encoder with mean pooling and L2 normalisation folded in (inputs ``input_ids``,
``attention_mask``; output ``sentence_embedding`` [batch, 384]), so the encoder step returns final embeddings and
the [batch, seq, 384] hidden states never cross a process boundary.

Validation (DESIGN.md §4) against ``SentenceTransformer.encode`` on real CoNLL-2003 sentences, through the same
tokenizer.json the served tokenizer uses:
fp32: cosine >= 0.9999 for every sentence; int8: mean cosine >= 0.99, min >= 0.97, recall@10 of nearest
neighbours >= 0.95 against fp32.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonrepo.contracts import EMBEDDING, SBERT_DIM, TEXT
from tritonrepo.datasets import conll_sentences
from tritonrepo.errors import ValidationError
from tritonrepo.paths import ASSETS, SBERT_WEIGHTS, require
from tritonrepo.specs import AnySpec, EnsembleSpec, Step, Tensor
from tritonrepo.targets import Target
from tritonrepo.text_specs import (ATTENTION_MASK, INPUT_IDS, PRECISIONS, GpuStart, encoder_spec, gpu_starts,
                                   suffixed, tokenizer_spec)
from tritonrepo.tuning import UNTUNED, SweepPlan, Variant, grid
from tritonrepo.validate import embedding_checks, save_reference

from .artifacts import publish_validated, staging_dir, up_to_date
from .artifacts import install as install_artifacts
from .family import Family, GpuProfile
from .quantize import int8_blocks

log = logging.getLogger(__name__)

ARTIFACTS = ASSETS / "artifacts" / "sbert"
EXPORT_VERSION = 4  # bump when the export recipe changes: cached artifacts are rebuilt


# ---- the served models: tokenizer -> encoder (fp32, int8) behind one ensemble per precision ----------------------
SBERT_MAX_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
SBERT_REQUEST_BATCH = 64  # the ensemble's max_batch_size: clients split larger inputs into requests of this size
SENTENCE_EMBEDDING = Tensor(name="sentence_embedding", dtype="FP32", dims=(SBERT_DIM,))

_GPU_TUNING = gpu_starts(
    t4=GpuStart(128, (32, 64), 2000, tokenizer_instances=4),
    a10g=GpuStart(128, (32, 64, 128), 1000, tokenizer_instances=4),
    a100=GpuStart(256, (64, 128, 256), 1000, tokenizer_instances=8),
    h100=GpuStart(256, (64, 128, 256), 500, tokenizer_instances=8))


def _ensemble(precision: str) -> EnsembleSpec:
    return EnsembleSpec(
        name=suffixed("sbert", precision),
        description=f"UTF-8 strings -> L2-normalised all-MiniLM-L6-v2 embeddings ({precision})",
        inputs=(TEXT,),
        outputs=(EMBEDDING,),
        max_batch_size=SBERT_REQUEST_BATCH,
        response_cache=True,  # same texts, same vectors: re-sent requests (client restarts, duplicates) cost nothing
        steps=(
            Step(model="sbert_tokenizer", input_map={"TEXT": "TEXT"},
                 output_map={"input_ids": "input_ids", "attention_mask": "attention_mask"}),
            Step(model=suffixed("sbert_encoder", precision),
                 input_map={"input_ids": "input_ids", "attention_mask": "attention_mask"},
                 output_map={"sentence_embedding": "EMBEDDING"}),
        ),
    )


_TOKENIZER = tokenizer_spec("sbert_tokenizer", SBERT_MAX_TOKENS, (INPUT_IDS, ATTENTION_MASK), _GPU_TUNING,
                            "UTF-8 text -> WordPiece ids and attention mask (HF tokenizers, truncation at 256 tokens)")
SPECS: tuple[AnySpec, ...] = (
    _TOKENIZER,
    *(spec for precision in PRECISIONS for spec in (
        # MiniLM with mean pooling and L2 normalisation folded into the ONNX graph
        encoder_spec("sbert", precision, "all-MiniLM-L6-v2 encoder + mean pooling + L2 norm",
                     (INPUT_IDS, ATTENTION_MASK), (SENTENCE_EMBEDDING,), (64, SBERT_MAX_TOKENS), _GPU_TUNING,
                     SBERT_REQUEST_BATCH),
        _ensemble(precision))),
)


@dataclass(frozen=True, kw_only=True)
class SbertExport:
    weights: Path = SBERT_WEIGHTS
    out_dir: Path = ARTIFACTS
    validation_sentences: int = 3000
    opset: int = 17
    # int8 weights in blocks of this many input rows, activations quantized to int8 per block at run time
    # (MatMulNBits, accuracy_level 4). Classic per-tensor dynamic quantization (QuantizeLinear on activations) fails
    # the neighbour-recall gate here (0.91); blocks of 128 pass it (0.966) at ~1.45x fp32 speed (README, "int8").
    int8_block_size: int = 128

    def sentences(self) -> list[str]:
        return conll_sentences("valid")[: self.validation_sentences]

    def fingerprint(self) -> str:
        """Changes with the recipe, the weights or the validation data: cached artifacts are then rebuilt."""
        h = hashlib.sha256(f"{EXPORT_VERSION}|{self.opset}|{self.int8_block_size}".encode())
        with open(require(self.weights / "model.safetensors", "all-MiniLM-L6-v2 weights"), "rb") as f:
            h.update(f.read(1 << 20))
        h.update("\n".join(self.sentences()).encode())
        return h.hexdigest()[:16]


class _PooledEncoder:  # built lazily: torch is imported only by export()
    @staticmethod
    def build(weights: Path):
        import torch
        from transformers import AutoModel

        # eager attention exports a plain MatMul/Softmax graph that ONNX Runtime fuses at load on any version
        bert = AutoModel.from_pretrained(str(weights), attn_implementation="eager").eval()

        class PooledEncoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask):
                hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        return PooledEncoder().eval()


def _export_onnx(cfg: SbertExport, path: Path) -> None:
    import torch

    model = _PooledEncoder.build(cfg.weights)
    ids = INPUT_IDS.name, ATTENTION_MASK.name
    out = SENTENCE_EMBEDDING.name
    sample = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    with torch.no_grad():
        torch.onnx.export(
            model, sample, str(path), input_names=list(ids), output_names=[out], opset_version=cfg.opset,
            dynamic_axes={ids[0]: {0: "batch", 1: "sequence"}, ids[1]: {0: "batch", 1: "sequence"}, out: {0: "batch"}},
            dynamo=False,
        )


def ort_embed(onnx_path: Path, tokenizer_json: Path, texts: list[str], batch: int = 32, threads: int = 0) -> np.ndarray:
    """Embed texts with an exported graph the way the served pipeline does (same tokenizer file, truncation)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(SBERT_MAX_TOKENS)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    encodings = tok.encode_batch(texts)
    lengths = np.array([len(e.ids) for e in encodings])
    order = np.argsort(lengths, kind="stable")
    out = np.empty((len(texts), SBERT_DIM), dtype=np.float32)
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        ids = np.zeros((len(rows), lengths[rows].max()), dtype=np.int64)
        for j, r in enumerate(rows):
            ids[j, : lengths[r]] = encodings[r].ids
        feeds = {INPUT_IDS.name: ids, ATTENTION_MASK.name: (ids != 0).astype(np.int64)}
        out[rows] = session.run([SENTENCE_EMBEDDING.name], feeds)[0]
    return out


def export(cfg: SbertExport = SbertExport(), *, force: bool = False) -> dict:
    """Export, validate, and keep the artifacts in cfg.out_dir. Cached by fingerprint. Returns the report."""
    fingerprint = cfg.fingerprint()
    if report := up_to_date(cfg.out_dir, fingerprint, force, "SBERT"):
        return report

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    work = staging_dir(cfg.out_dir)
    fp32, int8 = work / "model.fp32.onnx", work / "model.int8.onnx"
    tokenizer_json = work / "tokenizer.json"
    shutil.copy(require(cfg.weights / "tokenizer.json", "SBERT tokenizer.json"), tokenizer_json)
    log.info("exporting ONNX fp32")
    _export_onnx(cfg, fp32)
    log.info("quantizing to int8 (8-bit weight blocks of %d, int8 compute)", cfg.int8_block_size)
    int8_blocks(fp32, int8, cfg.int8_block_size)

    sentences = cfg.sentences()
    log.info("validating on %d CoNLL-2003 sentences against sentence-transformers", len(sentences))
    st = SentenceTransformer(str(cfg.weights), device="cpu")
    reference = st.encode(sentences, batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                          show_progress_bar=False)
    got_fp32 = ort_embed(fp32, tokenizer_json, sentences)
    got_int8 = ort_embed(int8, tokenizer_json, sentences)
    fp32_checks = embedding_checks("sbert model.fp32.onnx", reference, got_fp32, min_cos=0.9999)
    int8_checks = embedding_checks("sbert model.int8.onnx", reference, got_int8, min_cos=0.97, mean_cos=0.99,
                                   recall_k=10, min_recall=0.95, recall_reference=got_fp32)
    failures = [f"{c.artifact}: {f}" for c in (fp32_checks, int8_checks) for f in c.failures]
    if failures:  # one error listing every failed bound of both artifacts; nothing reaches the repository
        raise ValidationError("sbert export", failures)

    # what `tritonrepo check` replays against the served ensembles: 8 requests of 2 sentences, and the embeddings
    # sentence-transformers gave them, within each artifact's validation bound
    requests = [{"TEXT": np.array([[s.encode()] for s in sentences[i:i + 2]], dtype=object)} for i in range(0, 16, 2)]
    answers = [{"EMBEDDING": reference[i:i + 2]} for i in range(0, 16, 2)]
    for precision, bound in (("fp32", 0.9999), ("int8", 0.97)):
        save_reference(work / f"reference.{precision}.npz", requests, answers, {"cosine_min": bound})
    report = {
        "fingerprint": fingerprint,
        "reference": f"sentence-transformers encode, {cfg.weights.name}",
        "data": f"CoNLL-2003 valid, first {len(sentences)} unique sentences",
        "fp32": fp32_checks.metrics,
        "int8": int8_checks.metrics | {"method": f"MatMulNBits bits=8 block={cfg.int8_block_size} accuracy_level=4"},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return publish_validated(work, cfg.out_dir, report, "SBERT")


def install(repository: Path, artifacts: Path = ARTIFACTS) -> list[Path]:
    """Copy validated artifacts into the repository's version folders, and each ensemble's reference requests
    (sentence-transformers' embeddings) to <ensemble>/1/reference.npz for `tritonrepo check`."""
    placed = install_artifacts(repository, artifacts, (("sbert_encoder", "model.fp32.onnx"),
                               ("sbert_encoder_int8", "model.int8.onnx"), ("sbert_tokenizer", "tokenizer.json")), "SBERT")
    for precision in PRECISIONS:
        ensemble = "sbert" if precision == "fp32" else f"sbert_{precision}"
        dest = repository / ensemble / "1" / "reference.npz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifacts / f"reference.{precision}.npz", dest)
        placed.append(dest)
    return placed


# Preferred batch sizes: the batcher waits up to the queue delay to form one of them (2 single-threaded instances,
# the best CPU shape of the encoders so far)
_PREFERRED = tuple(Variant(instances=2, max_queue_delay_us=d, preferred_batch_sizes=p,
                           parameters=(("intra_op_threads", "1"),)) for d, p in ((1000, (8, 16)), (2000, (16, 32))))

def _test_sentences(plan: SweepPlan, limit: int, repository: Path) -> list[dict]:
    return [{plan.input_tensor: s} for s in conll_sentences("test")[:limit]]


def _test_token_ids(plan: SweepPlan, limit: int, repository: Path) -> list[dict]:
    """What sbert_tokenizer hands the encoder for each CoNLL test sentence sent alone: its ids, padded to the
    tokenizer's multiple."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(repository / "sbert_tokenizer" / "1" / "tokenizer.json"))
    tokenizer.enable_truncation(SBERT_MAX_TOKENS)
    tokenizer.no_padding()
    pad = int(dict(_TOKENIZER.deployment(Target.CPU).parameters)["pad_to_multiple_of"])
    rows = []
    for e in tokenizer.encode_batch(conll_sentences("test")[:limit]):
        fill = [0] * (-len(e.ids) % pad)
        rows.append({INPUT_IDS.name: e.ids + fill, ATTENTION_MASK.name: e.attention_mask + fill})
    return rows


FAMILY = Family(
    name="sbert", order=1, specs=SPECS, recipe=SbertExport, exporter=export, installer=install,
    serves=("sbert", "sbert_int8"),
    plans={
        f"sbert{suffix}": SweepPlan(swept=f"sbert_encoder{suffix}", entry=f"sbert{suffix}", input_tensor="TEXT",
                                    inputs="conll-test-sentences",
                                    variants=(UNTUNED, *grid(instances=(1, 2), delays=(0, 1000), threads=(1, 2)),
                                              *_PREFERRED))
        for suffix in ("", "_int8")
    } | {
        # the encoder alone on the token ids its tokenizer makes: one model, so Model Analyzer's default search can
        # profile it too (perf/model_analyzer.py compares the two on it)
        "sbert_encoder_int8": SweepPlan(swept="sbert_encoder_int8", entry="sbert_encoder_int8",
                                        input_tensor=("input_ids", "attention_mask"), inputs="conll-test-token-ids",
                                        variants=(UNTUNED, *grid(instances=(1, 2), delays=(0, 1000), threads=(1, 2))),
                                        rate_probes=0),  # closed loop only, as Model Analyzer measures
    },
    inputs={"conll-test-sentences": _test_sentences, "conll-test-token-ids": _test_token_ids},
    evaluation="search", gpu_profile=GpuProfile(plan="sbert", checkpoint=SBERT_WEIGHTS, head="mean_pool_l2"))
