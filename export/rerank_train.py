"""Train a cross-encoder reranker: headline -> article known-item retrieval on Reuters (CoNLL-2003 train split), with
BM25-mined hard negatives. Resumable, cached by fingerprint.

No cross-encoder exists offline (DESIGN.md §3), so we fine-tune one: any local BERT-family checkpoint (default: the
packaged all-MiniLM-L6-v2 encoder) with a one-logit sequence-classification head reads ``[CLS] headline [SEP] body
[SEP]``. Each step takes ``queries_per_step`` headlines; each gets a group of its article's body and ``negatives``
bodies drawn from the BM25 top ``mine_depth`` of other articles (the near misses lexical search makes), and the loss
is the softmax cross-entropy of the group's logits (listwise, the positive first). The served score is that logit:
higher is more relevant, comparable across passages of one query, not a probability.

Evaluation: the valid split's headlines over the valid articles, BM25 top ``rerank_depth`` reranked, nDCG@10 against
BM25 alone. A checkpoint (model, optimizer, scheduler, RNG, step) every ``checkpoint_every`` steps; a killed run
resumes from it.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tritonrepo.datasets import KnownItems, headline_retrieval
from tritonrepo.paths import ASSETS, CONLL_DIR, SBERT_WEIGHTS, require
from tritonrepo.scoring import ndcg

from .artifacts import cached, publish, staging_dir
from .hf import Fit, recipe_fingerprint, start_training

log = logging.getLogger(__name__)

RERANK_ARTIFACTS = ASSETS / "artifacts" / "rerank"
RERANK_MAX_TOKENS = 256  # [CLS] query [SEP] passage [SEP]
RERANK_MAX_QUERY_TOKENS = 64  # longer queries are cut; the passage gets the rest
TRAIN_VERSION = 1  # bump when the recipe changes: cached models are retrained

ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # ids, mask, types -> scores [rows]


@dataclass(frozen=True, kw_only=True)
class RerankTraining:
    backbone: Path = SBERT_WEIGHTS
    out_dir: Path = RERANK_ARTIFACTS / "model"
    epochs: float = 2
    max_steps: int = 0  # > 0: stop after this many steps (brief models for tests)
    queries_per_step: int = 8
    negatives: int = 3  # per query and step, from the BM25 top mine_depth
    mine_depth: int = 30
    lr: float = 7e-5
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_length: int = RERANK_MAX_TOKENS
    max_query_tokens: int = RERANK_MAX_QUERY_TOKENS
    rerank_depth: int = 20  # evaluation: BM25 candidates reranked per valid query
    seed: int = 13
    checkpoint_every: int = 50
    threads: int = field(default=0, compare=False)

    def fingerprint(self) -> str:
        return recipe_fingerprint(TRAIN_VERSION, self, CONLL_DIR / "train.txt")


def pair_tokenizer(model_dir: Path):
    """The model's tokenizer.json as a ``tokenizers.Tokenizer`` set up for ``encode_pairs``, and its pad id."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(require(model_dir / "tokenizer.json", "the reranker's tokenizer.json")))
    tok.no_truncation()
    tok.no_padding()
    pad = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8")).get("padding") or {}
    return tok, int(pad.get("pad_id", tok.token_to_id("[PAD]") or 0))


def score_pairs(score_fn: ScoreFn, model_dir: Path, queries: list[str], passages: list[str], *,
                max_length: int = RERANK_MAX_TOKENS, max_query_tokens: int = RERANK_MAX_QUERY_TOKENS,
                batch_size: int = 32) -> np.ndarray:
    """Scores of (query, passage) pairs encoded as the server encodes them."""
    from tritonrepo.ensembles.pair_encoding import encode_pairs

    tok, pad_id = pair_tokenizer(model_dir)
    out = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), batch_size):
        part = slice(start, start + batch_size)
        arrays = encode_pairs(tok, queries[part], passages[part], max_length=max_length,
                              max_query_tokens=max_query_tokens, pad_id=pad_id)
        out[part] = score_fn(*arrays)
    return out


def torch_scores(model) -> ScoreFn:
    import torch

    model.eval()

    def run(ids, mask, types):
        with torch.inference_mode():
            return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                         token_type_ids=torch.from_numpy(types)).logits[:, 0].numpy()
    return run


def candidates(items: KnownItems, depth: int) -> list[list[int]]:
    """BM25 top ``depth`` documents per query."""
    from tritonrepo.services.search import BM25Retriever

    return [[h.doc for h in hits] for hits in BM25Retriever(items.documents).search_many(items.queries, depth)]


def rerank_eval(score_fn: ScoreFn, model_dir: Path, items: KnownItems, pool: list[list[int]], **encoding) -> dict:
    """nDCG@10 of the candidate pools as retrieved and as reranked by ``score_fn``."""
    queries = [items.queries[q] for q, docs in enumerate(pool) for _ in docs]
    passages = [items.documents[d] for docs in pool for d in docs]
    flat = score_pairs(score_fn, model_dir, queries, passages, **encoding)
    reranked, start = [], 0
    for docs in pool:
        s = flat[start:start + len(docs)]
        reranked.append([docs[i] for i in np.argsort(-s, kind="stable")])
        start += len(docs)
    return {"ndcg@10_retrieved": round(float(np.mean([ndcg(p, r) for p, r in zip(pool, items.relevant)])), 4),
            "ndcg@10_reranked": round(float(np.mean([ndcg(p, r) for p, r in zip(reranked, items.relevant)])), 4),
            "queries": len(pool), "pairs": len(flat), "scores": flat}


def _groups(items: KnownItems, hard: list[list[int]], cfg: RerankTraining, rng: random.Random) -> list[list[int]]:
    """Per query: [positive, negatives...] document ids."""
    out = []
    for q, relevant in enumerate(items.relevant):
        pool = [d for d in hard[q] if d not in relevant]
        out.append([rng.choice(sorted(relevant)), *rng.sample(pool, min(cfg.negatives, len(pool)))])
    return out


def train(cfg: RerankTraining = RerankTraining(), *, force: bool = False, progress: bool = True) -> dict:
    """Train (or resume, or return the cached result). Returns metrics.json as a dict."""
    fingerprint = cfg.fingerprint()
    metrics_path = cfg.out_dir / "metrics.json"
    if not force and (metrics := cached(metrics_path, fingerprint)):
        log.info("reranker up to date in %s (valid nDCG@10 %.4f)", cfg.out_dir, metrics["valid"]["ndcg@10_reranked"])
        return metrics

    work = start_training(cfg, fingerprint, force)
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tritonrepo.ensembles.pair_encoding import encode_pairs

    checkpoint = work / "checkpoint.pt"
    model = AutoModelForSequenceClassification.from_pretrained(str(cfg.backbone), num_labels=1)
    tok, pad_id = pair_tokenizer(cfg.backbone)

    items = headline_retrieval("train", ("train",))
    log.info("mining BM25 hard negatives for %d training headlines", len(items.queries))
    hard = candidates(items, cfg.mine_depth + 1)

    def epoch_batches(epoch: int) -> list[list[tuple[str, list[int]]]]:
        rng = random.Random(cfg.seed * 1000 + epoch)  # the same groups and order on resume
        order = list(range(len(items.queries)))
        rng.shuffle(order)
        groups = _groups(items, hard, cfg, rng)
        return [[(items.queries[q], groups[q]) for q in order[start:start + cfg.queries_per_step]]
                for start in range(0, len(order), cfg.queries_per_step)]

    def loss(batch):
        size = min(len(g) for _, g in batch)  # equal groups (a query with a short pool trims the step)
        queries = [q for q, g in batch for _ in g[:size]]
        passages = [items.documents[d] for _, g in batch for d in g[:size]]
        ids, mask, types = (torch.from_numpy(a) for a in encode_pairs(
            tok, queries, passages, max_length=cfg.max_length, max_query_tokens=cfg.max_query_tokens, pad_id=pad_id))
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.view(len(batch), size)
        return torch.nn.functional.cross_entropy(logits, torch.zeros(len(batch), dtype=torch.long))

    fit = Fit(model, cfg, per_epoch=-(-len(items.queries) // cfg.queries_per_step), checkpoint=checkpoint,
              what="reranker")
    fit.run(epoch_batches, loss, progress=progress)
    step, seconds = fit.step, fit.seconds

    final = staging_dir(cfg.out_dir)
    model.save_pretrained(str(final))
    AutoTokenizer.from_pretrained(str(cfg.backbone)).save_pretrained(str(final))
    log.info("evaluating on the CoNLL-2003 valid headlines (BM25 top %d reranked)", cfg.rerank_depth)
    valid = headline_retrieval("valid", ("valid",))
    encoding = {"max_length": cfg.max_length, "max_query_tokens": cfg.max_query_tokens}
    result = rerank_eval(torch_scores(model), final, valid, candidates(valid, cfg.rerank_depth), **encoding)
    metrics = {
        "fingerprint": fingerprint, "backbone": str(cfg.backbone), "model_type": model.config.model_type,
        "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("backbone", "out_dir", "threads")},
        "steps": step, "train_queries": len(items.queries), "train_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(), "valid": {k: v for k, v in result.items() if k != "scores"},
    }
    (final / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    publish(final, cfg.out_dir)
    shutil.rmtree(work, ignore_errors=True)
    log.info("reranker in %s: valid nDCG@10 %.4f (BM25 %.4f), %d steps in %.0f s", cfg.out_dir,
             result["ndcg@10_reranked"], result["ndcg@10_retrieved"], step, seconds)
    return metrics
