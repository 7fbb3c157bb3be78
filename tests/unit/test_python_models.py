"""The Python-backend models' pure logic, imported outside Triton with a stand-in for its utils module."""

import importlib
import sys
import types

import numpy as np
import pytest

from tritonrepo import render
from tritonrepo.ensembles import video_io
from tritonrepo.ensembles.parameters import BY_MODULE, ShotParameters
from tritonrepo.export import families
from tritonrepo.export.ner import NER_LABELS
from tritonrepo.specs import Backend


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


@pytest.mark.parametrize("sort", [True, False])
def test_sequence_multiple_pads_every_run_to_an_even_width(encoder_module, sort):
    """The int8 encoders' batch invariance rests on this (ensembles/onnx_encoder.py): whatever the rows' lengths,
    ONNX Runtime sees even widths, and the outputs map back to the rows unchanged."""
    class Session:
        def __init__(self):
            self.widths = []

        def run(self, names, feeds):
            ids = feeds["input_ids"]
            self.widths.append(ids.shape[1])
            return [ids.astype(np.float32)[..., None], ids.sum(axis=1, keepdims=True).astype(np.float32)]

    model = encoder_module.TritonPythonModel.__new__(encoder_module.TritonPythonModel)
    model.sort, model.multiple, model.padding_tolerance, model.max_sub_batch = sort, 2, 0.1, 64
    model.output_names, model.session = ["logits", "pooled"], Session()
    lengths = [3, 4, 5, 7, 10, 11, 1]
    ids = np.zeros((len(lengths), max(lengths)), np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = np.arange(1, n + 1)
    tokens, pooled = model._run({"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)})
    assert model.session.widths and all(w % 2 == 0 for w in model.session.widths)
    assert np.array_equal(tokens[:, : ids.shape[1], 0], ids) and not tokens[:, ids.shape[1]:].any()
    assert np.array_equal(pooled[:, 0], ids.sum(axis=1))


@pytest.fixture(scope="module")
def ner_decoder_module():
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    return importlib.import_module("tritonrepo.ensembles.ner_decoder")


def _config_parameters(name: str, target: str = "cpu") -> dict[str, str]:
    cfg = render.model_config(families.spec(name), target)
    return {k: v.string_value for k, v in cfg.parameters.items()}


def _step_inputs(query: bytes, width: int):
    return (np.array([query], dtype=np.object_), np.zeros((1, width, len(NER_LABELS)), np.float32),
            np.zeros((1, width, 2), np.int32), np.zeros((1, width), np.int8))


def test_ner_decoder_called_directly_refuses_queries_and_logits_over_its_limits(ner_decoder_module):
    params = _config_parameters("ner_decoder")
    assert (params["max_text_bytes"], params["max_tokens"]) == (str(1 << 20), "128")
    model = ner_decoder_module.TritonPythonModel.__new__(ner_decoder_module.TritonPythonModel)
    model.labels = list(NER_LABELS)
    model.max_text_bytes, model.max_tokens = int(params["max_text_bytes"]), int(params["max_tokens"])
    assert model._check(*_step_inputs(b"x" * (1 << 20), 128)) is None  # both limits are inclusive
    assert model._check(*_step_inputs(b"x" * ((1 << 20) + 1), 8)) == (
        "QUERY: text 0 is 1048577 bytes; the limit is 1048576 bytes (max_text_bytes parameter)")
    assert "logits have 129 token positions; the limit is 128 (max_tokens parameter" in model._check(
        *_step_inputs(b"ok", 129))


def test_every_limit_a_video_config_renders_is_one_its_model_reads():
    read = set(video_io.VideoLimits.__dataclass_fields__)
    for name in ("video_shots", "video_shots_live", "video_decode"):
        for target, dep in families.spec(name).deployments.items():
            if dep.backend is not Backend.PYTHON:  # the GPU targets' DALI video_decode reads no parameters
                continue
            rendered = dict(dep.limits.parameters())
            assert {"max_request_bytes", "max_frames", "max_pixels", "max_seconds"} <= set(rendered) <= read
            limits = BY_MODULE[families.spec(name).python_model].parse(_config_parameters(name, target))
            assert {k: str(int(getattr(limits, k))) for k in rendered} == rendered, (name, target)
    live = ShotParameters.parse(_config_parameters("video_shots_live"))
    assert (live.max_seconds, live.max_stream_frames) == (60, 1_000_000_000)
