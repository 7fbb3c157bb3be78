"""On a GPU host with TensorRT 10 (`pip install tensorrt-cu12==10.5.*`): the text encoders' plans for this GPU's
target build from the built repository's validated ONNX files, pass their gates against ONNX Runtime fp32, and only
then become the target's configs, in a copy of the repository. Skips without a GPU (conftest hook) or TensorRT."""

import pytest

from tritonrepo import deployable
from tritonrepo.targets import GPU_TARGETS, TARGETS

pytestmark = pytest.mark.gpu


def test_plans_for_this_gpu_build_pass_their_gates_and_switch_the_configs(model_repository, tmp_path):
    pytest.importorskip("tensorrt")
    torch = pytest.importorskip("torch")
    from tritonrepo.export import tensorrt

    cc = "{}.{}".format(*torch.cuda.get_device_capability())
    target = next((t for t in GPU_TARGETS if TARGETS[t].compute_capability == cc), None)
    if target is None:
        pytest.skip(f"no target for compute capability {cc}")
    out = tmp_path / "repository"
    report = tensorrt.export_plans(target, model_repository, out)
    assert set(report) == set(tensorrt.PLANNED)
    for model in report:
        assert (out / model / "1" / TARGETS[target].plan_filename).exists()
        assert 'platform: "tensorrt_plan"' in (out / model / "configs" / f"{target}.pbtxt").read_text()
    assert not deployable.check(out, target)
