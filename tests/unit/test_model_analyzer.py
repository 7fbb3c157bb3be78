"""Model Analyzer's side of the comparison without running it: its profile config, and importing its CSV export
(the header is what triton-model-analyzer 1.58.0 writes for the fields we ask for) into a profile the planner reads."""

import pytest

from tritonrepo.errors import TritonRepoError
from tritonrepo.perf import model_analyzer as ma
from tritonrepo.perf import planner, sweep

HEADER = ("Model,Batch,Concurrency,Model Config Path,Instance Group,Max Batch Size,Satisfies Constraints,"
          "Throughput (infer/sec),p95 Latency (ms),p99 Latency (ms),p90 Latency (ms),Avg Latency (ms),"
          "Server Queue time (ms),Server Compute Infer time (ms)")
ROWS = [
    "enc,1,4,enc_config_1,1:CPU,2,Yes,150.0,30.0,31.0,29.0,26.1,7.9,17.5",
    "enc,1,8,enc_config_1,1:CPU,2,No,160.0,120.0,130.0,110.0,50.0,30.0,17.5",
    "enc,1,1,enc_config_default,1:CPU,256,Yes,46.6,22.8,23.6,21.9,21.4,0.0,20.8",
    "enc,1,2,enc_config_default,1:CPU,256,Yes,71.6,30.6,32.3,29.4,27.8,13.6,13.6",
    "other,1,2,other_config_0,1:CPU,4,Yes,999.0,1.0,1.0,1.0,1.0,0.0,1.0",
]


def _csv(tmp_path, rows=ROWS, header=HEADER):
    path = tmp_path / "metrics-model-inference.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_import_makes_a_profile_whose_best_respects_the_p95_bound(tmp_path):
    profile = ma.import_csv(_csv(tmp_path), model="enc", target="cpu", p95_bound_ms=100,
                            hardware={"machine": {"cpu": "test", "cores": 2}})
    assert [v.variant for v in profile.variants] == ["enc_config_1", "enc_config_default"]
    assert profile.best.variant == "enc_config_1" and profile.best.infer_per_s == 150.0  # not the c8 row
    assert profile.untuned.infer_per_s == 71.6
    assert profile.variants[0].config == {"instance_group": "1:CPU", "max_batch_size": "2"}
    # the planner reads it like one of ours
    assert planner.best_row(profile, 100)[1].infer_per_s == 150.0
    assert planner.best_row(profile, 25)[1].infer_per_s == 46.6


def test_import_refuses_exports_without_p95_or_for_another_model(tmp_path):
    header = HEADER.replace("p95 Latency (ms),", "")
    rows = [",".join(r.split(",")[:8] + r.split(",")[9:]) for r in ROWS]
    with pytest.raises(TritonRepoError, match=r"no column for \['p95_ms'\]"):
        ma.import_csv(_csv(tmp_path, rows, header), model="enc", target="cpu", p95_bound_ms=100)
    with pytest.raises(TritonRepoError, match="no rows for model 'missing'"):
        ma.import_csv(_csv(tmp_path), model="missing", target="cpu", p95_bound_ms=100)


def test_profile_config_runs_its_default_search_under_our_p95_bound(tmp_path):
    plan = sweep.PLANS["sbert_encoder_int8"]
    config = ma.profile_config(plan, tmp_path / "repo", tmp_path / "inputs.json", tmp_path)
    model = config["profile_models"]["sbert_encoder_int8"]
    assert model["cpu_only"] and model["constraints"] == {"perf_latency_p95": {"max": 100}}
    assert model["perf_analyzer_flags"]["input-data"].endswith("inputs.json")
    assert config["triton_launch_mode"] == "local" and "run_config_search_mode" not in config  # its default: brute
    assert {"perf_throughput", "perf_latency_p95"} <= set(config["inference_output_fields"])


def test_ensembles_are_refused_for_the_default_search(tmp_path):
    with pytest.raises(TritonRepoError, match="sbert_int8 is an ensemble"):
        ma._repository(sweep.PLANS["sbert_int8"], "cpu", tmp_path)


def test_import_command_writes_a_profile_with_the_given_hardware(tmp_path):
    from typer.testing import CliRunner

    from tritonrepo.cli import app

    out = CliRunner().invoke(app, ["perf", "import-model-analyzer", str(_csv(tmp_path)), "--model", "enc",
                                   "--hardware", "t4", "--p95-bound-ms", "100", "--gpu", "T4", "--cores", "4",
                                   "--out-dir", str(tmp_path / "profiles")])
    assert out.exit_code == 0, out.output
    profile = planner.load_profile("enc", "t4", tmp_path / "profiles")
    assert profile.machine == {"cpu": "unknown", "cores": 4, "gpu": "T4"}
    assert profile.best.infer_per_s == 150.0
