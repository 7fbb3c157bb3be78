"""The cross-encoder reranker -> ONNX fp32 + int8, validated against its PyTorch model, installed in the repository.

The graph takes ``input_ids``, ``attention_mask``, ``token_type_ids`` ([CLS] query [SEP] passage [SEP], built by
``ensembles/pair_encoding.py``) and returns ``score`` [batch, 1], the relevance logit.

Gates (DESIGN.md §4), on the CoNLL-2003 valid headlines with their BM25 top ``validation_depth`` articles, encoded as
the server encodes them: fp32: max |score - PyTorch score| <= ``max_abs_diff`` over the first ``parity_pairs`` pairs;
int8: nDCG@10 of the reranked candidates within ``max_ndcg_drop`` of the fp32 graph's, and the same top document for
at least ``min_top1_agreement`` of the queries.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tritonrepo.contracts import PASSAGE, QUERY, SCORE
from tritonrepo.datasets import headline_retrieval
from tritonrepo.specs import AnySpec, EnsembleSpec, Step, Tensor
from tritonrepo.text_specs import (ATTENTION_MASK, INPUT_IDS, PRECISIONS, GpuStart, encoder_spec, gpu_starts,
                                   suffixed, tokenizer_spec)
from tritonrepo.tuning import UNTUNED, SweepPlan, grid
from tritonrepo.validate import Checks

from .artifacts import install as install_artifacts
from .family import Family, GpuProfile
from .hf import export_trained, logits_to_onnx
from .rerank_train import (RERANK_ARTIFACTS, RERANK_MAX_QUERY_TOKENS, RERANK_MAX_TOKENS, RerankTraining, candidates,
                           rerank_eval, torch_scores, train)

log = logging.getLogger(__name__)

# ---- the served models: pair tokenizer -> cross-encoder (fp32, int8) behind one ensemble per precision -----------
TOKEN_TYPE_IDS = Tensor(name="token_type_ids", dtype="INT64", dims=(-1,))
RERANK_SCORE = Tensor(name="score", dtype="FP32", dims=(1,))  # the relevance logit
RERANK_REQUEST_BATCH = 64  # (query, passage) pairs per request; clients split larger calls
# Pairs are long (~256 tokens): smaller batches and a longer queue delay than the query models.
_GPU_TUNING = gpu_starts(
    t4=GpuStart(64, (16, 32), 2000, tokenizer_instances=4),
    a10g=GpuStart(64, (16, 32, 64), 1000, tokenizer_instances=4),
    a100=GpuStart(128, (32, 64, 128), 1000, tokenizer_instances=8),
    h100=GpuStart(128, (32, 64, 128), 500, tokenizer_instances=8))
_TOKENS = (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)


def _ensemble(precision: str) -> EnsembleSpec:
    tokens = {t.name: t.name for t in _TOKENS}
    return EnsembleSpec(
        name=suffixed("rerank", precision),
        description=f"(query, passage) UTF-8 pairs -> relevance scores, higher is more relevant ({precision})",
        inputs=(QUERY, PASSAGE), outputs=(SCORE,), max_batch_size=RERANK_REQUEST_BATCH, response_cache=True,
        steps=(
            Step(model="rerank_tokenizer", input_map={"QUERY": "QUERY", "PASSAGE": "PASSAGE"}, output_map=tokens),
            Step(model=suffixed("rerank_encoder", precision), input_map=tokens, output_map={"score": "SCORE"}),
        ),
    )


SPECS: tuple[AnySpec, ...] = (
    tokenizer_spec("rerank_tokenizer", RERANK_MAX_TOKENS, _TOKENS, _GPU_TUNING, "(query, passage) UTF-8 pairs -> "
                   "[CLS] query [SEP] passage [SEP] ids, mask, token types (query <= 64 tokens)",
                   inputs=(QUERY, PASSAGE), max_query_tokens=RERANK_MAX_QUERY_TOKENS),
    *(spec for precision in PRECISIONS for spec in (
        encoder_spec("rerank", precision, "cross-encoder (MiniLM, Reuters headline -> article) -> relevance logit",
                     _TOKENS, (RERANK_SCORE,), (RERANK_MAX_TOKENS, RERANK_MAX_TOKENS), _GPU_TUNING,
                     RERANK_REQUEST_BATCH),
        _ensemble(precision))),
)


EXPORT_VERSION = 1  # bump when the export recipe changes: cached artifacts are rebuilt
INPUTS = tuple(t.name for t in _TOKENS)


@dataclass(frozen=True, kw_only=True)
class RerankExport:
    training: RerankTraining = field(default_factory=RerankTraining)
    out_dir: Path = RERANK_ARTIFACTS / "export"
    opset: int = 17
    int8_block_size: int = 128
    validation_depth: int = 10
    parity_pairs: int = 400
    max_abs_diff: float = 2e-3
    max_ndcg_drop: float = 0.01
    min_top1_agreement: float = 0.95

    def fingerprint(self, trained: dict) -> str:
        recipe = f"{EXPORT_VERSION}|{trained['fingerprint']}|{self.opset}|{self.int8_block_size}|" \
                 f"{self.validation_depth}|{self.parity_pairs}|{self.max_abs_diff}|{self.max_ndcg_drop}|" \
                 f"{self.min_top1_agreement}"
        return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def export_onnx(model_dir: Path, path: Path, opset: int = 17) -> None:
    """A local Hugging Face one-logit sequence classifier (BERT family, token types) -> ONNX, dynamic batch/sequence."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    logits_to_onnx(model, path, INPUTS, RERANK_SCORE.name, {0: "batch"}, opset)


def onnx_scores(path: Path, threads: int = 0):
    """ScoreFn (see rerank_train) running an exported graph with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(ids, mask, types):
        return session.run([RERANK_SCORE.name], dict(zip(INPUTS, (ids, mask, types))))[0][:, 0]
    return run


def _top1(scores: np.ndarray, pool: list[list[int]]) -> np.ndarray:
    tops, start = [], 0
    for docs in pool:
        tops.append(int(np.argmax(scores[start:start + len(docs)])))
        start += len(docs)
    return np.array(tops)


def export(cfg: RerankExport = RerankExport(), *, force: bool = False) -> dict:
    """Train if needed (cached), export, validate, keep the artifacts in cfg.out_dir. Returns the report."""
    trained = train(cfg.training)
    return export_trained(cfg, trained, what="rerank", export_onnx=export_onnx, force=force,
                          validate=lambda model_dir, fp32, int8: _validate(cfg, trained, model_dir, fp32, int8))


def _validate(cfg: RerankExport, trained: dict, model_dir: Path, fp32: Path, int8: Path):
    """Score parity of the fp32 graph with PyTorch; valid nDCG@10 and top-1 agreement of int8 against fp32."""
    from transformers import AutoModelForSequenceClassification

    valid = headline_retrieval("valid", ("valid",))
    pool = candidates(valid, cfg.validation_depth)
    encoding = {"max_length": cfg.training.max_length, "max_query_tokens": cfg.training.max_query_tokens}
    log.info("validating on %d valid headlines x BM25 top %d", len(pool), cfg.validation_depth)
    got_fp32 = rerank_eval(onnx_scores(fp32), model_dir, valid, pool, **encoding)
    got_int8 = rerank_eval(onnx_scores(int8), model_dir, valid, pool, **encoding)
    parity_pool, left = [], cfg.parity_pairs
    for docs in pool:
        if left <= 0:
            break
        parity_pool.append(docs[:left])
        left -= len(parity_pool[-1])
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    reference = rerank_eval(torch_scores(model), model_dir, valid, parity_pool, **encoding)["scores"]

    fp32_checks, int8_checks = Checks("rerank model.fp32.onnx"), Checks("rerank model.int8.onnx")
    fp32_checks.at_most("max_abs_diff", np.abs(reference - got_fp32["scores"][: len(reference)]).max(),
                        cfg.max_abs_diff)
    fp32_checks.metrics |= {"pairs": len(reference), "valid_ndcg@10": got_fp32["ndcg@10_reranked"],
                            "valid_ndcg@10_bm25": got_fp32["ndcg@10_retrieved"]}
    int8_checks.at_least("valid_ndcg@10", got_int8["ndcg@10_reranked"], got_fp32["ndcg@10_reranked"] - cfg.max_ndcg_drop)
    agreement = float(np.mean(_top1(got_int8["scores"], pool) == _top1(got_fp32["scores"], pool)))
    int8_checks.at_least("top1_agreement", agreement, cfg.min_top1_agreement)
    int8_checks.metrics["max_abs_diff_vs_fp32"] = float(np.abs(got_int8["scores"] - got_fp32["scores"]).max())
    return fp32_checks, int8_checks, {
        "training": {k: trained[k] for k in ("steps", "train_seconds", "valid")},
        "validation": f"CoNLL-2003 valid headlines, BM25 top {cfg.validation_depth} ({len(got_fp32['scores'])} pairs)"}


def install(repository: Path, artifacts: Path = RERANK_ARTIFACTS / "export") -> list[Path]:
    """Copy validated artifacts into the repository's version folders."""
    return install_artifacts(repository, artifacts, (
        ("rerank_encoder", "model.fp32.onnx"), ("rerank_encoder_int8", "model.int8.onnx"),
        ("rerank_tokenizer", "tokenizer.json")), "rerank")


def _query_passage_pairs(plan: SweepPlan, limit: int, repository: Path) -> list[dict]:
    """CoNLL valid headlines with their BM25 top 5 articles (unseen in training), one pair per request."""
    from tritonrepo.services.search import BM25Retriever

    items = headline_retrieval("valid", ("valid",))
    top5 = BM25Retriever(items.documents).search_many(items.queries, 5)
    return [{"QUERY": items.queries[q], "PASSAGE": items.documents[h.doc]}
            for q, hits in enumerate(top5) for h in hits][:limit]


FAMILY = Family(
    name="rerank", order=3, specs=SPECS, recipe=RerankExport, exporter=export, installer=install,
    serves=("rerank", "rerank_int8"),
    # one real (headline, article) pair per request, as hybrid search sends its candidates (64 pairs at most per
    # request; the dynamic batcher packs the pairs of concurrent searches): throughput is pairs/s
    plans={f"rerank{suffix}": SweepPlan(swept=f"rerank_encoder{suffix}", entry=f"rerank{suffix}",
                                        input_tensor=("QUERY", "PASSAGE"), inputs="query-passage-pairs",
                                        variants=(UNTUNED, *grid(instances=(1, 2), delays=(0, 2000), threads=(1, 2))),
                                        concurrencies=(1, 2, 4, 8, 16), p95_bound_ms=250.0)
           for suffix in ("", "_int8")},
    inputs={"query-passage-pairs": _query_passage_pairs},
    evaluation="search", gpu_profile=GpuProfile(plan="rerank", checkpoint=RERANK_ARTIFACTS / "model", head="logits"))
