"""The GPU profile pack (perf/gpu_profile.py): the stand-in encoder config it sweeps, how its profiles are labelled,
and what the rest of the tooling does with them."""

import json

import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from tritonrepo.export import families
from tritonrepo.paths import ROOT
from tritonrepo.perf import gpu_profile, planner, profile_file, sweep
from tritonrepo.perf.sweep import variant_config


def _config(plan, variant) -> mc.ModelConfig:
    return json_format.Parse(variant_config(plan, variant, gpu_profile.TARGET), mc.ModelConfig())


@pytest.mark.parametrize("name", gpu_profile.MODELS)
def test_the_encoder_runs_in_pytorch_on_the_gpu_with_the_targets_batching(name, tmp_path):
    plan = gpu_profile.plan(name, tmp_path / "inputs.json")
    deployed = families.spec(plan.swept).deployment(gpu_profile.TARGET)
    assert plan.inputs == f"file:{tmp_path / 'inputs.json'}" and plan.spec.name == plan.swept
    for variant in plan.variants:
        cfg = _config(plan, variant)
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        assert cfg.backend == "python" and not cfg.platform
        assert plan.spec.python_model == "torch_encoder" and params["torch_dtype"] == "float16"
        assert params["random_weights"] == "true" and params["torch_device"] == ""
        assert [g.kind for g in cfg.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        assert cfg.max_batch_size == deployed.batching.max_batch_size
        assert all(i.allow_ragged_batch for i in cfg.input)  # the Python model pads ragged rows itself
    assert not _config(plan, plan.variants[0]).HasField("dynamic_batching")  # the untuned starting point


def test_fallbacks_keep_the_model_on_the_gpu_or_rehearse_on_the_cpu(tmp_path):
    cpu_instances = gpu_profile.plan("ner", tmp_path / "x.json", gpu_instances=False)
    cfg = _config(cpu_instances, cpu_instances.variants[1])
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and params["torch_device"] == "cuda:0"
    rehearsal = gpu_profile.plan("ner", tmp_path / "x.json", gpu=False)
    cfg = _config(rehearsal, rehearsal.variants[1])
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and params["torch_dtype"] == "float32"
    assert params["torch_device"] == ""


@pytest.mark.parametrize("gpu, folder", [("NVIDIA H200, 580.159.04, 143771 MiB", "h200"),
                                         ("NVIDIA H100 80GB HBM3, 580.159.04, 81559 MiB", "h100"),
                                         ("NVIDIA A100-SXM4-40GB, 550.54, 40960 MiB", "a100"),
                                         ("NVIDIA A10G, 535.1, 23028 MiB", "a10g"), ("Tesla T4, 535.1, 15360 MiB", "t4"),
                                         ("NVIDIA L40S, 550.1, 46068 MiB", "l40s"), ("NVIDIA GeForce RTX 4090", "gpu")])
def test_profiles_go_to_the_folder_the_catalog_names_for_the_gpu(gpu, folder):
    assert gpu_profile.hardware_of(gpu) == folder
    catalog = {i.profile for i in planner.load_catalog()}
    assert folder in catalog or folder == "gpu"


@pytest.mark.parametrize("folder, gpu", [("h100", "H100"), ("h200", "H200")])
def test_committed_gpu_profiles_are_labelled_stand_ins_that_perf_apply_refuses(folder, gpu, tmp_path):
    paths = sorted((ROOT / "perf" / "profiles" / folder).glob("*.json"))
    assert {p.stem for p in paths} == set(gpu_profile.MODELS), f"every text model has a {gpu} profile"
    for path in paths:
        profile = json.loads(path.read_text())
        assert gpu in profile["provenance"]["machine"]["gpu"] and "PyTorch fp16" in profile["proxy"]
        assert profile["target"] == gpu_profile.TARGET and profile["best"]["infer_per_s"] > 0
        with pytest.raises(ValueError, match="stand-in"):
            sweep.record_best(profile_file.read(path), path, folder=tmp_path)


def test_gpu_types_plan_from_their_gpus_profile_with_the_stand_in_named():
    catalog = {i.name: i for i in planner.load_catalog()}
    slo = planner.ModelSlo(model="sbert", p95_ms=100, peak_rps=100)
    one = planner.capacity(slo, catalog["p5.4xlarge"])  # one H100: the profile as measured
    eight = planner.capacity(slo, catalog["p5.48xlarge"])
    assert isinstance(one, planner.Capacity) and "proxy config" in one.estimate and "GPUs" not in one.estimate
    assert one.load.startswith("poisson")  # open loop: the sweep's Poisson rows are sent with --async now
    assert eight.infer_per_s == pytest.approx(8 * one.infer_per_s) and "x8 for 8 GPUs" in eight.estimate
    p5e = planner.capacity(slo, catalog["p5e.48xlarge"])
    assert isinstance(p5e, planner.Capacity) and "proxy config" in p5e.estimate
