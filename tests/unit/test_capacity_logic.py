"""The capacity of a measured run (perf/capacity.py): where the non-decreasing fit of its rows crosses the targets."""

import pytest

from tritonrepo.perf.capacity import Part, crossing, load_ratio


def test_crossing_interpolates_on_the_monotone_fit_so_one_noisy_row_does_not_decide():
    assert crossing([(10, 0.5), (20, 0.8), (30, 1.2)]) == pytest.approx(25)
    # a noisy pass past a miss (the 44/s miss, then 47 and 59 passing) pools with its neighbours
    rows = [(29.3, 0.89), (44.0, 1.03), (46.9, 0.99), (58.6, 0.93), (60.4, 1.12), (62.2, 1.10), (65.9, 1.37)]
    assert crossing(rows) == pytest.approx(58.6 + 1.8 * (1 - 0.9833) / (1.11 - 0.9833), rel=1e-3)
    assert crossing([(10, 1.5), (20, 2.0)]) == 0  # the lowest rate misses already
    assert crossing([(10, 0.2), (20, 0.4)]) == 20  # none misses: at least the highest rate
    assert crossing([]) == 0


def test_load_ratio_is_the_worst_model_and_an_undelivered_rate_fails():
    parts = [Part("a", 0.5, 30, None, None), Part("b", 0.5, 100, None, None)]
    row = {"total_rate": 100,
           "models": {"a": {"p95_ms": 15, "infer_per_s": 50}, "b": {"p95_ms": 80, "infer_per_s": 50}}}
    assert load_ratio(row, parts) == pytest.approx(0.8)
    row["models"]["b"]["infer_per_s"] = 20  # 70 of 100 offered: the server fell behind
    assert load_ratio(row, parts) == 10
    row["window_ms"] = 1000  # 100 arrivals a window: the count delivered is noise, p95 decides
    assert load_ratio(row, parts) == pytest.approx(0.8)
