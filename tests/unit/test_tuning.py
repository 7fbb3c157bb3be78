"""Tuned configs come from measured sweeps through the specs: record, load, apply, and the committed files agree
with the profiles they name."""

import json

from tritonrepo import tuning
from tritonrepo.export import families
from tritonrepo.paths import ROOT
from tritonrepo.perf.profile_file import Profile
from tritonrepo.perf.sweep import record_best
from tritonrepo.tuning import Variant
from tritonrepo.tuning import with_tuning


def _profile(best_variant: Variant, target="cpu", swept="sbert_encoder_int8"):
    other = Variant(instances=1, max_queue_delay_us=500)
    variants = [{"variant": v.name, "config": v.to_dict(), "rows": []} for v in (other, best_variant)]
    return Profile.from_dict({
        "swept": swept, "target": target, "p95_bound_ms": 50, "gain_vs_untuned": 1.7, "variants": variants,
        "best": {"variant": best_variant.name, "infer_per_s": 400.0, "p95_ms": 40.0},
        "provenance": {"machine": {"cpu": "Test", "cores": 2}, "date": "2026-11-26"}})


def test_recorded_best_variant_is_applied_over_the_spec_defaults(tmp_path):
    best = Variant(instances=3, max_queue_delay_us=250, parameters=(("intra_op_threads", "2"),))
    path = record_best(_profile(best), tmp_path / "p.json", folder=tmp_path)
    assert path == tmp_path / "cpu.json" and json.loads(path.read_text())["sbert_encoder_int8"]["infer_per_s"] == 400
    loaded = tuning.load(tmp_path)
    assert loaded == {"cpu": {"sbert_encoder_int8": best}}
    specs = {s.name: s for s in with_tuning(families.all_specs(), loaded)}
    dep = specs["sbert_encoder_int8"].deployment("cpu")
    assert dep.count == 3 and dep.batching.max_queue_delay_us == 250 and dict(dep.parameters)["intra_op_threads"] == "2"
    assert dict(dep.parameters)["sort_by_length"] == "true"  # untouched spec parameters stay
    assert specs["sbert_encoder_int8"].deployment("t4") == families.spec("sbert_encoder_int8").deployment("t4")


def test_committed_tuned_entries_are_the_best_variants_of_their_profiles():
    for path in (ROOT / "perf" / "tuned").glob("*.json"):
        for model, entry in json.loads(path.read_text()).items():
            profile = json.loads((ROOT / entry["profile"]).read_text())
            assert profile["swept"] == model and profile["target"] == path.stem
            best = next(v for v in profile["variants"] if v["variant"] == profile["best"]["variant"])
            assert Variant.from_dict(best["config"]) == Variant.from_dict(entry["variant"])
            assert families.spec(model).deployment(path.stem).count == entry["variant"]["instances"]
