"""Thin gRPC clients for the search and ingestion services. Light imports only: numpy, grpc, tritonclient.

    from tritonrepo.clients import EmbeddingClient
    vectors = EmbeddingClient("triton:8001").embed(["Biden meets Xi in Bali"])  # float32 [1, 384], L2-normalised

    from tritonrepo.clients import NerClient
    NerClient("triton:8001").entities(["biden xi summit bali"])  # [[Entity(type="PER", start=0, end=5, ...), ...]]

    from tritonrepo.clients import ShotClient
    ShotClient("triton:8001").shots("clip.mp4").shots  # [Shot(start_frame=0, end_frame=29, start_s=0.0, ...), ...]

    from tritonrepo.clients import RerankClient
    RerankClient("triton:8001").rerank("biden xi summit", passages, top_k=5)  # [Hit(doc=3, score=7.2), ...]

    from tritonrepo.clients import IngestConfig, SqliteStore, ingest, read_manifest  # resumable, deduplicated
    store = SqliteStore("ingest.db"); store.add(read_manifest("data/manifest.jsonl"))
    asyncio.run(ingest(store, IngestConfig(roots=("data",))))  # local files are read inside these folders only
"""

from .embedding import AsyncEmbeddingClient, EmbeddingClient
from .ingest import IngestConfig, ingest, read_manifest
from .ner import AsyncNerClient, Entity, NerClient, NerResult
from .rerank import AsyncRerankClient, RerankClient
from .search import BM25Retriever, DenseRetriever, Hit, HybridRetriever, Reranker, Retriever, SearchPipeline
from .store import SqliteStore
from .video import AsyncShotClient, AsyncShotStreamClient, Shot, ShotClient, ShotResult, ShotStreamClient

__all__ = ["AsyncEmbeddingClient", "AsyncNerClient", "AsyncRerankClient", "AsyncShotClient", "AsyncShotStreamClient",
           "BM25Retriever", "DenseRetriever", "EmbeddingClient", "Entity", "Hit", "HybridRetriever", "IngestConfig",
           "NerClient", "NerResult", "RerankClient", "Reranker", "Retriever", "SearchPipeline", "Shot", "ShotClient",
           "ShotResult", "ShotStreamClient", "SqliteStore", "ingest", "read_manifest"]
