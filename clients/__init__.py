"""Thin gRPC clients for the search and ingestion services. Light imports only: numpy, grpc, tritonclient.

    from tritonrepo.clients import EmbeddingClient
    vectors = EmbeddingClient("triton:8001").embed(["Biden meets Xi in Bali"])  # float32 [1, 384], L2-normalised
"""

from .embedding import AsyncEmbeddingClient, EmbeddingClient

__all__ = ["AsyncEmbeddingClient", "EmbeddingClient"]
