"""The main job: build the repository, start Triton, embed real news sentences, print nearest neighbours, find
entities in search queries, and take a short perf_analyzer measurement of the served models."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .clients import EmbeddingClient, NerClient
from .datasets import conll_sentences
from .paths import MODEL_REPOSITORY
from .repository import build
from .server import TritonServer

log = logging.getLogger(__name__)

# Search-style queries (short, often lowercase) about the 1996 Reuters news the corpus holds
QUERIES = ("israel palestinian peace talks", "oil prices fall", "badminton indonesia china",
           "clinton dole election campaign", "earthquake kills dozens")
NER_QUERIES = ("biden xi summit bali", "Taylor Swift Eras tour Tokyo", "clinton meets yeltsin in moscow",
               "Bayern Munich v Manchester United, Champions League", "  Zürich  ,  UBS   shares ")


@dataclass
class DemoResult:
    neighbours: dict[str, list[tuple[float, str]]]
    entities: dict[str, list]
    fp32_int8_cosine_min: float
    perf: list[dict]
    grpc_url: str


def run(repository: Path = MODEL_REPOSITORY, corpus_size: int = 2000, k: int = 3, perf: bool = True) -> DemoResult:
    build(repository)
    corpus = conll_sentences("test")[:corpus_size]
    with TritonServer(repository, model_config_name="cpu") as server:
        with EmbeddingClient(server.grpc_url, "sbert_int8") as int8, EmbeddingClient(server.grpc_url, "sbert") as fp32:
            vectors = int8.embed(corpus)
            queries = int8.embed(list(QUERIES))
            check = fp32.embed(list(QUERIES))
        with NerClient(server.grpc_url, "ner_int8") as ner:
            entities = dict(zip(NER_QUERIES, ner.entities(list(NER_QUERIES))))
        scores = queries @ vectors.T
        neighbours = {q: [(float(scores[i, j]), corpus[j]) for j in np.argsort(-scores[i])[:k]]
                      for i, q in enumerate(QUERIES)}
        rows = []
        if perf:
            from .perf import perf_analyzer

            with tempfile.TemporaryDirectory() as tmp:
                data = perf_analyzer.write_input_data(Path(tmp) / "data.json", "TEXT", corpus)
                for c in (1, 4):
                    row = perf_analyzer.run("sbert_int8", server.grpc_url, data, concurrency=c, measurement_ms=2000)
                    rows.append({"model": "sbert_int8"} | row.as_dict())
                queries_file = Path(tmp) / "queries.json"
                data = perf_analyzer.write_input_data(queries_file, "QUERY", list(QUERIES + NER_QUERIES))
                for c in (1, 8):
                    row = perf_analyzer.run("ner_int8", server.grpc_url, data, concurrency=c, measurement_ms=2000)
                    rows.append({"model": "ner_int8"} | row.as_dict())
        return DemoResult(neighbours=neighbours, entities=entities,
                          fp32_int8_cosine_min=float((queries * check).sum(axis=1).min()),
                          perf=rows, grpc_url=server.grpc_url)
