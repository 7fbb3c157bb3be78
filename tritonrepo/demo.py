"""The main job, in two parts, each printed as soon as it is done.

Part 1 needs no training: build the SBERT and TransNetV2 families, start Triton with those models, embed real news
sentences and print nearest neighbours, cut real videos into shots (whole files, and one streamed live in segments),
and take a short perf_analyzer measurement of sbert_int8. Part 2 builds the rest (fine-tunes the NER model and the
cross-encoder once; cached afterwards), then finds entities in search queries, runs hybrid search (BM25 + HNSW over
served embeddings, reranked by the served cross-encoder) over Reuters articles, ingests a manifest of real articles,
captions and videos through the resilient pipeline, and measures ner_int8 with perf_analyzer."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .clients import EmbeddingClient, NerClient, RerankClient
from .services.ingest import IngestConfig, ingest, read_manifest
from .services.metrics import IngestMetrics, ModelLoad, summarize
from .services.search import BM25Retriever, DenseRetriever, HybridRetriever, SearchPipeline
from .services.store import SqliteStore
from .clients.video import Shot, ShotClient, ShotStreamClient, segment_file
from .datasets import conll_articles, conll_sentences, sample_manifest
from .export.families import build, models_to_load
from .paths import MODEL_REPOSITORY, RUNS, TRANSNET_DIR, VIDEO_DIR
from .server import TritonServer
from .targets import Target

log = logging.getLogger(__name__)

# Search-style queries (short, often lowercase) about the 1996 Reuters news the corpus holds
QUERIES = ("israel palestinian peace talks", "oil prices fall", "badminton indonesia china",
           "clinton dole election campaign", "earthquake kills dozens")
NER_QUERIES = ("biden xi summit bali", "Taylor Swift Eras tour Tokyo", "clinton meets yeltsin in moscow",
               "Bayern Munich v Manchester United, Champions League", "  Zürich  ,  UBS   shares ")


PART1_FAMILIES = ("sbert", "transnetv2")  # part 1: the families that need no training


@dataclass
class FirstLook:
    """Part 1: the models that need no training."""
    neighbours: dict[str, list[tuple[float, str]]]
    fp32_int8_cosine_min: float
    shots: dict[str, list[Shot]]  # file -> shots (whole-file requests)
    live: list[Shot]  # bikes.mp4 streamed as 1 s segments
    perf: list[dict]


@dataclass
class Trained:
    """Part 2: with the fine-tuned NER model and reranker."""
    entities: dict[str, list]
    search: dict[str, list[tuple[float, str]]]  # query -> (rerank score, headline) of the top articles
    ingestion: dict  # the pipeline's summary on a sample manifest
    triton_load: list[ModelLoad]  # Triton's metrics after the clients ran
    perf: list[dict]
    grpc_url: str


def first_look(repository: Path = MODEL_REPOSITORY, corpus_size: int = 2000, k: int = 3,
               perf: bool = True) -> FirstLook:
    build(repository, families=PART1_FAMILIES)
    corpus = conll_sentences("test")[:corpus_size]
    with TritonServer(repository, model_config_name=Target.CPU,
                      explicit_models=models_to_load(PART1_FAMILIES, repository)) as server:
        with EmbeddingClient(server.grpc_url, "sbert_int8") as int8, EmbeddingClient(server.grpc_url, "sbert") as fp32:
            vectors = int8.embed(corpus)
            queries = int8.embed(list(QUERIES))
            check = fp32.embed(list(QUERIES))
        with ShotClient(server.grpc_url) as shots_client:
            shots = {p.name: shots_client.shots(p).shots for p in (TRANSNET_DIR / "test.mp4", VIDEO_DIR / "bikes.mp4")}
        with tempfile.TemporaryDirectory() as tmp, ShotStreamClient(server.grpc_url) as stream:
            segments = segment_file(VIDEO_DIR / "bikes.mp4", tmp, seconds=1.0, reencode=True)
            live = list(stream.stream(p.read_bytes() for p in segments))
        scores = queries @ vectors.T
        neighbours = {q: [(float(scores[i, j]), corpus[j]) for j in np.argsort(-scores[i])[:k]]
                      for i, q in enumerate(QUERIES)}
        rows = _probe(server.grpc_url, "sbert_int8", "TEXT", corpus, (1, 4)) if perf else []
    return FirstLook(neighbours=neighbours, fp32_int8_cosine_min=float((queries * check).sum(axis=1).min()),
                     shots=shots, live=live, perf=rows)


def trained(repository: Path = MODEL_REPOSITORY, k: int = 3, perf: bool = True) -> Trained:
    build(repository)
    with TritonServer(repository, model_config_name=Target.CPU) as server:
        with NerClient(server.grpc_url, "ner_int8") as ner:
            entities = dict(zip(NER_QUERIES, ner.entities(list(NER_QUERIES))))
        search = _search(server.grpc_url, k)
        ingestion = _ingest(server.grpc_url)
        triton_load = summarize(server.metrics_url)
        rows = _probe(server.grpc_url, "ner_int8", "QUERY", list(QUERIES + NER_QUERIES), (1, 8)) if perf else []
        return Trained(entities=entities, search=search, ingestion=ingestion, triton_load=triton_load, perf=rows,
                       grpc_url=server.grpc_url)


def _probe(url: str, model: str, tensor: str, texts: list[str], concurrencies: tuple[int, ...]) -> list[dict]:
    """A short perf_analyzer measurement of one model: one text per request, 2 s windows."""
    from .perf import perf_analyzer

    with tempfile.TemporaryDirectory() as tmp:
        data = perf_analyzer.write_input_data(Path(tmp) / "data.json", tensor, texts)
        return [{"model": model} | perf_analyzer.run(model, url, data, concurrency=c, measurement_ms=2000).as_dict()
                for c in concurrencies]


def _search(url: str, k: int) -> dict[str, list[tuple[float, str]]]:
    """Hybrid search over the bodies of the Reuters test articles: BM25 + HNSW (served sbert_int8 embeddings), RRF,
    the top 20 reranked by the served rerank_int8; returns the headlines found."""
    articles = [a for a in conll_articles("test") if len(a) > 1]
    bodies = [" ".join(a[1:]) for a in articles]
    with EmbeddingClient(url, "sbert_int8") as embedder, RerankClient(url, "rerank_int8") as reranker:
        hybrid = HybridRetriever([BM25Retriever(bodies), DenseRetriever.build(bodies, embedder.embed)])
        pipeline = SearchPipeline(hybrid, bodies, reranker=reranker, rerank_depth=20)
        return {q: [(h.score, articles[h.doc][0]) for h in pipeline.search(q, k).hits] for q in QUERIES}


def _ingest(url: str) -> dict:
    """A sample manifest (articles, captions, videos, duplicates, three bad assets) through the asyncio pipeline into
    a fresh store, then once more to show that a rerun computes nothing."""
    folder = RUNS / "demo-ingest"
    manifest, n = sample_manifest(folder, documents=40, captions=40, duplicates=10)
    (folder / "ingest.db").unlink(missing_ok=True)
    store = SqliteStore(folder / "ingest.db")
    store.add(read_manifest(manifest))
    metrics = IngestMetrics()
    config = IngestConfig(url=url, roots=(manifest.parent,))  # local files: the manifest's folder only
    summary = asyncio.run(ingest(store, config, metrics=metrics))
    rerun = asyncio.run(ingest(store, config))
    return {"assets": n, "counts": summary.counts, "seconds": round(summary.seconds, 1),
            "computed": metrics.value("ingest_computed_total"), "dedup_hits": metrics.value("ingest_dedup_hits_total"),
            "retries": metrics.value("ingest_retries_total"), "rerun_processed": rerun.processed,
            "dead": store.dead_letters(), "store": str(store.path)}
