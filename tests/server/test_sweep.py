"""A short real sweep: variants loaded into a running Triton through the repository API, perf_analyzer on real
sentences, a profile with provenance."""

import json

import pytest
import tritonclient.grpc as grpcclient

from tritonrepo.perf import sweep
from tritonrepo.server import TritonServer

pytestmark = pytest.mark.server


def test_short_sweep_writes_a_profile(model_repository, tmp_path):
    variants = (sweep.Variant(instances=1, max_queue_delay_us=0),
                sweep.Variant(instances=2, max_queue_delay_us=500, parameters=(("intra_op_threads", "1"),)))
    plan = sweep.SweepPlan(swept="sbert_encoder_int8", entry="sbert_int8", input_tensor="TEXT",
                           inputs="conll-test-sentences", variants=variants, concurrencies=(1, 2), p95_bound_ms=500,
                           rate_fractions=(0.5,))
    profile = sweep.run("test", plan=plan, repository=model_repository, out_dir=tmp_path, measurement_ms=800)
    saved = json.loads((tmp_path / "cpu" / "sbert_int8.json").read_text())
    assert saved["provenance"]["machine"]["cores"] and saved["provenance"]["triton"] == "2.51.0"
    assert [v["variant"] for v in saved["variants"]] == ["i1-d0", "i2-d500-intra_op_threads=1"]
    # two closed-loop rows, then one Poisson row at half the best closed-loop throughput
    assert all(len(v["rows"]) == 3 and v["rows"][0]["infer_per_s"] > 0 for v in saved["variants"])
    for v in saved["variants"]:
        closed = sweep.best([{"variant": v["variant"], "rows": v["rows"][:2]}], 500)["infer_per_s"]
        assert v["rows"][2]["request_rate"] == pytest.approx(round(0.5 * closed, 1))
        assert v["rows"][2]["concurrency"] == 0 and v["rows"][2]["infer_per_s"] > 0
    assert profile["best"]["variant"] in {"i1-d0", "i2-d500-intra_op_threads=1"}


def test_variant_is_really_loaded(model_repository, tmp_path):
    plan = sweep.PLANS["sbert_int8"]
    variant = sweep.Variant(instances=2, max_queue_delay_us=4000)
    with TritonServer(model_repository, explicit_models=["*"], log_file=tmp_path / "log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        client.load_model(plan.swept, config=sweep.variant_config(plan, variant, "cpu"))
        cfg = client.get_model_config(plan.swept).config
        assert cfg.instance_group[0].count == 2
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 4000
        client.close()
