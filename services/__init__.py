"""What the platform builds on its thin clients: hybrid search (BM25, HNSW, fusion, reranking), resumable ingestion
(fetching, the SQLite store, the result cache, captioning, metrics, Ray). A search service that only calls the models
installs ``tritonrepo.clients`` and none of this.

    from tritonrepo.services import IngestConfig, SqliteStore, ingest, read_manifest  # resumable, deduplicated
    store = SqliteStore("ingest.db"); store.add(read_manifest("data/manifest.jsonl"))
    asyncio.run(ingest(store, IngestConfig(roots=("data",))))  # local files are read inside these folders only
"""

from tritonrepo.clients.rerank import Hit

from .ingest import IngestConfig, ingest, read_manifest
from .search import BM25Retriever, DenseRetriever, HybridRetriever, Reranker, Retriever, SearchPipeline
from .store import SqliteStore

__all__ = ["BM25Retriever", "DenseRetriever", "Hit", "HybridRetriever", "IngestConfig", "Reranker", "Retriever",
           "SearchPipeline", "SqliteStore", "ingest", "read_manifest"]
