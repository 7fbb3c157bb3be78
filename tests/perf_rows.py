"""perf_analyzer rows for tests that build profiles: the fields a test is about, the others zero."""

from tritonrepo.perf.perf_analyzer import PerfRow

ZERO = dict.fromkeys(("concurrency", "infer_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms",
                      "server_queue_ms", "server_compute_ms"), 0.0)


def perf_row(**fields) -> PerfRow:
    return PerfRow(**(ZERO | fields))


def row(**fields) -> dict:
    """As a profile file holds it."""
    return perf_row(**fields).as_dict()
