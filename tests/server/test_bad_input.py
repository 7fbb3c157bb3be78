"""Bad input sent with the raw tritonclient: a clear error or a documented result, and the server keeps serving."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonrepo.clients import EmbeddingClient

pytestmark = pytest.mark.server


def _infer(client, data: np.ndarray, dtype: str = "BYTES", model: str = "sbert"):
    inp = grpcclient.InferInput("TEXT", list(data.shape), dtype)
    inp.set_data_from_numpy(data)
    return client.infer(model, [inp], client_timeout=60)


@pytest.fixture
def raw(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    # whatever the test sent, the server still answers a normal request afterwards
    assert client.is_server_live() and client.is_model_ready("sbert")
    assert EmbeddingClient(triton.grpc_url).embed(["still serving"]).shape == (1, 384)
    client.close()


def _texts(*items: bytes) -> np.ndarray:
    return np.array(items, dtype=np.object_).reshape(-1, 1)


def test_non_utf8_is_rejected_naming_the_row(raw):
    with pytest.raises(InferenceServerException) as e:
        _infer(raw, _texts(b"fine", b"\xff\xfe caf\xe9"))
    assert "INVALID_ARGUMENT" in e.value.status()
    assert "text 1 is not valid UTF-8" in e.value.message()


def test_one_megabyte_text_is_truncated_to_the_models_256_tokens(raw):
    words = ("Reuters reported that the summit " * 40_000)[:1_000_000].encode()
    head = " ".join(words.decode().split()[:300]).encode()  # > 256 tokens: the same truncated input
    got = _infer(raw, _texts(words, head)).as_numpy("EMBEDDING")
    assert got.shape == (2, 384)
    assert float(got[0] @ got[1]) > 0.9999


def test_text_over_the_byte_limit_is_rejected(raw):
    with pytest.raises(InferenceServerException) as e:
        _infer(raw, _texts(b"x" * (2 << 20)))
    assert "INVALID_ARGUMENT" in e.value.status()
    assert "limit is 1048576 bytes (max_text_bytes parameter" in e.value.message()


def test_empty_string_gets_the_cls_sep_embedding(raw):
    got = _infer(raw, _texts(b"")).as_numpy("EMBEDDING")
    assert got.shape == (1, 384) and abs(np.linalg.norm(got) - 1) < 1e-5


def test_empty_batch_is_rejected(raw):
    with pytest.raises(InferenceServerException) as e:
        _infer(raw, np.empty((0, 1), dtype=np.object_))
    assert e.value.status() and "INVALID_ARGUMENT" in e.value.status()


def test_wrong_dtype_is_rejected(raw):
    with pytest.raises(InferenceServerException) as e:
        _infer(raw, np.ones((1, 1), dtype=np.float32), dtype="FP32")
    assert "INVALID_ARGUMENT" in e.value.status() and "expects 'BYTES'" in e.value.message()


@pytest.mark.parametrize("shape", [(2,), (1, 2), (1, 1, 1)])
def test_wrong_rank_or_shape_is_rejected(raw, shape):
    data = np.array([b"a"] * int(np.prod(shape)), dtype=np.object_).reshape(shape)
    with pytest.raises(InferenceServerException) as e:
        _infer(raw, data)
    assert "INVALID_ARGUMENT" in e.value.status() and "shape" in e.value.message()


def test_batch_over_max_batch_size_is_rejected(raw):
    with pytest.raises(InferenceServerException) as e:
        _infer(raw, _texts(*[b"x"] * 65))
    assert "INVALID_ARGUMENT" in e.value.status() and "batch" in e.value.message()
