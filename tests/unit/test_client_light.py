import subprocess
import sys

import numpy as np
import pytest

from tritonrepo.clients.grpc_core import chunks, encode_texts, translate
from tritonrepo.errors import (
    InvalidInputError, ModelNotFoundError, ServerOverloadedError, ServerUnavailableError,
)
from tritonclient.utils import InferenceServerException


def test_client_imports_no_heavy_frameworks():
    code = ("import sys, tritonrepo.clients; heavy = {'torch', 'transformers', 'sentence_transformers', "
            "'onnxruntime', 'tokenizers', 'av', 'nvidia.dali'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_texts_are_validated_with_the_bad_index():
    assert encode_texts(["a", "é"], "m").tolist() == [[b"a"], ["é".encode()]]
    assert encode_texts([], "m").shape == (0, 1)
    with pytest.raises(InvalidInputError, match="single string"):
        encode_texts("hello", "m")
    with pytest.raises(InvalidInputError, match=r"texts\[1\] is bytes"):
        encode_texts(["ok", b"raw"], "m")
    with pytest.raises(InvalidInputError, match=r"texts\[0\] cannot be encoded"):
        encode_texts(["\ud800"], "m")


def test_chunks_cover_everything_in_order():
    parts = chunks(150, 64)
    assert [(p.start, p.stop) for p in parts] == [(0, 64), (64, 128), (128, 150)]
    assert chunks(0, 64) == []


@pytest.mark.parametrize("status, message, cls, retriable", [
    ("StatusCode.INVALID_ARGUMENT", "TEXT: text 0 is not valid UTF-8", InvalidInputError, False),
    ("StatusCode.NOT_FOUND", "Request for unknown model: 'x' is not found", ModelNotFoundError, False),
    ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", ServerUnavailableError, True),
    ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", ServerOverloadedError, True),
    ("StatusCode.RESOURCE_EXHAUSTED", "queue full", ServerOverloadedError, True),
])
def test_grpc_errors_map_to_what_the_caller_should_do(status, message, cls, retriable):
    err = translate(InferenceServerException(message, status), "sbert")
    assert type(err) is cls and err.retriable is retriable
    assert err.model == "sbert" and message in str(err)


def test_empty_input_needs_no_server():
    from tritonrepo.clients.embedding import _shape_from_config

    cfg = {"config": {"max_batch_size": 64, "output": [{"name": "EMBEDDING", "dims": ["384"]}]}}
    assert _shape_from_config(cfg, "sbert") == (64, 384)
    assert np.empty((0, 384)).shape == (0, 384)
