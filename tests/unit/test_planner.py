"""The capacity planner on synthetic profiles and catalogs: feasibility, cost order, headroom, co-location,
estimates, price-list override, and the no-feasible-option case."""

import json

import pytest

from perf_rows import perf_row, row
from tritonrepo.perf import planner
from tritonrepo.perf.planner import Instance, ModelSlo, PlanError, Service


def _profile(root, hw, model, rows_by_variant, cores=None):
    folder = root / hw
    folder.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": "Test CPU", "cores": cores, "gpu": None if cores else hw}
    variants = [{"variant": v, "rows": [row(concurrency=c, infer_per_s=t, p95_ms=p) for c, t, p in rows]}
                for v, rows in rows_by_variant.items()]
    (folder / f"{model}.json").write_text(json.dumps({"provenance": {"machine": machine}, "variants": variants}))


def _inst(name, price, *, gpu=None, profile=None, vcpus=4, gpu_count=1):
    return Instance(name=name, platform="ec2", vcpus=vcpus, memory_gib=16, gpu=gpu, gpu_count=gpu_count if gpu else 0,
                    profile=profile or (gpu.lower() if gpu else "cpu"), usd_per_hour=price, source="test",
                    source_date="2026-11-26", source_kind="official")


@pytest.fixture
def profiles(tmp_path):
    # cpu measured on 2 vCPUs; t4 measured; a10g measured; nothing for l4
    _profile(tmp_path, "cpu", "m", {"slow": [(1, 50, 10), (4, 100, 40)], "fast": [(1, 80, 8), (4, 150, 25)]}, cores=2)
    _profile(tmp_path, "t4", "m", {"g": [(1, 300, 5), (8, 1000, 20), (16, 1200, 60)]})
    _profile(tmp_path, "a10g", "m", {"g": [(1, 400, 4), (8, 2000, 15)]})
    _profile(tmp_path, "cpu", "e", {"x": [(1, 20, 30), (4, 40, 90)]}, cores=2)
    return tmp_path


def test_capacity_is_the_best_row_within_the_p95_target(profiles):
    cap = planner.capacity(ModelSlo(model="m", p95_ms=30, peak_rps=1), _inst("t", 1, gpu="T4"), profiles)
    assert (cap.infer_per_s, cap.variant, cap.load) == (1000, "g", "c8")
    assert cap.estimate.startswith("closed loop (c8): no open-loop rate measured within p95 30 ms")
    cap = planner.capacity(ModelSlo(model="m", p95_ms=30, peak_rps=1), _inst("c", 1, vcpus=8), profiles)
    assert cap.infer_per_s == 150 * 4 and cap.variant == "fast" and "scaled x4" in cap.estimate


def test_cheapest_feasible_option_wins_and_headroom_raises_the_count(profiles):
    catalog = [_inst("t4box", 0.45, gpu="T4"), _inst("a10gbox", 1.0, gpu="A10G"), _inst("cpu4", 0.2, vcpus=4)]
    svc = [Service(name="s", models=(ModelSlo(model="m", p95_ms=30, peak_rps=1800),))]
    result = planner.plan(1.0, svc, catalog, profiles)  # capacities at p95 <= 30: 1000, 2000, 300 (x2 vCPUs)
    assert [(o.instance.name, o.count) for o in result.options["s"]] == [("t4box", 2), ("a10gbox", 1), ("cpu4", 6)]
    assert result.best("s").usd_per_hour == pytest.approx(0.9)
    assert result.best("s").usd_per_million == pytest.approx(0.9 / (1800 * 3600) * 1e6)
    tight = planner.plan(1.2, svc, catalog, profiles)  # 2160 req/s to provision
    assert [(o.instance.name, o.count) for o in tight.options["s"]] == [("t4box", 3), ("cpu4", 8), ("a10gbox", 2)]


def test_colocated_models_share_instances_in_proportion_to_load(profiles):
    catalog = [_inst("cpu4", 0.2, vcpus=4)]  # m: 300/s at p95<=30 (x2 vCPUs), e: 40/s at p95<=30
    svc = [Service(name="both", models=(ModelSlo(model="m", p95_ms=30, peak_rps=150),
                                        ModelSlo(model="e", p95_ms=30, peak_rps=20)))]
    option = planner.plan(1.0, svc, catalog, profiles).best("both")
    assert option.count == 1 and option.utilisation == pytest.approx(150 / 300 + 20 / 40)
    svc = [Service(name="both", models=(ModelSlo(model="m", p95_ms=30, peak_rps=200),
                                        ModelSlo(model="e", p95_ms=30, peak_rps=30)))]
    assert planner.plan(1.0, svc, catalog, profiles).best("both").count == 2  # 0.67 + 0.75 > 1


def test_infeasible_and_unpriced_types_are_reported_not_guessed(profiles):
    catalog = [_inst("l4box", 0.8, gpu="L4"), _inst("t4free", None, gpu="T4"), _inst("cpu4", 0.2)]
    svc = [Service(name="s", models=(ModelSlo(model="m", p95_ms=3, peak_rps=10),))]
    result = planner.plan(1.0, svc, catalog, profiles)
    assert result.best("s") is None and result.options["s"] == [] and result.unpriced["s"] == []
    assert any("l4box: no measured profile of m on l4" in w for w in result.infeasible["s"])
    assert any("cpu4: no measured config of m meets p95 <= 3 ms" in w for w in result.infeasible["s"])
    ok = planner.plan(1.0, [Service(name="s", models=(ModelSlo(model="m", p95_ms=30, peak_rps=10),))], catalog,
                      profiles)
    assert [o.instance.name for o in ok.unpriced["s"]] == ["t4free"] and ok.best("s").instance.name == "cpu4"


def test_multi_gpu_types_are_labelled_estimates(profiles):
    cap = planner.capacity(ModelSlo(model="m", p95_ms=30, peak_rps=1), _inst("p", 9, gpu="T4", gpu_count=8),
                           profiles)
    assert cap.infer_per_s == 8000 and "x8 for 8 GPUs" in cap.estimate


def test_price_list_overrides_catalog_prices(tmp_path):
    offer = {"publicationDate": "2026-11-01T00:00:00Z",
             "products": {"A": {"attributes": {"instanceType": "g5.xlarge", "operatingSystem": "Linux",
                                               "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}},
                          "B": {"attributes": {"instanceType": "g5.xlarge", "operatingSystem": "Windows",
                                               "tenancy": "Shared", "preInstalledSw": "NA"}}},
             "terms": {"OnDemand": {sku: {"t": {"priceDimensions": {"d": {"pricePerUnit": {"USD": usd}}}}}
                                    for sku, usd in (("A", "1.006"), ("B", "1.9"))}}}
    path = tmp_path / "offer.json"
    path.write_text(json.dumps(offer))
    out = planner.load_price_list(path, [_inst("g5.xlarge", None, gpu="A10G"), _inst("other", 0.3)])
    assert out[0].usd_per_hour == 1.006 and out[0].source_kind == "official" and out[1].usd_per_hour == 0.3


def test_bad_slo_files_name_the_problem(tmp_path):
    path = tmp_path / "slo.yaml"
    path.write_text("headroom: 0.5\nservices: []\n")
    with pytest.raises(PlanError, match="headroom 0.5 must be >= 1"):
        planner.load_slos(path)
    path.write_text("services:\n  - models: {m: {p95_ms: 30}}\n")
    with pytest.raises(PlanError, match=r"services\[0\] needs models"):
        planner.load_slos(path)


def test_committed_catalog_and_example_plan(tmp_path):
    catalog = planner.load_catalog()
    priced = [i for i in catalog if i.usd_per_hour is not None]
    assert priced and all(i.source and i.source_date and i.source_kind for i in priced)
    headroom, services = planner.load_slos(planner.ROOT / "perf" / "slos" / "example.yaml")
    result = planner.plan(headroom, services, catalog)
    report = planner.report(result, services, tmp_path / "plan.md")
    text = report.read_text()
    assert "## search-ner" in text and "estimate:" in text and (tmp_path / "ner_int8-throughput-vs-p95.png").exists()


def test_alternatives_let_the_plan_pick_the_precision_with_more_capacity(profiles, tmp_path):
    _profile(profiles, "cpu", "m_int8", {"q": [(1, 120, 9), (4, 260, 28)]}, cores=2)
    slo = ModelSlo(model="m", p95_ms=30, peak_rps=1, alternatives=("m_int8", "m_missing"))
    cap = planner.capacity(slo, _inst("c", 1, vcpus=2), profiles)
    assert (cap.model, cap.infer_per_s, cap.variant) == ("m_int8", 260, "q")
    assert planner.capacity(ModelSlo(model="m", p95_ms=30, peak_rps=1), _inst("c", 1, vcpus=2), profiles).model == "m"
    why = planner.capacity(ModelSlo(model="m", p95_ms=1, peak_rps=1, alternatives=("m_int8",)), _inst("c", 1),
                           profiles)
    assert isinstance(why, planner.NoCapacity) and "of m meets" in why.reason and "of m_int8 meets" in why.reason
    slo_file = tmp_path / "slo.yaml"
    slo_file.write_text("services:\n  - models:\n      m: {p95_ms: 30, peak_rps: 5, alternatives: [m_int8]}\n")
    _, services = planner.load_slos(slo_file)
    assert services[0].models[0].candidates == ("m", "m_int8")


def test_a_sagemaker_package_is_sized_for_its_own_model_not_an_alternative(profiles, tmp_path):
    from tritonrepo import deploy

    _profile(profiles, "cpu", "m_int8", {"q": [(1, 120, 9), (4, 260, 28)]}, cores=2)
    slo = tmp_path / "slo.yaml"
    slo.write_text("headroom: 1.0\nservices:\n  - name: s\n    models:\n"
                   "      m: {p95_ms: 30, peak_rps: 100, alternatives: [m_int8]}\n")
    placement = deploy.placement_from_plan(slo, "s", profiles)
    instance = {i.name: i for i in planner.load_catalog()}[placement.instance_type]
    own = planner.capacity(ModelSlo(model="m", p95_ms=30, peak_rps=100), instance, profiles)
    assert own.model == "m" and placement.rps_per_instance == pytest.approx(own.infer_per_s)
    _profile(profiles, instance.profile, "m_int8", {"q": [(1, own.infer_per_s * 3, 9)]}, cores=2)  # a better alt
    assert deploy.placement_from_plan(slo, "s", profiles).rps_per_instance == pytest.approx(own.infer_per_s)


def test_open_loop_rows_plan_when_they_qualify_and_only_when_delivered(profiles):
    path = profiles / "t4" / "m.json"
    profile = json.loads(path.read_text())
    rate = row(request_rate=800, infer_per_s=790, p95_ms=25)  # below the closed loop's 1000
    profile["variants"][0]["rows"].append(rate)
    path.write_text(json.dumps(profile))
    t4 = _inst("t", 1, gpu="T4")
    assert planner.capacity(ModelSlo(model="m", p95_ms=30, peak_rps=1), t4, profiles).load == "c8"  # sync workers
    rate["open_loop"] = True
    path.write_text(json.dumps(profile))
    cap = planner.capacity(ModelSlo(model="m", p95_ms=30, peak_rps=1), t4, profiles)
    assert (cap.load, cap.infer_per_s, cap.estimate) == ("poisson 800/s", 790, None)  # what independent users see
    assert planner.capacity(ModelSlo(model="m", p95_ms=20, peak_rps=1), t4, profiles).load == "c8"  # none within
    rate["infer_per_s"] = 600  # the server did not take the rate offered: not that rate's p95
    path.write_text(json.dumps(profile))
    assert planner.capacity(ModelSlo(model="m", p95_ms=30, peak_rps=1), t4, profiles).load == "c8"


def _run(shares, capacity, *, variants, p95, rows=()):
    """A capacity run as perf/capacity.py records it (rows: (total rate, {model: p95 ms}))."""
    return {"shares": shares, "capacity": capacity, "rate": capacity, "p95_ms": p95, "variants": variants,
            "rows": [{"total_rate": r, "ok": True, "models": {m: {"p95_ms": v} for m, v in ps.items()}}
                     for r, ps in rows]}


def test_repeated_capacity_runs_give_a_range_and_the_count_takes_its_low_end(profiles):
    path = profiles / "cpu" / "m.json"
    profile = json.loads(path.read_text())
    profile["capacity_runs"] = [_run({"m": 1.0}, c, variants={"m": "fast"}, p95={"m": 30},
                                     rows=[(60, {"m": 12}), (100, {"m": 20})]) for c in (120, 140)]
    profile["capacity_runs"].append(_run({"m": 1.0}, 10, variants={"m": "slow"}, p95={"m": 30}))  # another config
    path.write_text(json.dumps(profile))
    cap = planner.capacity(ModelSlo(model="m", p95_ms=30, peak_rps=1), _inst("c", 1, vcpus=2), profiles)
    assert (cap.low, cap.high, cap.central, cap.runs, cap.infer_per_s) == (120, 140, 130, 2, 120)  # not the sweep's 150
    svc = [Service(name="s", models=(ModelSlo(model="m", p95_ms=30, peak_rps=260),))]
    option = planner.plan(1.0, svc, [_inst("c", 1, vcpus=2)], profiles).best("s")
    assert option.count == 3 and option.measured_range == pytest.approx((120, 140))  # 260 / 140 would say 2
    svc = [Service(name="s", models=(ModelSlo(model="m", p95_ms=30, peak_rps=160),))]
    option = planner.plan(1.0, svc, [_inst("c", 1, vcpus=2)], profiles).best("s")
    assert option.count == 2 and option.p95_planned == ((16.0, "~"),)  # 80/s: halfway along the runs' rows
    assert planner.p95_at(((60, 12), (100, 20)), 30) == (12, "<=") and planner.p95_at((), 1) is None
    assert planner.p95_at(((60, 12), (80, 9), (100, 20)), 200) == (20, ">=")
    assert planner.p95_at(((60, 12), (80, 9), (100, 20)), 70) == (12, "~")  # noise never lowers the curve


def test_a_joint_profile_at_the_mix_replaces_the_additive_estimate(profiles):
    catalog = [_inst("cpu4", 0.2, vcpus=4)]  # alone: m 300/s, e 40/s at p95 <= 30 (x2 vCPUs)
    svc = [Service(name="both", models=(ModelSlo(model="m", p95_ms=30, peak_rps=150),
                                        ModelSlo(model="e", p95_ms=30, peak_rps=50)))]
    additive = planner.plan(1.0, svc, catalog, profiles).best("both")
    assert additive.count == 2 and additive.colocation.startswith("additive estimate")
    path = planner.joint_path(["m", "e"], "cpu", profiles)
    path.parent.mkdir()
    runs = [_run({"m": 0.74, "e": 0.26}, c, variants={"m": "fast", "e": "x"}, p95={"m": 30, "e": 30},
                 rows=[(20, {"m": 10, "e": 20}), (40, {"m": 20, "e": 30})]) for c in (40, 44)]
    runs.append(_run({"m": 0.5, "e": 0.5}, 400, variants={"m": "fast", "e": "x"}, p95={"m": 30, "e": 30}))  # other mix
    path.write_text(json.dumps({"models": ["e", "m"], "runs": runs}))
    joint = planner.plan(1.0, svc, catalog, profiles).best("both")
    assert joint.count == 3 and joint.measured_range == pytest.approx((40, 44))  # 200 / (40 x 2 vCPU scale) = 2.5
    assert joint.colocation.startswith("measured: joint profile, 2 run(s), 40-44 req/s in all on the profiled machine "
                                       "(median 42); the additive estimate from the models alone was 57 req/s (+36%)")
    # additive: 1 / (0.75 / 150 + 0.25 / 20), both alone on the profiled machine
    assert joint.measured_central == pytest.approx(42)
    assert [round(c.infer_per_s) for c in joint.capacities] == [60, 20]  # 80/s in the SLO's ratio 3:1
    assert joint.utilisation == pytest.approx(200 / (3 * 80))
    assert joint.p95_planned == ((16.7, "~"), (26.7, "~"))  # 33.3/s in all per profiled machine, on the joint rows


def test_the_plan_as_json_and_the_exit_code_when_a_service_cannot_be_met(profiles, tmp_path):
    from typer.testing import CliRunner

    from tritonrepo.cli import app

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("instances:\n  - {name: c4, platform: ec2, vcpus: 4, memory_gib: 8, gpu: null, gpu_count: 0, "
                       "profile: cpu, usd_per_hour: 0.2, source: test, source_date: '2026', source_kind: test}\n")
    slo = tmp_path / "slo.yaml"
    slo.write_text("services:\n  - name: ok\n    models: {m: {p95_ms: 30, peak_rps: 100}}\n")
    args = ["plan", "--slo", str(slo), "--catalog", str(catalog), "--profiles", str(profiles),
            "--report", str(tmp_path / "plan.md")]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    option = plan["services"]["ok"]["options"][0]
    assert plan["feasible"] and option["instance"] == "c4" and option["count"] == 1
    assert option["models"][0]["capacity_range"] == [300, 300] and option["models"][0]["variant"] == "fast"
    slo.write_text("services:\n  - name: ok\n    models: {m: {p95_ms: 30, peak_rps: 100}}\n"
                   "  - name: never\n    models: {m: {p95_ms: 1, peak_rps: 100}}\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "never: no priced instance type meets the SLO" in result.output
    assert not json.loads(CliRunner().invoke(app, [*args, "--json"]).output)["feasible"]


def test_profiles_of_a_newer_schema_or_another_kind_are_refused_with_the_reason(tmp_path):
    from tritonrepo.perf import profile_file
    from tritonrepo.perf.profile_file import Profile, ProfileError, Swept

    path = tmp_path / "cpu" / "m.json"
    profile = Profile(model="m", variants=(Swept("v", (perf_row(concurrency=1, infer_per_s=9, p95_ms=5),)),))
    profile_file.write(path, profile)
    assert json.loads(path.read_text())["schema"] == profile_file.SCHEMA
    assert planner.load_profile("m", "cpu", tmp_path) == profile
    path.write_text(json.dumps({"variants": []}))  # written before profiles had a schema: schema 1, read as is
    assert planner.load_profile("m", "cpu", tmp_path) == Profile(variants=())
    for text, reason in ((json.dumps({"schema": profile_file.SCHEMA + 1, "variants": []}),
                          f"schema {profile_file.SCHEMA + 1}; this tritonrepo reads schema 1 to {profile_file.SCHEMA}"),
                         (json.dumps({"schema": "1", "variants": []}), "schema '1'"),
                         (json.dumps({"runs": []}), "not a model profile: no variants"),
                         (json.dumps({"variants": [], "p95": 3}), "fields this version does not know: p95"),
                         (json.dumps({"variants": [{"variant": "v", "rows": [{"concurrency": 1}]}]}),
                          "variant 'v', row 0: .*missing .* required"),
                         ("[]", "a JSON object, not list"), ("{truncated", "cannot read the profile")):
        path.write_text(text)
        with pytest.raises(ProfileError, match=reason):
            planner.load_profile("m", "cpu", tmp_path)
