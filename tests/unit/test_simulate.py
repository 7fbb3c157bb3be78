"""The spike simulation: the queue core against closed forms (M/M/1, M/M/3 Erlang C, M/D/1, D/D/c), the calibration
from a profile, the SageMaker target-tracking autoscaler, and a study's files and table. Synthetic profiles only."""

import json
import math

import numpy as np
import pytest

from perf_rows import perf_row
from tritonrepo.perf.profile_file import Profile, Swept
from tritonrepo.perf.simulate import (
    InstanceModel, Policy, SimulationError, Trace, fifo_sojourn, scaling_timeline, simulate, study,
)


def _poisson(rate, n, seed):
    return np.cumsum(np.random.default_rng(seed).exponential(1 / rate, n))


def test_mm1_mean_and_p95_sojourn_match_closed_form():
    # lambda 0.8, mu 1: sojourn ~ Exp(mu - lambda): mean 5, p95 ln(20) / 0.2
    rng = np.random.default_rng(1)
    sojourn = fifo_sojourn(_poisson(0.8, 300_000, 2), rng.exponential(1.0, 300_000), 1)
    assert sojourn.mean() == pytest.approx(5.0, rel=0.05)
    assert np.percentile(sojourn, 95) == pytest.approx(math.log(20) / 0.2, rel=0.05)


def test_mm3_wait_matches_erlang_c():
    c, lam, mu = 3, 2.4, 1.0
    a = lam / mu
    top = a**c / math.factorial(c) * c / (c - a)
    erlang_c = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)  # P(wait > 0)
    service = np.random.default_rng(3).exponential(1 / mu, 300_000)
    wait = fifo_sojourn(_poisson(lam, 300_000, 4), service, c) - service
    assert np.mean(wait > 1e-6) == pytest.approx(erlang_c, rel=0.03)  # 1e-6: float rounding of end - arrival - service
    assert wait.mean() == pytest.approx(erlang_c / (c * mu - lam), rel=0.06)


def test_md1_mean_wait_is_pollaczek_khinchine():
    lam, rho = 0.7, 0.7  # deterministic service 1
    wait = fifo_sojourn(_poisson(lam, 300_000, 5), np.ones(300_000), 1) - 1.0
    assert wait.mean() == pytest.approx(rho / (2 * (1 - rho)), rel=0.05)


def test_deterministic_queues_are_exact():
    arrivals = np.arange(10.0)
    assert np.allclose(fifo_sojourn(arrivals, np.full(10, 0.5), 1), 0.5)  # D/D/1, no wait
    assert np.allclose(fifo_sojourn(arrivals, np.full(10, 1.5), 2), 1.5)  # D/D/2, two servers suffice
    assert np.allclose(fifo_sojourn(arrivals, np.full(10, 2.0), 1), 2.0 + np.arange(10))  # overloaded: wait grows 1/req
    with pytest.raises(SimulationError):
        fifo_sojourn(arrivals[::-1], np.ones(10), 1)


def _profile(p50=20.0, p95=25.0, saturation=100.0, rows=4):
    """One variant measured on 2 vCPUs: c1 alone, c8 at saturation, two open-loop rates (``rows``: the first so
    many)."""
    measured = (perf_row(concurrency=1, infer_per_s=45.0, p50_ms=p50, p95_ms=p95),
                perf_row(concurrency=8, infer_per_s=saturation, p50_ms=75.0, p95_ms=90.0),
                perf_row(request_rate=60.0, open_loop=True, infer_per_s=60.0, p50_ms=25.0, p95_ms=45.0),
                perf_row(request_rate=30.0, open_loop=True, infer_per_s=30.0, p50_ms=21.0, p95_ms=30.0))
    return Profile(provenance={"machine": {"cores": 2}}, variants=(Swept("v", measured[:rows]),))


def test_instance_model_calibrates_on_c1_and_saturation_throughput():
    model = InstanceModel.from_profile(_profile(), "v")
    assert model.median_s == pytest.approx(0.020)
    assert np.percentile(model.service_times(np.random.default_rng(0), 200_000), 95) == pytest.approx(0.025, rel=0.02)
    assert model.measured_servers == model.servers == round(100 * model.mean_s) == 2  # Little's law at saturation
    assert InstanceModel.from_profile(_profile(), "v", vcpu_scale=4).servers == 8
    fit = model.fit(_profile(), requests=20_000)
    assert [f["request_rate"] for f in fit] == [30.0, 60.0]
    assert fit[0]["model_p95_ms"] < fit[1]["model_p95_ms"]  # more load, more queueing
    with pytest.raises(SimulationError, match="no variant"):
        InstanceModel.from_profile(_profile(), "missing")


def test_fitted_model_recovers_servers_and_slowdown_from_an_open_loop_curve():
    closed = _profile(rows=2)
    base = InstanceModel.from_profile(closed, "v")
    truth = InstanceModel(variant="v", median_s=base.median_s * 1.2, sigma=base.sigma, servers=3, measured_servers=3)
    rng = np.random.default_rng(7)
    rows = []
    for rate in (40.0, 70.0, 90.0):  # what 3 servers, each 1.2x slower than alone, would measure open loop
        sojourn = fifo_sojourn(np.cumsum(rng.exponential(1 / rate, 40_000)), truth.service_times(rng, 40_000), 3)
        rows.append(perf_row(request_rate=rate, open_loop=True, infer_per_s=rate,
                             p50_ms=float(np.percentile(sojourn, 50) * 1e3),
                             p95_ms=float(np.percentile(sojourn, 95) * 1e3)))
    fitted = InstanceModel.fitted(closed, "v", vcpu_scale=2, rows=tuple(rows))
    assert (fitted.measured_servers, fitted.servers) == (3, 6)
    assert fitted.median_s == pytest.approx(truth.median_s, rel=0.1)
    assert all(abs(f["model_p95_ms"] / f["measured_p95_ms"] - 1) < 0.15 for f in fitted.fit(closed, rows=tuple(rows)))
    assert InstanceModel.fitted(closed, "v") == base  # no open-loop row: the c=1 shape and Little's law alone


def test_trace_ramps_holds_and_decays():
    trace = Trace(steady_rps=100, spike_at_s=600, factor=5, ramp_s=60, hold_s=600, decay_s=300)
    assert trace.rate(0) == trace.rate(600) == 100
    assert trace.rate(630) == pytest.approx(300)
    assert trace.rate(660) == trace.rate(1260) == 500
    assert trace.rate(1410) == pytest.approx(300)
    assert trace.rate(1560) == trace.rate(1799) == 100


def test_autoscaler_scales_out_after_three_datapoints_and_startup_up_to_max():
    flat = Trace(steady_rps=5, factor=1, duration_s=1200)  # 300 invocations a minute
    policy = Policy(target_value=60, min_capacity=2, max_capacity=4, startup_s=120)  # wants ceil(300/60) = 5
    line = scaling_timeline(flat, policy, 2)
    assert line.events[0] == {"t_s": 180, "action": "scale-out", "from": 2, "to": 4, "metric": 150.0}
    assert (line.in_service[:300] == 2).all() and (line.in_service[300:] == 4).all()  # 3 datapoints + startup
    assert (line.starting[180:300] == 2).all() and line.starting[:180].sum() == line.starting[300:].sum() == 0
    assert line.instance_seconds == 2 * 1200 + 2 * (1200 - 180)  # billed from launch


def test_autoscaler_scales_in_after_fifteen_datapoints_never_below_min():
    quiet = Trace(steady_rps=0.1, factor=1, duration_s=1800)
    line = scaling_timeline(quiet, Policy(target_value=60, min_capacity=2, max_capacity=8), 6)
    assert [(e["t_s"], e["action"], e["to"]) for e in line.events] == [(900, "scale-in", 2)]
    assert (line.in_service[:900] == 6).all() and (line.in_service[900:] == 2).all()


def test_spike_breaks_the_slo_at_headroom_1_but_not_with_large_headroom():
    model = InstanceModel.from_profile(_profile(), "v")  # 2 servers of ~20 ms: ~98 req/s saturation
    trace = Trace(steady_rps=60, duration_s=1200, spike_at_s=180, hold_s=300, decay_s=120)  # x5: 300 req/s
    runs = {}
    for h in (1.0, 5.0):
        count = math.ceil(60 * h / 60)
        runs[h] = simulate(trace, model, Policy.emitted(60, h, count, startup_s=240), count, 80, 1.0, seed=1)
    assert runs[1.0]["minutes_over_target"] > 0 and runs[1.0]["max_in_service"] == 2
    assert runs[5.0]["minutes_over_target"] == 0 and runs[5.0]["share_over_target"] < 0.05
    assert runs[5.0]["cost_usd"] == pytest.approx(runs[5.0]["instance_hours"], abs=0.01)
    assert len(runs[1.0]["minutes"]) == 20 and runs[1.0]["minutes"][5]["offered_rps"] == 300
    with pytest.raises(SimulationError, match="max_requests"):
        simulate(trace, model, Policy.emitted(60, 1.0, 1), 1, 80, None, max_requests=1000)


def test_study_writes_json_and_plot_and_tables_every_headroom(tmp_path):
    trace = Trace(steady_rps=1, duration_s=600, spike_at_s=120, hold_s=120, decay_s=60)
    result = study(model_name="m", profile=_profile(), variant="v", capacity_rps=60, vcpu_scale=2, peak_rps=100,
                   p95_target_ms=80, usd_per_hour=None, plan_headroom=1.3, headrooms=(1.0, 2.0), trace=trace,
                   startup_s=240, out_dir=tmp_path)
    saved = json.loads((tmp_path / "simulation-m.json").read_text())
    assert (tmp_path / "simulation-m.png").stat().st_size > 10_000
    assert saved["inputs"]["trace"]["steady_rps"] == 100  # the SLO peak is the steady rate
    assert [r["headroom"] for r in saved["results"]] == [1.0, 1.3, 2.0]
    assert [r["count"] for r in saved["results"]] == [2, 3, 4]
    assert len(saved["calibration"]) == 2 and saved["results"][0]["minutes"][0]["p95_ms"] > 0
    rows = result["markdown"].splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["1", "1.3 (plan)", "2"]
    assert "unpriced" in result["markdown"]
