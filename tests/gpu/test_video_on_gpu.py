"""On a GPU host: the DALI pipeline of the GPU targets (NVDEC, ``device="mixed"``) decodes H.264 like FFmpeg, and the
fp16 TransNetV2 graph passes its validation on CUDA. Skips cleanly without a GPU (conftest hook)."""

import numpy as np
import pytest

from tritonrepo.ensembles import video_io

pytestmark = pytest.mark.gpu


def test_dali_nvdec_decodes_h264_like_ffmpeg(sample_media):
    from nvidia.dali import pipeline_def

    from tritonrepo.ensembles.video_decode_dali import SEQUENCE, decode_graph

    data = sample_media["h264.mp4"].read_bytes()
    info = video_io.probe(data)
    pipe = pipeline_def(decode_graph, batch_size=1, num_threads=2, device_id=0, prefetch_queue_depth=1)("mixed")
    pipe.build()
    pipe.feed_input("VIDEO", [np.frombuffer(data, np.uint8)])
    chunks = [np.asarray(pipe.run()[0].as_cpu()[0]) for _ in range(-(-info.frames // SEQUENCE))]
    nvdec = np.concatenate(chunks)
    ffmpeg = np.concatenate(list(video_io.ffmpeg_frames(data)))
    assert nvdec.shape == ffmpeg.shape
    assert np.abs(nvdec.astype(int) - ffmpeg).mean() < 4


def test_fp16_graph_validates_on_cuda(transnet_artifacts, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    from tritonrepo.export.transnetv2 import export_fp16, windows_of
    from tritonrepo.paths import TRANSNET_DIR

    windows = windows_of(video_io.decode_file(TRANSNET_DIR / "test.mp4")[:1500])
    metrics = export_fp16(transnet_artifacts / "model.fp32.onnx", tmp_path / "model.fp16.onnx", windows)
    assert metrics["boundary_f1"] >= 0.98
