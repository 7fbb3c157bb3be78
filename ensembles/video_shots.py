"""Triton Python-backend (BLS) models ``video_shots`` and ``video_shots_live``: encoded video -> shots.

``video_shots`` (one request per file): probe the container (``video_io.probe``: clear INVALID_ARG errors for
empty, unreadable, audio-only, still-image, unsupported-codec or truncated input), decode in chunks, cut TransNetV2
windows with ``ShotTracker`` (the reference protocol), run them ``window_batch`` at a time through the
``shot_model`` (``transnetv2`` / ``transnetv2_int8``, dynamically batched across videos), and answer with the shots.
Memory holds the request's encoded bytes, at most ``PREFETCH`` decoded chunks of 48x27 frames, one window of frames
and 4 bytes per frame of probability: it does not grow with the decoded size of the video.

``video_shots_live`` (sequence batching, one sequence per stream): each request carries one self-contained segment
of the stream (an HLS/DASH-style TS, MP4 or WebM segment); its frames join the stream's tracker and the answer holds
the shots that closed, with FRAMES_DONE, the count of frames whose decision is final (26 to 75 frames behind the
stream). The END request flushes the last shot. A bad segment is refused with INVALID_ARG; the stream goes on.

Decoding: codecs in ``decode_model_codecs`` (GPU targets: NVDEC through the DALI ``video_decode`` model, 4:2:0 and
constant rate only) go to that model through a decoupled BLS call; the rest decode in-process, DALI for
``dali_codecs`` on the CPU and FFmpeg for everything else (``video_io.decoder_for``).

Request parameters (``parameters`` of the inference request): ``shot_model`` overrides the configured model
(``transnetv2`` or ``transnetv2_int8``); ``decoder`` forces ``ffmpeg``, ``dali`` or ``model``.

Limits (config parameters, ``video_io.VideoLimits``), per request: ``max_request_bytes`` (the file, or the segment),
``max_frames``, ``max_pixels`` (width x height, from the header before decoding and of each frame FFmpeg decodes),
``max_seconds`` of work (decoding and inference, checked between chunks); per live stream ``max_stream_frames``
(checked before a segment's frames join it). A request over one is refused with INVALID_ARG naming the parameter and
its value, and the model goes on serving. A live segment stopped while decoding leaves the frames decoded so far in
its stream.
"""

import json
import queue
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from . import video_io
from .parameters import ShotParameters
from .shot_tracker import ShotTracker

SHOT_MODELS = ("transnetv2", "transnetv2_int8")
DECODERS = ("ffmpeg", "dali", "model")
PREFETCH = 4  # decoded chunks buffered between the decoding thread and the model calls


def _error(message, invalid=True):
    code = getattr(pb_utils.TritonError, "INVALID_ARG" if invalid else "INTERNAL", None)
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)


def _prefetch(iterator, depth=PREFETCH):
    """Run a decoding iterator in a thread (FFmpeg and DALI release the GIL) ahead of the consumer, bounded."""
    chunks = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        chunks.put(("chunk", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            chunks.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            chunks.put(("error", e))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            kind, item = chunks.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()


class _Stream:
    """One live stream's state."""

    def __init__(self):
        self.tracker = ShotTracker()
        self.fps = 0.0
        self.touched = time.monotonic()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = ShotParameters.from_config(config)
        self.shot_model = params.shot_model
        self.window_batch = max(1, params.window_batch)
        self.model_codecs = set(params.decode_model_codecs)
        self.dali_codecs = set(params.dali_codecs)
        self.threads = params.decode_threads
        self.limits = params
        sequence = config.get("sequence_batching")
        self.live = sequence is not None
        self.max_idle_s = int(sequence.get("max_sequence_idle_microseconds", 60_000_000)) / 1e6 if sequence else 0
        self.streams = {}

    # ---- building blocks --------------------------------------------------------------------------------------
    def _options(self, request):
        params = json.loads(request.parameters() or "{}")
        shot_model = params.get("shot_model", self.shot_model)
        decoder = params.get("decoder")
        if shot_model not in SHOT_MODELS:
            raise video_io.VideoError(f"parameter shot_model={shot_model!r}: use one of {SHOT_MODELS}")
        if decoder is not None and decoder not in DECODERS:
            raise video_io.VideoError(f"parameter decoder={decoder!r}: use one of {DECODERS}")
        return shot_model, decoder

    def _decoder(self, info, forced):
        if forced:
            return forced
        if info.codec in self.model_codecs and video_io.decoder_for(info, self.model_codecs) == "dali":
            return "model"
        return video_io.decoder_for(info, self.dali_codecs)

    def _frames(self, data, info, decoder, budget):
        """Decoded chunks, counted against the frame limit and the work budget as the consumer takes them."""
        if decoder == "model":
            chunks = self._model_frames(data)
        else:
            chunks = _prefetch(video_io.frames(data, info, decoder, self.threads, limits=self.limits))
        return video_io.checked(chunks, self.limits, budget)

    @staticmethod
    def _model_frames(data):
        """Chunks streamed by the ``video_decode`` model (decoupled BLS), copied to host memory."""
        request = pb_utils.InferenceRequest(
            model_name="video_decode", requested_output_names=["FRAMES"],
            inputs=[pb_utils.Tensor("VIDEO", data.reshape(1, -1))],
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0))
        for response in request.exec(decoupled=True):
            if response.has_error():
                raise video_io.VideoError(f"video_decode: {response.error().message()}")
            tensor = pb_utils.get_output_tensor_by_name(response, "FRAMES")
            if tensor is not None:
                yield tensor.as_numpy()[0]

    def _infer(self, model, windows):
        request = pb_utils.InferenceRequest(model_name=model, requested_output_names=["probs"],
                                            inputs=[pb_utils.Tensor("frames", np.stack(windows))])
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{model}: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, "probs").as_numpy()

    def _feed(self, tracker, windows, model, flush):
        """Run full batches of windows (all of them when flushing); return the shots that closed."""
        closed = []
        while windows and (flush or len(windows) >= self.window_batch):
            batch, windows[:] = windows[: self.window_batch], windows[self.window_batch:]
            closed += tracker.add(self._infer(model, batch))
        return closed

    # ---- whole files ------------------------------------------------------------------------------------------
    def _file(self, request):
        budget = video_io.Budget(self.limits.max_seconds)
        data = pb_utils.get_input_tensor_by_name(request, "VIDEO").as_numpy().reshape(-1)
        want = pb_utils.get_input_tensor_by_name(request, "RETURN_PROBABILITIES")
        want = bool(want is not None and want.as_numpy().reshape(-1)[0])
        model, forced = self._options(request)
        info = video_io.probe(data, self.limits)
        tracker = ShotTracker(keep_probabilities=want)
        windows, shots = [], []
        for chunk in self._frames(data, info, self._decoder(info, forced), budget):
            windows += tracker.push(chunk)
            shots += self._feed(tracker, windows, model, flush=False)
        windows += tracker.finish()
        shots += self._feed(tracker, windows, model, flush=True)
        if tracker.frames_in != info.frames:
            raise video_io.VideoError(f"corrupt or truncated {info.codec} stream: decoded {tracker.frames_in} "
                                      f"of the {info.frames} frames in the container")
        shots += tracker.close()
        shots = np.asarray(shots, dtype=np.int32).reshape(-1, 2)
        probs = np.concatenate(tracker.probabilities) if want else np.zeros(0, np.float32)
        return [pb_utils.Tensor("SHOTS", shots), pb_utils.Tensor("SHOT_TIMES", info.times[shots]),
                pb_utils.Tensor("FRAME_COUNT", np.array([info.frames], np.int32)),
                pb_utils.Tensor("FPS", np.array([info.fps], np.float32)),
                pb_utils.Tensor("PROBABILITIES", probs.astype(np.float32))]

    # ---- live streams -----------------------------------------------------------------------------------------
    def _live(self, request):
        budget = video_io.Budget(self.limits.max_seconds)
        cid = request.correlation_id()
        start = pb_utils.get_input_tensor_by_name(request, "START")
        end = pb_utils.get_input_tensor_by_name(request, "END")
        start = bool(start is not None and start.as_numpy().reshape(-1)[0])
        end = bool(end is not None and end.as_numpy().reshape(-1)[0])
        now = time.monotonic()
        for key in [k for k, s in self.streams.items() if now - s.touched > self.max_idle_s]:
            del self.streams[key]  # Triton released the idle sequence
        if start or cid not in self.streams:
            self.streams[cid] = _Stream()
        stream = self.streams[cid]
        stream.touched = now
        model, forced = self._options(request)
        data = pb_utils.get_input_tensor_by_name(request, "SEGMENT").as_numpy().reshape(-1)
        windows, shots = [], []
        try:
            if len(data) or not end:
                info = video_io.probe(data, self.limits)
                total = stream.tracker.frames_in + info.frames
                if total > self.limits.max_stream_frames:
                    raise video_io.LimitError(
                        f"this segment's {info.frames} frames would take the stream to {total} frames; the limit is "
                        f"{self.limits.max_stream_frames} frames a stream (max_stream_frames parameter): end this "
                        "sequence and go on in a new one")
                stream.fps = stream.fps or info.fps
                for chunk in self._frames(data, info, self._decoder(info, forced), budget):
                    windows += stream.tracker.push(chunk)
                    shots += self._feed(stream.tracker, windows, model, flush=False)
            if end:
                windows += stream.tracker.finish()
            shots += self._feed(stream.tracker, windows, model, flush=True)
            if end and stream.tracker.frames_in:
                shots += stream.tracker.close()
        finally:
            if end:
                self.streams.pop(cid, None)
        shots = np.asarray(shots, dtype=np.int32).reshape(1, -1, 2)
        fps = stream.fps or 1.0
        return [pb_utils.Tensor("SHOTS", shots), pb_utils.Tensor("SHOT_TIMES", (shots / fps).astype(np.float32)),
                pb_utils.Tensor("FRAMES_DONE", np.array([[stream.tracker.frames_done]], np.int32)),
                pb_utils.Tensor("FPS", np.array([[stream.fps]], np.float32))]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                outputs = self._live(request) if self.live else self._file(request)
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except video_io.VideoError as e:
                responses.append(pb_utils.InferenceResponse(error=_error(str(e))))
            except Exception as e:  # noqa: BLE001 - answer the request, keep the model serving
                responses.append(pb_utils.InferenceResponse(error=_error(f"shot detection failed: {e}", False)))
        return responses
