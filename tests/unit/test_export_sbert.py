"""The export refuses an artifact that fails validation, and nothing is left where the repository takes it from."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tritonrepo.errors import ValidationError
from tritonrepo.export import sbert


def _corrupt_copy(fp32, int8, block_size=128):
    """Stand-in for the quantizer: the fp32 graph with 30% noise on every weight matrix."""
    model = onnx.load(str(fp32))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim == 2:
            init.CopyFrom(numpy_helper.from_array(w * (1 + 0.3 * rng.standard_normal(w.shape, dtype=np.float32)),
                                                  init.name))
    onnx.save(model, str(int8))


def test_export_refuses_an_int8_graph_that_fails_validation(tmp_path, monkeypatch):
    monkeypatch.setattr(sbert, "int8_blocks", _corrupt_copy)
    cfg = sbert.SbertExport(out_dir=tmp_path / "sbert", validation_sentences=200)
    with pytest.raises(ValidationError) as e:
        sbert.export(cfg)
    message = str(e.value)
    assert "model.int8.onnx: recall@10" in message and "model.int8.onnx: cosine_min" in message
    assert "model.fp32.onnx" not in message  # the fp32 graph itself passed
    assert not (tmp_path / "sbert").exists()
    with pytest.raises(Exception, match="validated SBERT artifacts"):
        sbert.install(tmp_path / "repo", tmp_path / "sbert")
