"""What a built repository needs where it is deployed, read from its files: every file each target's configs name,
backends the NGC image ships, instance kinds that fit the target, and model code that needs only the image's packages.
The same check against a fully built repository, for every target: tests/server/test_deployment.py."""

import pytest

from tritonrepo import deployable, render
from tritonrepo.export import families
from tritonrepo.paths import ROOT
from tritonrepo.repository import install_python_models, server_side_modules
from tritonrepo.specs import ModelSpec
from tritonrepo.targets import GPU_TARGETS, TARGETS


def test_the_image_modules_come_from_the_images_requirements():
    assert deployable.image_modules() == {"numpy", "tokenizers", "onnxruntime", "av", "nvidia"}


def test_setup_installs_the_onnx_runtime_of_the_ngc_images_backend():
    assert f"NGC_ORT_VERSION={deployable.NGC_ONNXRUNTIME}\n" in (ROOT / "scripts" / "setup.sh").read_text()


def test_imports_beyond_the_image_stdlib_and_the_folder_are_named_with_their_line(tmp_path):
    (tmp_path / "helper.py").write_text("import numpy\n")
    model = tmp_path / "model.py"
    model.write_text("import json\nimport numpy as np\nimport triton_python_backend_utils as pb_utils\n"
                     "from . import helper\nfrom .helper import x\n\n"
                     "def f():\n    import torch\n    from tritonrepo.ensembles import video_io\n"
                     "    from .missing import y\n    from transformers import AutoModel\n")
    assert deployable.foreign_imports(model, deployable.image_modules()) == [
        "torch (line 8)", "tritonrepo.ensembles (line 9)", ".missing (line 10)", "transformers (line 11)"]


def test_every_python_model_ships_what_it_imports_and_needs_only_the_images_packages(tmp_path):
    placed = install_python_models(tmp_path, families.all_specs())
    allowed = deployable.image_modules()
    assert {p.name for p in placed} >= {"model.py", "dali.py", "pair_encoding.py", "video_io.py", "shot_tracker.py"}
    for source in tmp_path.glob("*/1/*.py"):
        assert deployable.foreign_imports(source, allowed) == [], source
    assert server_side_modules("video_shots") == ["video_shots", "video_io", "parameters", "shot_tracker",
                                                 "video_decode_dali"]
    assert "torch_encoder" not in {s.python_model for s in families.all_specs() if isinstance(s, ModelSpec)}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_an_unbuilt_repository_is_reported_by_model_target_and_path(tmp_path, target):
    render.write(tmp_path, families.all_specs())
    findings = deployable.check(tmp_path, target)
    assert {f.model for f in findings} == {s.name for s in families.all_specs()}  # no version folders yet
    assert all(f.level == "error" and f.message.startswith(f"target {target}: no version folder") for f in findings)
    install_python_models(tmp_path, families.all_specs())
    for spec in families.all_specs():
        (tmp_path / spec.name / "1").mkdir(parents=True, exist_ok=True)
    missing = {(f.model, f.where) for f in deployable.check(tmp_path, target)}
    assert {("sbert_encoder", "sbert_encoder/1/model.fp32.onnx"), ("ner_decoder", "ner_decoder/1/labels.json"),
            ("sbert_tokenizer", "sbert_tokenizer/1/tokenizer.json"), ("transnetv2", "transnetv2/1/model.fp32.onnx")
            } <= missing
    assert not any(m in {"sbert", "ner", "rerank"} for m, _ in missing)  # ensembles name no file
    assert ("video_decode", "video_decode/1/dali.py") not in missing


def test_backends_outside_the_ngc_image_and_plans_on_cpu_instances_are_errors(tmp_path):
    spec = families.spec("sbert_encoder")
    cfg = render.model_config(spec, "a10g")
    cfg.platform = "tensorrt_plan"
    cfg.default_model_filename = "model.plan"
    cfg.instance_group[0].kind = cfg.instance_group[0].KIND_CPU
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.plan").write_bytes(b"")
    (tmp_path / "m" / "config.pbtxt").write_text(render.to_text(cfg, "a10g"))
    messages = [f.message for f in deployable.check(tmp_path, "a10g")]
    assert any("TensorRT plan on instances that are not KIND_GPU" in m for m in messages)
    assert any("GPU execution accelerator on instances that are not KIND_GPU" in m for m in messages)
    cfg.ClearField("platform")
    cfg.backend = "vllm"
    (tmp_path / "m" / "config.pbtxt").write_text(render.to_text(cfg, "a10g"))
    assert any("'vllm' is not in the NGC 24.10 image" in f.message for f in deployable.check(tmp_path, "a10g"))


def test_gpu_targets_name_only_what_a_cpu_build_makes():
    """The fp32 encoders run their validated ONNX graph through ONNX Runtime's TensorRT provider; TransNetV2 its fp32
    graph on ONNX Runtime's CUDA provider: nothing a GPU target names is built only on a GPU."""
    for spec in (s for s in families.all_specs() if isinstance(s, ModelSpec)):
        for target in GPU_TARGETS:
            names = deployable.named_files(render.model_config(spec, target), target)
            assert not [n for n in names if n.endswith(".plan") or "fp16" in n], (spec.name, target, names)
