"""Hybrid-search building blocks: fusion, metrics, BM25 and HNSW retrieval, the pipeline, and pair encoding."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tritonrepo.services.search import (
    RANK_PRIOR, RERANK_MAX_WORDS, BM25Retriever, DenseRetriever, Hit, HnswParams, HybridRetriever, SearchPipeline,
    reranks, rrf, weighted, with_rank_prior,
)
from tritonrepo.scoring import mrr, ndcg, recall, scores

DOCS = ["the central bank raised interest rates", "the striker scored twice in the cup final",
        "rain delayed the cricket test in lahore", "oil prices fell as opec output rose",
        "the bank cut its growth forecast for germany"]


def test_rrf_rewards_documents_ranked_high_by_several_lists():
    fused = rrf([[Hit(1, 9.0), Hit(2, 5.0), Hit(3, 1.0)], [Hit(2, 0.9), Hit(4, 0.8), Hit(1, 0.1)]], k=60)
    assert [h.doc for h in fused][:2] == [2, 1]  # 1/61+1/62 for doc 2, 1/61+1/63 for doc 1
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert {h.doc for h in fused} == {1, 2, 3, 4}


def test_weighted_fusion_normalises_each_lists_scores():
    bm25 = [Hit(1, 30.0), Hit(2, 10.0)]  # raw BM25 scale
    dense = [Hit(2, 0.80), Hit(3, 0.79)]  # cosine scale
    fused = weighted([bm25, dense], [0.3, 0.7])
    assert [h.doc for h in fused] == [2, 1, 3]  # 2: 0.3 * 0 + 0.7 * 1, 1: 0.3 * 1, 3: 0.7 * 0 (the min of dense)
    assert fused[0].score == pytest.approx(0.7)


def test_metrics_on_a_hand_computed_ranking():
    rel = frozenset({7})
    assert ndcg([3, 7, 1], rel) == pytest.approx(1 / np.log2(3))
    assert mrr([3, 7, 1], rel) == 0.5 and mrr([3, 1], rel) == 0.0
    assert recall([3, 7], frozenset({7, 8})) == 0.5
    assert scores([[7], [1]], [rel, rel]) == {"ndcg@10": 0.5, "mrr@10": 0.5, "recall@100": 0.5}


def test_bm25_finds_the_lexical_match_and_drops_zero_scores():
    bm25 = BM25Retriever(DOCS)
    hits = bm25.search("interest rates", 5)
    assert hits[0].doc == 0 and all(h.score > 0 for h in hits) and len(hits) == 1


def test_hnsw_retriever_matches_exact_search_on_a_small_set():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    dense = DenseRetriever(vectors, embed=lambda texts: vectors[[int(t) for t in texts]],
                           params=HnswParams(m=16, ef_construction=100, ef_search=100))
    got = dense.search("42", 10)
    exact = np.argsort(-(vectors @ vectors[42]))[:10]
    assert got[0].doc == 42 and len({h.doc for h in got} & set(exact.tolist())) >= 9
    assert len(dense.search("1", 200)) == 200  # k above ef_search still returns k hits


class _ByLength:
    """A reranker that prefers longer passages: makes the pipeline's reordering visible."""

    def rerank(self, query, passages, top_k=None):
        order = sorted(range(len(passages)), key=lambda i: -len(passages[i]))
        return [Hit(i, float(len(passages[i]))) for i in order][:top_k]


def test_pipeline_reranks_the_head_and_keeps_the_tail_in_retrieval_order():
    hybrid = HybridRetriever([BM25Retriever(DOCS)], depth=5)
    plain = SearchPipeline(hybrid, DOCS).search("the bank", k=5)
    reranked = SearchPipeline(hybrid, DOCS, reranker=_ByLength(), rerank_depth=2, rank_prior=0).search("the bank",
                                                                                                     k=5)
    head = sorted(plain.hits[:2], key=lambda h: -len(DOCS[h.doc]))
    assert [h.doc for h in reranked.hits[:2]] == [h.doc for h in head]
    assert [h.doc for h in reranked.hits[2:]] == [h.doc for h in plain.hits[2:]]
    assert set(reranked.seconds) == {"retrieve", "rerank"} and set(plain.seconds) == {"retrieve"}


def test_rank_prior_lets_the_stage_order_stand_unless_the_reranker_is_clearly_surer():
    reranked = [Hit(2, 5.0), Hit(0, 4.5), Hit(1, 1.0), Hit(3, 0.9)]  # doc: position in the retrieved head
    assert [h.doc for h in with_rank_prior(reranked, 0)] == [2, 0, 1, 3]  # weight 0: the reranker alone
    fused = with_rank_prior(reranked, 2.0)  # scores - 2 ln(position + 1): 0 keeps 4.5, 2 drops to 5 - 2 ln 3
    assert [h.doc for h in fused] == [0, 2, 1, 3]
    assert fused[0].score == pytest.approx(4.5) and fused[1].score == pytest.approx(5.0 - 2 * np.log(3))
    assert [h.doc for h in with_rank_prior([Hit(0, 0.0), Hit(3, 9.0)], 2.0)] == [3, 0]  # a wide margin wins


def test_pipeline_applies_the_rank_prior_to_the_reranked_head():
    hybrid = HybridRetriever([BM25Retriever(DOCS)], depth=5)
    plain = SearchPipeline(hybrid, DOCS).search("the bank", k=5)
    reranker = _ByLength()
    prior = SearchPipeline(hybrid, DOCS, reranker=reranker, rerank_depth=5, rank_prior=100).search("the bank", k=5)
    assert [h.doc for h in prior.hits] == [h.doc for h in plain.hits]  # a heavy prior keeps the retrieval order
    scores = reranker.rerank("the bank", [DOCS[h.doc] for h in plain.hits])
    default = SearchPipeline(hybrid, DOCS, reranker=reranker, rerank_depth=5).search("the bank", k=5)
    assert [h.doc for h in default.hits] == [plain.hits[h.doc].doc for h in with_rank_prior(scores, RANK_PRIOR)]


def test_pipeline_keeps_the_stage_order_for_sentence_length_queries():
    hybrid = HybridRetriever([BM25Retriever(DOCS)], depth=5)
    long = "the bank said on monday that it had raised its interest rates again"  # 13 words
    assert not reranks(long) and reranks(" ".join(long.split()[:RERANK_MAX_WORDS])) and reranks(long, None)
    plain = SearchPipeline(hybrid, DOCS).search(long, k=5)
    routed = SearchPipeline(hybrid, DOCS, reranker=_ByLength(), rerank_depth=5, rank_prior=0).search(long, k=5)
    assert [h.doc for h in routed.hits] == [h.doc for h in plain.hits] and "rerank" not in routed.seconds
    always = SearchPipeline(hybrid, DOCS, reranker=_ByLength(), rerank_depth=5, rank_prior=0, rerank_max_words=None)
    assert [h.doc for h in always.search(long, k=5).hits] != [h.doc for h in plain.hits]


def test_hybrid_refuses_unknown_fusion_and_mismatched_weights():
    with pytest.raises(ValueError, match="fusion='max'"):
        HybridRetriever([BM25Retriever(DOCS)], fusion="max")
    with pytest.raises(ValueError, match="2 weights for 1 retrievers"):
        HybridRetriever([BM25Retriever(DOCS)], weights=[0.5, 0.5])


def test_pairs_are_encoded_as_bert_pairs_with_the_query_cut_first():
    from tokenizers import Tokenizer

    from tritonrepo.ensembles.pair_encoding import encode_pairs
    from tritonrepo.paths import SBERT_WEIGHTS

    tok = Tokenizer.from_file(str(SBERT_WEIGHTS / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    long_query = "word " * 100
    ids, mask, types = encode_pairs(tok, ["short query", long_query], ["a passage", "passage " * 500],
                                    max_length=64, max_query_tokens=16, pad_to_multiple_of=8)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert ids.shape == (2, 64) and mask[0].sum() == 7  # [CLS] short query [SEP] a passage [SEP]
    assert ids[0, 0] == cls and list(types[0, :7]) == [0, 0, 0, 0, 1, 1, 1]
    assert ids[1, 17] == sep and types[1, 17] == 0 and types[1, 18] == 1  # query cut to 16 tokens
    assert mask[1].sum() == 64 and ids[1, 63] == sep
    huge = "growth " * 200_000
    t0 = time.perf_counter()
    a = encode_pairs(tok, ["q"], [huge], max_length=64, max_query_tokens=16)[0]
    assert time.perf_counter() - t0 < 1.0
    assert (a == encode_pairs(tok, ["q"], [huge[:2000]], max_length=64, max_query_tokens=16)[0]).all()
    with pytest.raises(ValueError, match="2 queries for 1 passages"):
        encode_pairs(tok, ["a", "b"], ["c"], max_length=64, max_query_tokens=16)


def test_headline_retrieval_marks_every_copy_of_a_repeated_headline_relevant():
    from tritonrepo.datasets import headline_retrieval

    items = headline_retrieval("test", ("test", "valid"))
    assert len(items.queries) == 231 and len(items.documents) == 447
    assert all(len(r) >= 1 for r in items.relevant) and any(len(r) > 1 for r in items.relevant)
    q = next(i for i, r in enumerate(items.relevant) if len(r) == 1)
    assert items.queries[q].split()[0].lower() in items.queries[q].lower()
    with pytest.raises(ValueError, match="must be one of the corpus splits"):
        headline_retrieval("train", ("test",))



def test_worst_names_the_query_a_reranker_hurt_most_as_plain_json():
    import json

    from tritonrepo.search_eval import _worst

    before, after = [[0, 1, 2], [2, 1, 0]], [[1, 0, 2], [2, 0, 1]]
    worst = _worst(["q0", "q1"], ["a", "b", "c"], [frozenset({0}), frozenset({2})], before, after)
    assert json.loads(json.dumps(worst)) == {
        "query": "q0", "ndcg@10 change": -0.3691, "stage top": {"relevant": True, "passage": "a"},
        "reranked top": {"relevant": False, "passage": "b"}, "queries that lost": 1, "queries that gained": 0}
    assert _worst(["q0"], ["a", "b"], [frozenset({0})], [[0, 1]], [[0, 1]]) is None
