"""Triton Python-backend model ``video_decode`` (CPU target): encoded video -> RGB 48x27 frames, streamed.

Decoupled: one request (``VIDEO`` UINT8 [1, bytes]) gets one response per decoded chunk (``FRAMES`` UINT8
[1, k, 27, 48, 3]) and a final empty one, so no response holds more than a chunk. It is the CPU implementation of the
interface the GPU targets serve with Triton's DALI backend (``video_decode_dali.py``): VP8/VP9/MJPEG through DALI's
CPU decoder, everything else through FFmpeg (``video_io``, shipped beside this file). A video that cannot be decoded
gets an INVALID_ARG error naming the reason; the model keeps serving.

Parameters: ``dali_codecs`` (comma-separated, default ``vp8,vp9,mjpeg``), ``decode_threads`` (FFmpeg, 0 = auto), and
the limits of one request (``video_io.VideoLimits``): ``max_request_bytes``, ``max_frames``, ``max_pixels``,
``max_seconds`` of work. A request over one gets INVALID_ARG naming the parameter; chunks already sent stay sent.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from . import video_io
from .parameters import VideoDecodeParameters


def _error(message, invalid=True):
    code = getattr(pb_utils.TritonError, "INVALID_ARG" if invalid else "INTERNAL", None)
    return pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = VideoDecodeParameters.from_config(config)
        self.dali_codecs = set(params.dali_codecs)
        self.threads = params.decode_threads
        self.limits = params

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                budget = video_io.Budget(self.limits.max_seconds)
                data = pb_utils.get_input_tensor_by_name(request, "VIDEO").as_numpy().reshape(-1)
                info = video_io.probe(data, self.limits)
                decoder = video_io.decoder_for(info, self.dali_codecs)
                decoded = video_io.frames(data, info, decoder, self.threads, limits=self.limits)
                for chunk in video_io.checked(decoded, self.limits, budget):
                    sender.send(pb_utils.InferenceResponse(output_tensors=[
                        pb_utils.Tensor("FRAMES", np.ascontiguousarray(chunk[None]))]))
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except video_io.VideoError as e:
                sender.send(pb_utils.InferenceResponse(error=_error(str(e))),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception as e:  # noqa: BLE001 - answer the request, keep the model serving
                sender.send(pb_utils.InferenceResponse(error=_error(f"decoding failed: {e}", invalid=False)),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
