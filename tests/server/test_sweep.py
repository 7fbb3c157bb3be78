"""A short real sweep: variants loaded into a running Triton through the repository API, perf_analyzer on real
sentences, a profile with provenance."""

import dataclasses
import json

import pytest
import tritonclient.grpc as grpcclient

from tritonrepo.perf import profile_file, sweep
from tritonrepo.server import TritonServer

pytestmark = pytest.mark.server


def test_short_sweep_writes_a_profile(model_repository, tmp_path):
    variants = (sweep.Variant(instances=1, max_queue_delay_us=0),
                sweep.Variant(instances=2, max_queue_delay_us=500, parameters=(("intra_op_threads", "1"),)))
    plan = sweep.SweepPlan(swept="sbert_encoder_int8", entry="sbert_int8", input_tensor="TEXT",
                           inputs="conll-test-sentences", variants=variants, concurrencies=(1, 2), p95_bound_ms=500,
                           rate_probes=2, rate_variants=1)
    profile, path = sweep.run("test", plan=plan, repository=model_repository, out_dir=tmp_path, measurement_ms=800)
    assert path == tmp_path / "cpu" / "sbert_int8.json" and profile_file.read(path) == profile
    assert json.loads(path.read_text())["schema"] == profile_file.SCHEMA
    assert profile.machine["cores"] and profile.provenance["triton"] == "2.51.0"
    assert [v.variant for v in profile.variants] == ["i1-d0", "i2-d500-intra_op_threads=1"]
    assert all(v.rows[0].infer_per_s > 0 for v in profile.variants)
    closed = {v.variant: sweep.best([dataclasses.replace(v, rows=v.rows[:2])], 500).infer_per_s
              for v in profile.variants}
    top = max(closed, key=closed.get)
    for v in profile.variants:  # two closed-loop rows each; then the top variant's open-loop capacity search
        poisson = v.rows[2:]
        assert [r.concurrency for r in v.rows[:2]] == [1, 2]
        if v.variant != top:
            assert not poisson
            continue
        assert 1 <= len(poisson) <= 2 and all(r.open_loop and r.concurrency == 0 for r in poisson)
        assert poisson[0].request_rate == pytest.approx(round(0.75 * closed[top], 1))
    assert profile.best.variant in closed


def test_variant_is_really_loaded(model_repository, tmp_path):
    plan = sweep.PLANS["sbert_int8"]
    variant = sweep.Variant(instances=2, max_queue_delay_us=4000)
    with TritonServer(model_repository, explicit_models=["*"], log_file=tmp_path / "log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        client.load_model(plan.swept, config=sweep.variant_config(plan, variant, "cpu"), headers=server.admin_headers)
        cfg = client.get_model_config(plan.swept).config
        assert cfg.instance_group[0].count == 2
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 4000
        client.close()


def test_encoder_sweep_sends_what_the_tokenizer_would(model_repository, tmp_path):
    """The encoder alone (the plan Model Analyzer is compared on): its token-id inputs are the tokenizer model's
    output for the same sentences, and perf_analyzer drives it."""
    import numpy as np

    from tritonrepo.datasets import conll_sentences

    plan = sweep.PLANS["sbert_encoder_int8"]
    data = json.loads(sweep.write_inputs(plan, tmp_path / "in.json", limit=20, repository=model_repository)
                      .read_text())["data"]
    with TritonServer(model_repository, model_config_name="cpu", explicit_models=["sbert_tokenizer"],
                      log_file=tmp_path / "log") as server, grpcclient.InferenceServerClient(server.grpc_url) as c:
        for text, row in zip(conll_sentences("test")[:20], data):
            text_in = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
            text_in.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
            out = c.infer("sbert_tokenizer", [text_in])
            assert out.as_numpy("input_ids")[0].tolist() == row["input_ids"]["content"]
            assert out.as_numpy("attention_mask")[0].tolist() == row["attention_mask"]["content"]
    short = dataclasses.replace(plan, variants=plan.variants[:1], concurrencies=(2,), rate_probes=0)
    profile, _ = sweep.run("sbert_encoder_int8", plan=short, repository=model_repository, out_dir=tmp_path,
                           measurement_ms=800)
    assert profile.best.infer_per_s > 0 and profile.variants[0].variant == "untuned"
