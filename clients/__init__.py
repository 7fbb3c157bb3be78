"""Thin gRPC clients for the search and ingestion services. Light imports only: numpy, grpc, tritonclient. Search
and ingestion themselves are ``tritonrepo.services``.

    from tritonrepo.clients import EmbeddingClient
    vectors = EmbeddingClient("triton:8001").embed(["Biden meets Xi in Bali"])  # float32 [1, 384], L2-normalised

    from tritonrepo.clients import NerClient
    NerClient("triton:8001").entities(["biden xi summit bali"])  # [[Entity(type="PER", start=0, end=5, ...), ...]]

    from tritonrepo.clients import ShotClient
    ShotClient("triton:8001").shots("clip.mp4").shots  # [Shot(start_frame=0, end_frame=29, start_s=0.0, ...), ...]

    from tritonrepo.clients import RerankClient
    RerankClient("triton:8001").rerank("biden xi summit", passages, top_k=5)  # [Hit(doc=3, score=7.2), ...]
"""

from .embedding import AsyncEmbeddingClient, EmbeddingClient
from .ner import AsyncNerClient, Entity, NerClient, NerResult
from .rerank import AsyncRerankClient, Hit, RerankClient
from .video import AsyncShotClient, AsyncShotStreamClient, Shot, ShotClient, ShotResult, ShotStreamClient

__all__ = ["AsyncEmbeddingClient", "AsyncNerClient", "AsyncRerankClient", "AsyncShotClient", "AsyncShotStreamClient",
           "EmbeddingClient", "Entity", "Hit", "NerClient", "NerResult", "RerankClient", "Shot", "ShotClient",
           "ShotResult", "ShotStreamClient"]
