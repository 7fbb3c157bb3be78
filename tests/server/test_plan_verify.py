"""`tritonrepo plan --verify` against the real tritonserver and perf_analyzer, short: a one-model service and a
co-located one, planned from small synthetic profiles (so the searches start where any machine passes), measured,
judged and recorded into the profiles, which the next plan then reads (a capacity range, a joint profile)."""

import json

from typer.testing import CliRunner

from perf_rows import row
from tritonrepo.cli import app
from tritonrepo.perf import planner

VARIANT = "i2-d0-intra_op_threads=1"  # a variant of both sweep plans


def _profile(folder, model, rate):
    closed = row(concurrency=1, infer_per_s=rate, p50_ms=20.0, p95_ms=30.0)
    rate_row = row(request_rate=rate, open_loop=True, infer_per_s=rate, p95_ms=50.0)
    (folder / f"{model}.json").write_text(json.dumps({
        "provenance": {"machine": {"cpu": "test", "cores": 2}},
        "variants": [{"variant": VARIANT, "rows": [closed, rate_row]}]}))


def test_verify_measures_the_plan_and_the_next_plan_reads_the_runs(model_repository, tmp_path):
    profiles = tmp_path / "profiles"
    (profiles / "cpu").mkdir(parents=True)
    _profile(profiles / "cpu", "ner_int8", 30.0)
    _profile(profiles / "cpu", "sbert_int8", 20.0)
    slo = tmp_path / "slo.yaml"
    slo.write_text("headroom: 1.3\nservices:\n"
                   "  - name: one\n    models: {ner_int8: {p95_ms: 2000, peak_rps: 100}}\n"
                   "  - name: two\n    models: {ner_int8: {p95_ms: 2000, peak_rps: 30}, "
                   "sbert_int8: {p95_ms: 2000, peak_rps: 10}}\n")
    out = tmp_path / "verify.json"
    result = CliRunner().invoke(app, ["plan", "--slo", str(slo), "--verify", "--profiles", str(profiles),
                                      "--repository", str(model_repository), "--measurement-ms", "500",
                                      "--probes", "2", "--min-arrivals", "40", "--out", str(out)])
    report = json.loads(out.read_text())
    services = {s["service"]: s for s in report["services"]}
    assert set(services) == {"one", "two"}
    ok = report["passed"] and all(s["meets_slo_at_planned_load"] for s in report["services"])
    assert result.exit_code == (0 if ok else 1), result.output
    for svc in services.values():
        assert svc["capacity_predicted"] > 0 and len(svc["capacity_measured"]) == 1
        assert svc["capacity_measured"][0] > 0  # 2 s targets: the first rate (90% of the prediction) passes
        assert svc["within"] == (abs(svc["capacity_error"]) <= 0.15
                                 and all(abs(m["p95_error"]) <= 0.2 for m in svc["models"]))
        assert all(m["variant"] == VARIANT and len(m["p95_measured_ms"]) == 3 for m in svc["models"])
    assert services["one"]["colocation"] is None and services["two"]["colocation"].startswith("additive")
    assert [m["share"] for m in services["two"]["models"]] == [0.75, 0.25]

    # recorded: the one-model run into the model's profile, the mix into a joint profile; the next plan reads them
    runs = json.loads((profiles / "cpu" / "ner_int8.json").read_text())["capacity_runs"]
    assert len(runs) == 1 and runs[0]["variants"] == {"ner_int8": VARIANT} and runs[0]["capacity"] > 0
    joint = json.loads(planner.joint_path(["ner_int8", "sbert_int8"], "cpu", profiles).read_text())
    assert joint["models"] == ["ner_int8", "sbert_int8"] and len(joint["runs"]) == 1
    _, services_again = planner.load_slos(slo)
    catalog = [i for i in planner.load_catalog() if i.profile == "cpu" and i.gpu is None]
    again = planner.plan(1.3, services_again, catalog, profiles)
    option = again.best("one") or again.unpriced["one"][0]
    assert option.capacities[0].runs == 1  # the recorded run, which supersedes the profile's row
    two = again.best("two") or again.unpriced["two"][0]
    assert two.colocation.startswith("measured: joint profile, 1 run(s)")
