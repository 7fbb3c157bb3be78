"""On a GPU host with TensorRT 10 (`pip install tensorrt-cu12==10.5.*`): the text encoders' plans for this GPU's
target build from the validated ONNX files and pass their gates against ONNX Runtime fp32. Skips without a GPU
(conftest hook) or without TensorRT."""

import pytest

from tritonrepo.targets import GPU_TARGETS, TARGETS

pytestmark = pytest.mark.gpu


def test_plans_for_this_gpu_build_and_pass_their_gates(sbert_artifacts, ner_export, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt")
    torch = pytest.importorskip("torch")
    from tritonrepo.export import tensorrt

    cc = "{}.{}".format(*torch.cuda.get_device_capability())
    target = next((t for t in GPU_TARGETS if TARGETS[t].compute_capability == cc), None)
    if target is None:
        pytest.skip(f"no target for compute capability {cc}")
    monkeypatch.setattr(tensorrt, "ARTIFACTS", tmp_path)
    report = tensorrt.export_plans(target, sources={"sbert_encoder": sbert_artifacts / "model.fp32.onnx",
                                                    "ner_encoder": ner_export.out_dir / "model.fp32.onnx"})
    assert set(report) == set(tensorrt.PLANNED)
    assert all((tmp_path / target / m / TARGETS[target].plan_filename).exists() for m in report)
