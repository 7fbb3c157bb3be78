"""Run the real perf_analyzer (C++ load generator, gRPC) and parse its CSV into typed rows."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from tritonrepo.errors import TritonRepoError
from tritonrepo.paths import perf_analyzer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PerfRow:
    """One perf_analyzer measurement; latencies in milliseconds, client side unless named server_."""

    concurrency: float  # closed loop: requests in flight (0 in request-rate mode)
    infer_per_s: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    server_queue_ms: float
    server_compute_ms: float
    stable: bool = True  # False: perf_analyzer could not stabilise and the row is a loose measurement
    request_rate: float = 0.0  # open loop: Poisson arrivals per second (0 in concurrency mode)
    # request-rate rows sent with the async API. perf_analyzer's default (sync) workers hold at most --max-threads
    # (4) requests in flight, so a rate they cannot keep up with is quietly capped: measured here, 300/s offered to
    # sbert_int8 gave p95 22 ms that way and 69 ms open loop. Rows without it are not open loop.
    open_loop: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def load(self) -> str:
        """The load it was measured at: ``c4`` (closed loop) or ``poisson 300/s``."""
        return f"poisson {self.request_rate:g}/s" if self.request_rate else f"c{self.concurrency:g}"


# an open-loop row counts when the server took the rate offered: below this share, the arrivals were not the
# Poisson process asked for (or the queue grew), and the row says nothing about that rate
DELIVERED = 0.85


def usable(row: PerfRow) -> bool:
    """Closed-loop rows, and open-loop rows that were sent asynchronously and delivered (``DELIVERED``)."""
    if not row.request_rate:
        return True
    return row.open_loop and row.infer_per_s >= DELIVERED * row.request_rate


def parse_csv(text: str) -> list[PerfRow]:
    rows = []
    for r in csv.DictReader(text.splitlines()):
        us = lambda key: float(r.get(key) or 0) / 1000.0  # noqa: E731  (perf_analyzer reports microseconds)
        rows.append(PerfRow(
            concurrency=float(r.get("Concurrency") or 0), request_rate=float(r.get("Request Rate") or 0),
            infer_per_s=float(r["Inferences/Second"]),
            p50_ms=us("p50 latency"), p90_ms=us("p90 latency"), p95_ms=us("p95 latency"), p99_ms=us("p99 latency"),
            avg_ms=us("Avg latency"), server_queue_ms=us("Server Queue"),
            server_compute_ms=us("Server Compute Input") + us("Server Compute Infer") + us("Server Compute Output"),
        ))
    return rows


def write_input_data(path: Path, tensor: str, texts: list[str]) -> Path:
    """perf_analyzer --input-data JSON: one batch-1 request per real text, sent round-robin."""
    return write_rows(path, [{tensor: t} for t in texts])


def write_rows(path: Path, rows: list[dict]) -> Path:
    """perf_analyzer --input-data JSON: one batch-1 request per row (tensor name -> value), sent round-robin. A value
    is a string (sent as UTF-8 text), bytes (a UINT8 [-1] input such as a whole encoded video: base64, which
    perf_analyzer decodes), a list of ints (a variable-length input such as token ids) or an array without the batch
    axis (strings in it sent as text)."""
    import base64

    def tensor(value) -> dict:
        if isinstance(value, str):
            return {"content": [value], "shape": [1]}
        if isinstance(value, bytes):
            return {"b64": base64.b64encode(value).decode(), "shape": [len(value)]}
        if isinstance(value, list):
            return {"content": value, "shape": [len(value)]}
        content = [x.decode() if isinstance(x, bytes) else x for x in value.ravel().tolist()]
        return {"content": content, "shape": list(value.shape)}

    path.write_text(json.dumps({"data": [{k: tensor(v) for k, v in r.items()} for r in rows]}))
    return path


def run(model: str, url: str, input_data: Path, *, concurrency: int | None = None,
        request_rate: float | None = None, measurement_ms: int = 4000, stability_pct: int = 30, max_trials: int = 8,
        timeout_s: float = 300, min_arrivals: int = 200) -> PerfRow:
    """One load level: a closed loop of ``concurrency`` clients, or Poisson arrivals at ``request_rate`` per second
    (open loop: queueing shows in p95 as it would with independent users). Shared 2-core machines drift: when
    perf_analyzer cannot stabilise within the bound, measure once more with any stability and mark the row
    ``stable=False``; medians over repetitions absorb it. ``min_arrivals``: an open-loop window holds at least this
    many arrivals (perf/capacity.py sizes the windows of a mix of models itself)."""
    if (concurrency is None) == (request_rate is None):
        raise ValueError("give exactly one of concurrency and request_rate")
    if concurrency is not None:
        load = ["--concurrency-range", f"{concurrency}:{concurrency}"]
        what = f"concurrency {concurrency}"
    else:
        load = ["--request-rate-range", f"{request_rate:g}:{request_rate:g}", "--request-distribution", "poisson",
                "--async"]  # open loop: arrivals do not wait for answers (see PerfRow.open_loop)
        what = f"Poisson rate {request_rate:g}/s"
        # a window must hold enough arrivals that the share delivered (usable()) is not Poisson noise: ~200 keep
        # its sd near 7% (20 at 20 pairs/s in 1 s would be 22%)
        measurement_ms = max(measurement_ms, int(min_arrivals * 1000 / request_rate))
    try:
        return _run(model, url, input_data, load, what, measurement_ms, stability_pct, max_trials, timeout_s)
    except _Unstable:
        log.warning("%s at %s did not stabilise within %d%%; taking a loose measurement", model, what, stability_pct)
        row = _run(model, url, input_data, load, what, measurement_ms, 1000, 3, timeout_s, strict=False)
        return dataclasses.replace(row, stable=False)


class _Unstable(TritonRepoError):
    pass


def _run(model, url, input_data, load, what, measurement_ms, stability_pct, max_trials, timeout_s,
         strict: bool = True) -> PerfRow:
    binary, env = perf_analyzer()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pa.csv"
        argv = [str(binary), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(input_data),
                *load, "-p", str(measurement_ms),
                "-s", str(stability_pct), "--max-trials", str(max_trials), "--percentile", "95", "-f", str(out)]
        log.debug("perf_analyzer: %s", " ".join(argv))
        # a slow open-loop rate stretches each window: give every allowed trial its time
        timeout = max(timeout_s, measurement_ms / 1000 * (max_trials + 2))
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            error = _Unstable if strict else TritonRepoError
            raise error(f"perf_analyzer for {model} at {what} did not finish in {timeout:.0f} s") from e
        if strict and "Failed to obtain stable measurement" in proc.stdout + proc.stderr:
            raise _Unstable(f"{model} at {what} did not stabilise")
        if not out.exists() or (proc.returncode != 0 and strict):  # a loose measurement keeps what it wrote
            raise TritonRepoError(f"perf_analyzer failed (exit {proc.returncode}) for {model} at {what}:\n"
                                  f"{(proc.stdout + proc.stderr)[-3000:]}")
        rows = parse_csv(out.read_text())
    if not rows:
        raise TritonRepoError(f"perf_analyzer wrote no measurement for {model} at {what}")
    return dataclasses.replace(rows[0], open_loop="--async" in load)
