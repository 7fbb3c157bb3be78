"""On a GPU host (onnxruntime-gpu installed): the exported fp32 graph gives the same embeddings on CUDA as on CPU.
Skips cleanly without a GPU (conftest hook)."""

import numpy as np
import pytest

from tritonrepo.datasets import conll_sentences

pytestmark = pytest.mark.gpu


def test_fp32_graph_matches_on_cuda(sbert_artifacts):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(sbert_artifacts / "tokenizer.json"))
    tok.enable_padding()
    enc = tok.encode_batch(conll_sentences("test")[:64])
    feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
             "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
    path = str(sbert_artifacts / "model.fp32.onnx")
    cpu = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    gpu = ort.InferenceSession(path, providers=["CUDAExecutionProvider"]).run(None, feeds)[0]
    assert ((cpu * gpu).sum(axis=1)).min() >= 0.9999
