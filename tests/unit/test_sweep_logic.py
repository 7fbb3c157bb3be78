import dataclasses
import json

from tritonclient.grpc import model_config_pb2 as mc
from google.protobuf import json_format

import pytest

from perf_rows import perf_row
from tritonrepo.export import families
from tritonrepo.perf.profile_file import Best, Swept
from tritonrepo.perf.sweep import PLANS, Variant, best, capacity_search, rate_candidates, variant_config


def test_variant_changes_only_what_it_names():
    dep = families.spec("sbert_encoder_int8").deployment("cpu")
    v = Variant(instances=3, max_queue_delay_us=250, parameters=(("intra_op_threads", "2"),))
    got = v.apply(dep)
    assert got.count == 3 and got.batching.max_queue_delay_us == 250
    assert got.batching.max_batch_size == dep.batching.max_batch_size
    assert dict(got.parameters) == dict(dep.parameters) | {"intra_op_threads": "2"}
    assert v.name == "i3-d250-intra_op_threads=2"


def test_variant_config_is_the_json_the_load_api_takes():
    plan = PLANS["sbert_int8"]
    v = Variant(instances=2, max_queue_delay_us=4000, max_batch_size=64)
    cfg = json_format.Parse(variant_config(plan, v, "cpu"), mc.ModelConfig())
    assert cfg.name == "sbert_encoder_int8" and cfg.backend == "python"
    assert cfg.instance_group[0].count == 2 and cfg.max_batch_size == 64
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 4000
    assert json.loads(variant_config(plan, v, "cpu"))["max_batch_size"] == 64


def test_preferred_batch_sizes_are_a_sweep_axis():
    plan = PLANS["sbert_int8"]
    v = Variant(instances=2, max_queue_delay_us=2000, preferred_batch_sizes=(16, 32),
                parameters=(("intra_op_threads", "1"),))
    assert v.name == "i2-d2000-p16,32-intra_op_threads=1" and v in plan.variants
    cfg = json_format.Parse(variant_config(plan, v, "cpu"), mc.ModelConfig())
    assert list(cfg.dynamic_batching.preferred_batch_size) == [16, 32]
    assert json.loads(json.dumps(v.to_dict())) == v.to_dict()  # as profiles and perf/tuned/ store it
    assert Variant.from_dict(v.to_dict()) == v
    kept = Variant(instances=1, max_queue_delay_us=0).apply(families.spec("sbert_encoder").deployment("t4"))
    assert kept.batching.preferred_batch_sizes == families.spec("sbert_encoder").deployment("t4").batching \
        .preferred_batch_sizes  # None keeps the spec's


def test_best_is_the_highest_throughput_within_the_p95_bound():
    def variants(*extra):
        return [Swept("a", (perf_row(concurrency=1, infer_per_s=100, p95_ms=10),
                            perf_row(concurrency=8, infer_per_s=400, p95_ms=120))),
                Swept("b", (perf_row(concurrency=1, infer_per_s=90, p95_ms=12),
                            perf_row(concurrency=8, infer_per_s=300, p95_ms=80), *extra))]

    assert best(variants(), 100) == Best(variant="b", concurrency=8, request_rate=0.0, load="c8", infer_per_s=300,
                                         p95_ms=80)
    assert best(variants(), 5) is None
    poisson = {"request_rate": 350, "infer_per_s": 349, "p95_ms": 90}
    assert best(variants(perf_row(**poisson)), 100).load == "c8"  # sent by perf_analyzer's sync workers: not open loop
    poisson["open_loop"] = True
    assert best(variants(perf_row(**poisson)), 100).load == "poisson 350/s"  # open-loop rows count too
    poisson["infer_per_s"] = 250  # ... when the server took the rate offered
    assert best(variants(perf_row(**poisson)), 100).load == "c8"
    poisson.update(request_rate=260, infer_per_s=258)  # and come first: what independent users get
    assert best(variants(perf_row(**poisson)), 100).load == "poisson 260/s"


def _server(capacity: float, runs: list):
    """A server that holds the p95 bound up to ``capacity`` arrivals/s and delivers what it is offered."""
    def measure(rate):
        runs.append(rate)
        return perf_row(request_rate=rate, infer_per_s=min(rate, capacity * 1.1), open_loop=True,
                        p95_ms=20.0 if rate <= capacity else 400.0)
    return measure


@pytest.mark.parametrize("capacity, closed_best, saturation", [(300, 400, 450), (80, 400, 450), (520, 400, 600),
                                                                (1000, 400, 450)])
def test_capacity_search_finds_the_highest_rate_within_the_bound(capacity, closed_best, saturation):
    runs = []
    found = capacity_search(_server(capacity, runs), closed_best, saturation, 100, probes=6)
    assert found <= capacity and found <= saturation and len(runs) <= 6
    assert runs[0] == 0.75 * closed_best and max(runs) <= saturation
    if capacity < saturation:  # bracketed to within 5%, or within 10% when the probes ran out first
        assert found >= (0.95 if len(runs) < 6 else 0.9) * capacity
    else:
        assert found == saturation  # no arrival rate beats the closed loop's saturation
    assert capacity_search(_server(capacity, []), closed_best, saturation, 100, probes=0) == 0


def test_capacity_search_counts_failed_and_undelivered_rates_as_failures():
    assert capacity_search(lambda rate: None, 100, 120, 50, probes=3) == 0
    late = lambda rate: perf_row(request_rate=rate, infer_per_s=rate * 0.7, open_loop=True, p95_ms=10)
    assert capacity_search(late, 100, 120, 50, probes=3) == 0  # the server fell behind: the p95 means nothing


def test_rates_are_searched_for_the_top_variants_and_the_untuned_config():
    def result(name, tput, p95=10):
        return Swept(name, (perf_row(concurrency=4, infer_per_s=tput, p95_ms=p95),))

    plan = dataclasses.replace(PLANS["ner_int8"], rate_variants=2)
    results = [result("untuned", 50), result("a", 300), result("b", 200), result("c", 250), result("d", 900, p95=99)]
    assert rate_candidates(results, plan) == ["a", "c", "untuned"]  # d is outside the 30 ms bound
    assert rate_candidates(results, dataclasses.replace(plan, rate_probes=0)) == []


def test_every_plan_sweeps_a_real_step_of_its_entry():
    for name, plan in PLANS.items():
        entry = families.spec(plan.entry)
        # an ensemble's steps, the models a BLS entry calls (named in its parameters), or the model itself
        called = ({s.model for s in entry.steps} if hasattr(entry, "steps")
                  else set(dict(entry.deployment("cpu").parameters).values()) | {entry.name})
        assert plan.swept in called, name
        tensors = (plan.input_tensor,) if isinstance(plan.input_tensor, str) else plan.input_tensor
        assert set(tensors) <= set(entry.input_names), name


def test_video_inputs_are_whole_files_in_base64(tmp_path):
    import base64
    import json

    from tritonrepo.perf.sweep import write_inputs

    data = json.loads(write_inputs(PLANS["video_shots"], tmp_path / "in.json").read_text())["data"]
    blob = base64.b64decode(data[0]["VIDEO"]["b64"])
    assert data[0]["VIDEO"]["shape"] == [len(blob)] and blob[4:8] == b"ftyp"  # an MP4 file, as sent


def test_untuned_variant_turns_dynamic_batching_off():
    from tritonrepo.perf.sweep import UNTUNED

    plan = PLANS["sbert_int8"]
    assert plan.variants[0] is UNTUNED
    cfg = json_format.Parse(variant_config(plan, UNTUNED, "cpu"), mc.ModelConfig())
    assert not cfg.HasField("dynamic_batching") and cfg.instance_group[0].count == 1
    assert cfg.parameters["sort_by_length"].string_value == "false"


def test_rerank_inputs_are_real_pairs_with_both_tensors(tmp_path):
    import json

    from tritonrepo.perf.sweep import write_inputs

    data = json.loads(write_inputs(PLANS["rerank_int8"], tmp_path / "in.json", limit=50).read_text())["data"]
    assert len(data) == 50 and set(data[0]) == {"QUERY", "PASSAGE"}
    assert data[0]["QUERY"]["shape"] == [1] and len(data[0]["PASSAGE"]["content"][0]) > 100
