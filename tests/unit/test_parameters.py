"""The Python-backend models' config parameters (ensembles/parameters.py): one declaration per model, which the specs
set, rendering completes and checks, and the model reads back."""

import dataclasses
import json

import pytest
from google.protobuf import json_format

from tritonrepo import render
from tritonrepo.ensembles.parameters import (BY_MODULE, DecoderParameters, EncoderParameters, Parameters,
                                            ShotParameters, TokenizerParameters, VideoDecodeParameters)
from tritonrepo.errors import SpecError
from tritonrepo.export import families
from tritonrepo.specs import Backend, ModelSpec
from tritonrepo.stub_watch import RESTARTS_PARAMETER
from tritonrepo.targets import TARGETS
from tritonrepo.tuning import Variant

PYTHON_CONFIGS = [(s, t) for s in families.all_specs() if isinstance(s, ModelSpec) for t in TARGETS
                  if s.deployment(t).backend is Backend.PYTHON]


@pytest.mark.parametrize("spec, target", PYTHON_CONFIGS, ids=[f"{s.name}-{t}" for s, t in PYTHON_CONFIGS])
def test_every_python_config_holds_every_parameter_its_model_reads(spec, target):
    cfg = render.model_config(spec, target)
    handed = json.loads(json_format.MessageToJson(cfg, preserving_proto_field_name=True))  # as the backend gives it
    read = BY_MODULE[spec.python_model].from_config(handed)
    rendered = {k: v.string_value for k, v in cfg.parameters.items()}
    assert set(rendered) == {f.name for f in dataclasses.fields(read)}
    assert dict(read.pairs()) == rendered  # read back and written again: the same strings
    dep = spec.deployment(target)
    assert {k: rendered[k] for k, _ in dep.parameters} == dict(dep.parameters)  # what the spec sets, the model gets


def _with_cpu_parameters(name: str, parameters: tuple) -> ModelSpec:
    spec = families.spec(name)
    cpu = Variant(instances=2, max_queue_delay_us=0, parameters=parameters).apply(spec.deployment("cpu"))
    return dataclasses.replace(spec, deployments=spec.deployments | {"cpu": cpu})


def test_a_parameter_the_model_does_not_declare_or_cannot_read_fails_at_render():
    with pytest.raises(SpecError, match=r"'sbert_encoder_int8' on target 'cpu': unknown parameters "
                                        r"\['intra_op_thread'\]; EncoderParameters declares \[.*'intra_op_threads'"):
        render.model_config(_with_cpu_parameters("sbert_encoder_int8", (("intra_op_thread", "1"),)), "cpu")
    with pytest.raises(SpecError, match=r"padding_tolerance='a lot': a number is needed"):
        render.model_config(_with_cpu_parameters("ner_encoder", (("padding_tolerance", "a lot"),)), "cpu")
    with pytest.raises(SpecError, match=r"sort_by_length='yes': true or false"):
        render.model_config(_with_cpu_parameters("ner_encoder", (("sort_by_length", "yes"),)), "cpu")
    with pytest.raises(SpecError, match=r"'video_shots' on target 'cpu': parameter window_batch='two': an integer"):
        render.model_config(_with_cpu_parameters("video_shots", (("window_batch", "two"),)), "cpu")


def test_a_spec_sets_only_declared_parameters():
    assert TokenizerParameters.of(max_length=128, pad_to_multiple_of=8) == (("max_length", "128"),
                                                                            ("pad_to_multiple_of", "8"))
    assert ShotParameters.of(dali_codecs=("vp8", "vp9"), max_seconds=0.5) == (("dali_codecs", "vp8,vp9"),
                                                                               ("max_seconds", "0.5"))
    assert EncoderParameters.of(padding_tolerance=0.123456789, intra_op_threads=2) == (
        ("padding_tolerance", "0.123456789"), ("intra_op_threads", "2"))  # exact: read back, the same value
    with pytest.raises(TypeError, match="max_lenght"):
        TokenizerParameters.of(max_lenght=128)


def test_the_stub_watchs_reload_counter_is_a_parameter_every_model_accepts():
    assert RESTARTS_PARAMETER in {f.name for f in dataclasses.fields(Parameters)}
    for declared in BY_MODULE.values():
        assert declared.parse({RESTARTS_PARAMETER: "3"}).stub_restarts == 3


def test_a_model_refuses_a_config_it_cannot_read_and_names_itself():
    config = {"name": "video_decode", "parameters": {"max_frames": {"string_value": "0"}}}
    with pytest.raises(ValueError, match=r"^video_decode: parameter max_frames=0: a positive number is needed"):
        VideoDecodeParameters.from_config(config)
    with pytest.raises(ValueError, match=r"^ner_decoder: unknown parameters \['max_token'\]"):
        DecoderParameters.from_config({"name": "ner_decoder", "parameters": {"max_token": {"string_value": "8"}}})
