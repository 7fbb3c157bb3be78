"""The DALI video-decoding pipeline: encoded bytes (input ``VIDEO``) -> RGB 48x27 frames (output ``FRAMES``).

On GPU targets this file is the ``video_decode`` model's ``1/dali.py``: Triton's DALI backend serializes the
``@autoserialize`` pipeline when the model loads (so the repository can be built on a machine without a GPU) and
runs it decoupled: ``fn.experimental.inputs.video`` streams the video from memory and NVDEC (``device="mixed"``)
decodes ``SEQUENCE`` frames per response, resized on the GPU. On the CPU target the same graph (``device="cpu"``,
VP8/VP9/MJPEG only) runs in-process through ``tritonrepo.ensembles.video_io.dali_frames``.

Self-contained on purpose: the NGC image's DALI backend imports it without this project installed.
"""

from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.triton import autoserialize

HEIGHT, WIDTH = 27, 48
SEQUENCE = 16  # frames per output: bounds the full-resolution frames in flight (16 x 6 MB at 1080p)


def decode_graph(device: str, sequence_length: int = SEQUENCE):
    frames = fn.experimental.inputs.video(name="VIDEO", sequence_length=sequence_length, device=device,
                                          last_sequence_policy="partial")
    return fn.resize(frames, resize_x=WIDTH, resize_y=HEIGHT, interp_type=types.INTERP_CUBIC, antialias=True)


@autoserialize
@pipeline_def(batch_size=1, num_threads=4, device_id=0, prefetch_queue_depth=1)
def video_decode_gpu():
    return decode_graph("mixed")
