"""TensorRT plans without a GPU: naming, engine-build arguments, profiles, gates and the rendered configs."""

import numpy as np
import pytest

from tritonrepo import models, render
from tritonrepo.errors import ToolNotFoundError
from tritonrepo.export import tensorrt
from tritonrepo.targets import GPU_TARGETS, TARGETS


def test_plans_are_named_per_compute_capability():
    assert {t: TARGETS[t].plan_filename for t in GPU_TARGETS} == {
        "t4": "model.sm75.plan", "a10g": "model.sm86.plan", "l4": "model.sm89.plan", "a100": "model.sm80.plan",
        "h100": "model.sm90.plan"}


@pytest.mark.parametrize("model", tensorrt.PLANNED)
def test_gpu_configs_serve_the_targets_plan_through_cc_model_filenames(model):
    for target in GPU_TARGETS:
        cfg = render.model_config(models.spec(model), target)
        cc = TARGETS[target].compute_capability
        assert cfg.platform == "tensorrt_plan" and dict(cfg.cc_model_filenames) == {cc: TARGETS[target].plan_filename}
        assert cfg.default_model_filename == TARGETS[target].plan_filename
        assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator  # no ORT accelerator left
    assert render.model_config(models.spec(model), "cpu").backend == "python"  # CPU keeps ONNX Runtime


def test_profiles_follow_the_targets_batching_and_the_tokenizer_limits():
    shapes = tensorrt.profile_shapes("sbert_encoder", "a10g")
    dep = models.spec("sbert_encoder").deployment("a10g")
    assert shapes["input_ids"] == ((1, 1), (max(dep.batching.preferred_batch_sizes), 64),
                                   (dep.batching.max_batch_size, models.SBERT_MAX_TOKENS))
    assert shapes["attention_mask"] == shapes["input_ids"]
    assert tensorrt.profile_shapes("ner_encoder", "t4")["input_ids"][2][1] == models.NER_MAX_TOKENS


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


def test_building_refuses_without_the_targets_gpu():
    with pytest.raises(ToolNotFoundError):
        tensorrt.export_plans("a10g")
    with pytest.raises(ToolNotFoundError, match="no GPU"):
        tensorrt.export_plans("cpu")
