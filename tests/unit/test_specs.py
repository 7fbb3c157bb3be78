import dataclasses

import pytest

from tritonrepo.errors import SpecError
from tritonrepo.export import families
from tritonrepo.specs import (
    Backend, Batching, Deployment, EnsembleSpec, InputLimits, Kind, ModelSpec, Step, Tensor, TensorRTAccelerator,
    check_repository,
)
from tritonrepo.targets import TARGETS

X = Tensor(name="X", dtype="FP32", dims=(4,))
Y = Tensor(name="Y", dtype="FP32", dims=(4,))


def cpu(**kw) -> Deployment:
    return Deployment(backend=Backend.PYTHON, batching=Batching(max_batch_size=8), **kw)


def spec(name="toy", **kw) -> ModelSpec:
    deployments = kw.pop("deployments", {t: cpu() for t in TARGETS})
    return ModelSpec(name=name, inputs=(X,), outputs=(Y,), deployments=deployments, python_model="toy", **kw)


def test_real_specs_are_consistent():
    check_repository(families.all_specs())


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec().name = "other"


@pytest.mark.parametrize("bad, field", [
    (dict(max_batch_size=0, dynamic=True), "batching.dynamic"),
    (dict(max_batch_size=8, preferred_batch_sizes=(16,)), "preferred_batch_sizes"),
    (dict(max_batch_size=8, preferred_batch_sizes=(4, 2)), "preferred_batch_sizes"),
    (dict(max_batch_size=-1, dynamic=False), "max_batch_size"),
    (dict(max_batch_size=8, dynamic=False, max_queue_delay_us=100), "batching"),
    (dict(max_batch_size=8, dynamic=False, queue_timeout_us=100), "batching"),
    (dict(max_batch_size=8, max_queue_size=-1), "batching"),
])
def test_impossible_batching_names_model_and_field(bad, field):
    deployments = {t: Deployment(backend=Backend.PYTHON, batching=Batching(**bad)) for t in TARGETS}
    with pytest.raises(SpecError, match=rf"model 'toy@cpu', field '{field}"):
        spec(deployments=deployments)


def test_gpu_instances_on_the_cpu_target_are_rejected():
    deployments = {t: cpu() for t in TARGETS} | {"cpu": cpu(kind=Kind.GPU)}
    with pytest.raises(SpecError, match="toy@cpu.*KIND_GPU"):
        spec(deployments=deployments)


def test_ragged_batching_only_for_python_models():
    native = Deployment(backend=Backend.ONNXRUNTIME, kind=Kind.GPU, ragged_batching=True,
                        batching=Batching(max_batch_size=8))
    with pytest.raises(SpecError, match="ragged_batching"):
        spec(deployments={t: cpu() for t in TARGETS} | {"t4": native})


@pytest.mark.parametrize("policy", [dict(max_queue_size=64), dict(queue_timeout_us=50_000)])
def test_one_instance_behind_a_queue_policy_is_refused(policy):
    """Triton's batcher can miss the one instance freeing up under a queue policy (specs.ONE_INSTANCE_QUEUE)."""
    bounded = Batching(max_batch_size=8, **policy)
    with pytest.raises(SpecError, match="toy@cpu.*needs 2 or more instances"):
        spec(deployments={t: cpu() for t in TARGETS} | {"cpu": dataclasses.replace(cpu(), batching=bounded)})
    spec(deployments={t: cpu() for t in TARGETS} | {"cpu": dataclasses.replace(cpu(count=2), batching=bounded)})


def test_a_one_instance_variant_drops_the_queue_bound_it_could_not_keep():
    from tritonrepo.tuning import Variant

    dep = families.spec("sbert_encoder_int8").deployment("cpu")
    assert dep.count == 2 and dep.batching.max_queue_size
    assert Variant(instances=1, max_queue_delay_us=0).apply(dep).batching.max_queue_size == 0
    assert Variant(instances=2, max_queue_delay_us=0).apply(dep).batching.max_queue_size == dep.batching.max_queue_size


def test_every_target_needs_a_deployment():
    with pytest.raises(SpecError, match=r"missing targets \['a100'"):
        spec(deployments={t: cpu() for t in TARGETS if t != "a100"})


def test_bad_tensors_are_rejected():
    with pytest.raises(SpecError, match="dtype 'FLOAT32'"):
        Tensor(name="X", dtype="FLOAT32", dims=(1,))
    with pytest.raises(SpecError, match="dims"):
        Tensor(name="X", dtype="FP32", dims=(0,))
    with pytest.raises(SpecError, match="duplicate tensor names"):
        ModelSpec(name="dup", inputs=(X,), outputs=(X,), deployments={t: cpu() for t in TARGETS}, python_model="m")


def _ensemble(steps, outputs=(Y,), max_batch_size=4):
    return EnsembleSpec(name="ens", inputs=(X,), outputs=outputs, steps=steps, max_batch_size=max_batch_size)


def test_ensemble_wiring_errors_name_the_step():
    inner = spec()
    with pytest.raises(SpecError, match="unknown model 'nope'"):
        check_repository([inner, _ensemble((Step(model="nope", input_map={"X": "X"}, output_map={"Y": "Y"}),))])
    with pytest.raises(SpecError, match="has no input 'Z'"):
        check_repository([inner, _ensemble((Step(model="toy", input_map={"Z": "X"}, output_map={"Y": "Y"}),))])
    with pytest.raises(SpecError, match="used before any step produces it"):
        check_repository([inner, _ensemble((Step(model="toy", input_map={"X": "W"}, output_map={"Y": "Y"}),))])
    with pytest.raises(SpecError, match="no step produces 'Y'"):
        check_repository([inner, _ensemble((Step(model="toy", input_map={"X": "X"}, output_map={"Y": "Q"}),))])
    with pytest.raises(SpecError, match="max_batch_size 8 < the ensemble's 16"):
        check_repository([inner, _ensemble((Step(model="toy", input_map={"X": "X"}, output_map={"Y": "Y"}),),
                                           max_batch_size=16)])


def test_sequence_batching_and_dali_need_a_batch_dimension():
    from tritonrepo.specs import Sequence

    with pytest.raises(SpecError, match="sequence"):
        Deployment(backend=Backend.PYTHON, batching=Batching(max_batch_size=1), sequence=Sequence()).check("m", "cpu")
    with pytest.raises(SpecError, match="DALI pipelines need max_batch_size"):
        Deployment(backend=Backend.DALI, batching=Batching(max_batch_size=0, dynamic=False)).check("m", "cpu")


def test_response_cache_is_refused_where_a_response_is_not_one_answer():
    from tritonrepo.specs import Sequence

    with pytest.raises(SpecError, match="response_cache"):
        cpu(decoupled=True, response_cache=True).check("m", "cpu")
    seq = Deployment(backend=Backend.PYTHON, batching=Batching(max_batch_size=1, dynamic=False), sequence=Sequence(),
                     response_cache=True)
    with pytest.raises(SpecError, match="response_cache"):
        seq.check("m", "cpu")


def test_the_tensorrt_accelerator_is_for_native_ort_on_gpus_with_a_profile_of_the_inputs():
    acc = TensorRTAccelerator(cache_path="/tmp/trt", profile=(("X", (1, 4), (4, 4), (8, 4)),))
    gpu = Deployment(backend=Backend.ONNXRUNTIME, kind=Kind.GPU, batching=Batching(max_batch_size=8), accelerator=acc)
    spec(deployments={t: gpu if TARGETS[t].is_gpu else cpu() for t in TARGETS})  # accepted
    with pytest.raises(SpecError, match="toy@t4.*accelerator.*onnxruntime_onnx on KIND_GPU"):
        spec(deployments={t: dataclasses.replace(gpu, kind=Kind.CPU) if TARGETS[t].is_gpu else cpu() for t in TARGETS})
    for bad, match in ((dataclasses.replace(acc, profile=(("X", (1, 4), (16, 4), (8, 4)),)), "min <= opt <= max"),
                       (dataclasses.replace(acc, profile=(("X", (1, 4), (4, 4), (16, 4)),)), r"batch sizes .* 1\.\.8"),
                       (dataclasses.replace(acc, cache_path="engines"), "absolute path"),
                       (dataclasses.replace(acc, profile=(("Z", (1, 4), (4, 4), (8, 4)),)), r"profiles \['Z'\]")):
        with pytest.raises(SpecError, match=match):
            spec(deployments={t: dataclasses.replace(gpu, accelerator=bad) if TARGETS[t].is_gpu else cpu()
                              for t in TARGETS})


def test_limits_are_positive_set_once_and_only_on_python_models():
    limited = cpu(limits=InputLimits(max_text_bytes=1024, max_seconds=5))
    assert limited.limits.parameters() == (("max_text_bytes", "1024"), ("max_seconds", "5"))
    spec(deployments={t: limited for t in TARGETS})  # accepted
    with pytest.raises(SpecError, match=r"toy@cpu', field 'limits.max_frames': 0 must be >= 1"):
        spec(deployments={t: cpu() for t in TARGETS} | {"cpu": cpu(limits=InputLimits(max_frames=0))})
    with pytest.raises(SpecError, match=r"field 'parameters': \['max_text_bytes'\] are limits"):
        spec(deployments={t: cpu() for t in TARGETS} | {
            "cpu": cpu(parameters=(("max_text_bytes", "5"),), limits=InputLimits(max_text_bytes=5))})
    dali = Deployment(backend=Backend.DALI, kind=Kind.GPU, batching=Batching(max_batch_size=1, dynamic=False),
                      limits=InputLimits(max_request_bytes=5))
    with pytest.raises(SpecError, match="field 'limits': only Python-backend models read and enforce them"):
        dali.check("m", "t4")


def test_every_model_a_client_can_send_text_or_video_bytes_to_limits_them_server_side():
    """Convention 11: every model a client can call enforces its own input limits (ensembles through their first
    step). The one exception: the GPU targets' DALI video_decode, whose backend reads no parameters."""
    from tritonrepo.added import load_all

    added = {s.name for m in load_all() for s in m.specs()}
    unlimited = []
    for s in families.all_specs():
        if isinstance(s, EnsembleSpec) or s.name in added:
            continue
        text = any(t.dtype == "BYTES" for t in s.inputs)
        video = any(t.dtype == "UINT8" and -1 in t.dims for t in s.inputs)
        for target, dep in s.deployments.items():
            limits = dep.limits
            if (text and not limits.max_text_bytes) or (video and not limits.max_request_bytes):
                unlimited.append(f"{s.name}@{target}")
            if video and dep.backend is Backend.PYTHON:
                assert limits.max_frames and limits.max_pixels and limits.max_seconds, f"{s.name}@{target}"
    assert unlimited == [f"video_decode@{t}" for t in TARGETS if TARGETS[t].is_gpu]
