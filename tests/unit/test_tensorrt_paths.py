"""TensorRT plans without a GPU: naming, engine-build arguments, profiles, gates and the rendered configs."""

import numpy as np
import pytest

from tritonrepo import deployable, render
from tritonrepo.errors import ToolNotFoundError
from tritonrepo.export import tensorrt
from tritonrepo.export import families
from tritonrepo.export.ner import NER_MAX_TOKENS
from tritonrepo.export.sbert import SBERT_MAX_TOKENS
from tritonrepo.targets import GPU_TARGETS, TARGETS
from tritonrepo.text_specs import TRT_ENGINE_CACHE


def test_plans_are_named_per_compute_capability():
    assert {t: TARGETS[t].plan_filename for t in GPU_TARGETS} == {
        "t4": "model.sm75.plan", "a10g": "model.sm86.plan", "l4": "model.sm89.plan", "a100": "model.sm80.plan",
        "h100": "model.sm90.plan"}


@pytest.mark.parametrize("model", ["sbert_encoder", "ner_encoder", "rerank_encoder"])
def test_gpu_configs_run_the_fp32_graph_through_the_tensorrt_provider_with_a_profile_and_a_cache(model):
    for target in GPU_TARGETS:
        cfg = render.model_config(families.spec(model), target)
        assert cfg.platform == "onnxruntime_onnx" and cfg.default_model_filename == "model.fp32.onnx"
        assert not cfg.cc_model_filenames and cfg.instance_group[0].kind == cfg.instance_group[0].KIND_GPU
        (acc,) = cfg.optimization.execution_accelerators.gpu_execution_accelerator
        params = dict(acc.parameters)
        assert acc.name == "tensorrt" and params["precision_mode"] == "FP16"
        assert params["trt_engine_cache_enable"] == "1"
        assert params["trt_engine_cache_path"] == f"{TRT_ENGINE_CACHE}/{model}"
        names = [i.name for i in cfg.input]
        assert [s.split(":")[0] for s in params["trt_profile_max_shapes"].split(",")] == names
        assert params["trt_profile_min_shapes"].split(",")[0] == f"{names[0]}:1x1"
        assert params["trt_profile_max_shapes"].split(",")[0].startswith(f"{names[0]}:{cfg.max_batch_size}x")
    assert render.model_config(families.spec(model), "cpu").backend == "python"  # CPU keeps ONNX Runtime in Python


@pytest.mark.parametrize("model", tensorrt.PLANNED)
def test_a_plan_config_is_written_only_by_activate_and_names_the_targets_plan(model, tmp_path):
    source = tmp_path / "source"
    render.write(source, families.all_specs())
    (source / model / "1").mkdir(parents=True)
    (source / model / "1" / "model.fp32.onnx").write_bytes(b"onnx")
    out = tmp_path / "out"
    (out / "stale").mkdir(parents=True)
    tensorrt.stage(source, out)
    assert not (out / "stale").exists() and (out / model / "1" / "model.fp32.onnx").read_bytes() == b"onnx"
    tensorrt.activate(out, model, "a10g")
    cfg = render.parse((out / model / "configs" / "a10g.pbtxt").read_text())
    assert cfg.platform == "tensorrt_plan" and dict(cfg.cc_model_filenames) == {"8.6": "model.sm86.plan"}
    assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert "onnxruntime_onnx" in (source / model / "configs" / "a10g.pbtxt").read_text()  # the source untouched
    problems = [f.where for f in deployable.check(out, "a10g") if f.model == model]
    assert problems == [f"{model}/1/model.sm86.plan"]  # named by the plan config until the plan is there
    (out / model / "1" / "model.sm86.plan").write_bytes(b"plan")
    assert not [f for f in deployable.check(out, "a10g") if f.model == model]
    assert render.model_config(families.spec(model), "a10g").platform == "onnxruntime_onnx"  # the specs unchanged


def test_profiles_follow_the_targets_batching_and_the_tokenizer_limits():
    shapes = tensorrt.profile_shapes("sbert_encoder", "a10g")
    dep = families.spec("sbert_encoder").deployment("a10g")
    assert shapes["input_ids"] == ((1, 1), (max(dep.batching.preferred_batch_sizes), 64),
                                   (dep.batching.max_batch_size, SBERT_MAX_TOKENS))
    assert shapes["attention_mask"] == shapes["input_ids"]
    assert tensorrt.profile_shapes("ner_encoder", "t4")["input_ids"][2][1] == NER_MAX_TOKENS


def test_trtexec_arguments_build_fp16_with_the_profile_and_int8_from_a_cache(tmp_path):
    shapes = {"input_ids": ((1, 1), (64, 64), (128, 256)), "attention_mask": ((1, 1), (64, 64), (128, 256))}
    argv = tensorrt.trtexec_argv(tmp_path / "m.onnx", tmp_path / "model.sm86.plan", shapes)
    assert argv[:4] == ["trtexec", f"--onnx={tmp_path / 'm.onnx'}", f"--saveEngine={tmp_path / 'model.sm86.plan'}",
                        "--fp16"]
    assert "--minShapes=input_ids:1x1,attention_mask:1x1" in argv
    assert "--optShapes=input_ids:64x64,attention_mask:64x64" in argv
    assert "--maxShapes=input_ids:128x256,attention_mask:128x256" in argv and "--int8" not in argv
    int8 = tensorrt.trtexec_argv(tmp_path / "m.onnx", tmp_path / "p", shapes, int8_calibration_cache=tmp_path / "c")
    assert int8[-2:] == ["--int8", f"--calib={tmp_path / 'c'}"]


def test_validation_gates_pass_close_outputs_and_name_the_failure():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(8, 384)).astype(np.float32)
    assert tensorrt.compare("sbert_encoder", ref, ref + 1e-3 * rng.normal(size=ref.shape), int8=False) == []
    bad = tensorrt.compare("sbert_encoder", ref, rng.normal(size=ref.shape), int8=False)
    assert bad and "cosine" in bad[0] and "fp16 gate 0.999" in bad[0]
    logits = rng.normal(size=(4, 16, 9))
    mask = np.ones((4, 16))
    mask[:, 10:] = 0  # padding positions do not count
    noisy = logits.copy()
    noisy[:, 10:] = -logits[:, 10:]
    assert tensorrt.compare("ner_encoder", logits, noisy, int8=False, mask=mask) == []
    assert tensorrt.compare("ner_encoder", logits, logits[:, :8], int8=True)[0].startswith("ner_encoder: output shape")


def test_building_refuses_without_the_targets_gpu_before_writing_anything(tmp_path):
    with pytest.raises(ToolNotFoundError):
        tensorrt.export_plans("a10g", tmp_path, tmp_path / "out")
    with pytest.raises(ToolNotFoundError, match="no GPU"):
        tensorrt.export_plans("cpu", tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
