"""Thin gRPC clients for the search and ingestion services. Light imports only: numpy, grpc, tritonclient.

    from tritonrepo.clients import EmbeddingClient
    vectors = EmbeddingClient("triton:8001").embed(["Biden meets Xi in Bali"])  # float32 [1, 384], L2-normalised

    from tritonrepo.clients import NerClient
    NerClient("triton:8001").entities(["biden xi summit bali"])  # [[Entity(type="PER", start=0, end=5, ...), ...]]
"""

from .embedding import AsyncEmbeddingClient, EmbeddingClient
from .ner import AsyncNerClient, Entity, NerClient, NerResult

__all__ = ["AsyncEmbeddingClient", "AsyncNerClient", "EmbeddingClient", "Entity", "NerClient", "NerResult"]
