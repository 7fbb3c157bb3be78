"""The Python-backend models' pure logic, imported outside Triton with a stand-in for its utils module."""

import importlib
import sys
import types

import numpy as np
import pytest



@pytest.fixture(scope="module")
def encoder_module():
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    return importlib.import_module("tritonrepo.ensembles.onnx_encoder")


@pytest.mark.parametrize("tolerance", [0.0, 0.1, 0.5])
def test_sub_batches_cover_sorted_rows_within_the_padding_tolerance(encoder_module, tolerance):
    model = encoder_module.TritonPythonModel.__new__(encoder_module.TritonPythonModel)
    model.padding_tolerance, model.max_sub_batch = tolerance, 8
    lengths = np.sort(np.random.default_rng(0).integers(3, 120, size=200))
    runs = list(model._sub_batches(lengths))
    assert runs[0][0] == 0 and runs[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
    for start, stop in runs:
        part = lengths[start:stop]
        assert 1 <= len(part) <= 8
        if len(part) > 1:
            assert part.max() * len(part) <= (1 + tolerance) * part.sum() + 1e-9
