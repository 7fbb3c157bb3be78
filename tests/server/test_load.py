"""The locust load test against the real server: headless, bounded, per-model rows, targets checked."""

import pytest

from tritonrepo.perf import load

pytestmark = pytest.mark.server


def test_locust_run_reports_each_model_and_flags_missed_targets(triton, tmp_path):
    result = load.run(triton.grpc_url, p95_targets={"ner_int8": 60_000, "sbert_int8": 0.001},
                      mix="ner_int8=3,sbert_int8=1", out_dir=tmp_path, users=4, duration_s=6)
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"ner_int8", "sbert_int8"}
    assert all(r["requests"] > 0 and r["failures"] == 0 for r in rows.values())
    assert rows["ner_int8"]["requests"] > rows["sbert_int8"]["requests"]  # the 3:1 mix
    assert result["missed"] == [f"sbert_int8: p95 {rows['sbert_int8']['p95_ms']:.0f} ms > target 0.001 ms"]
    assert (tmp_path / "load.html").exists()


def test_slo_file_gives_targets_and_mix():
    p95, mix = load.targets(load.LOCUSTFILE.parent / "slos" / "example.yaml")
    assert p95 == {"ner_int8": 30.0, "sbert_int8": 100.0} and mix == "ner_int8=2500,sbert_int8=800"
