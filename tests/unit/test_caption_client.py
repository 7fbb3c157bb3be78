"""Caption client against a local server speaking the OpenAI wire format: request format, key handling, retries that
honour Retry-After, rate limits, cost accounting; keyframes and perceptual hashes on real footage."""

import asyncio
import hashlib
import io
import subprocess
import time

import numpy as np
import pytest

from fake_openai import KEY, FakeOpenAI
from tritonrepo.clients.grpc_core import RetryPolicy
from tritonrepo.services.captions import (
    CaptionAuthError, CaptionConfig, CaptionError, Captioner, OpenAICompatible, PhashIndex, Price, jpeg, keyframes,
    load_image, middle_frames, phash, retry_after_seconds,
)
from tritonrepo.errors import InvalidInputError
from tritonrepo.paths import VIDEO_DIR

PRICE = Price(0.15, 0.60, "test")


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("TEST_CAPTION_KEY", KEY)
    server = FakeOpenAI()
    yield server
    server.close()


def _config(fake, **kw) -> CaptionConfig:
    base = dict(base_url=fake.base_url, model="test-vision", provider="fake", api_key_env="TEST_CAPTION_KEY",
                price=PRICE, timeout_s=1.0, retry=RetryPolicy(attempts=6, backoff_s=0.05, max_backoff_s=0.2))
    return CaptionConfig(**(base | kw))


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Real frames: frame 10 of bikes.mp4, the same frame from a VP9 re-encode at another size (the same footage from
    another source), a frame of another bikes.mp4 shot, and one of another clip."""
    webm = tmp_path_factory.mktemp("captions") / "bikes.webm"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(VIDEO_DIR / "bikes.mp4"), "-frames:v", "30", "-vf",
                    "scale=480:-2", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-crf", "40",
                    "-b:v", "0", str(webm)], check=True)
    got = keyframes(VIDEO_DIR / "bikes.mp4", [10, 200], max_side=320)
    return (got[10], keyframes(webm, [10], max_side=320)[10], got[200],
            keyframes(VIDEO_DIR / "carphone_pristine.mp4", [50], max_side=320)[50])


def _run(captioner, images):
    async def go():
        try:
            return await asyncio.gather(*(captioner.caption(i) for i in images))
        finally:
            await captioner.close()
    return asyncio.run(go())


def test_request_is_openai_chat_completions_with_a_data_url_and_costs_add_up(fake, frames):
    config = _config(fake)
    body = OpenAICompatible(config).body(jpeg(frames[0]))
    content = body["messages"][0]["content"]
    assert body["model"] == "test-vision" and content[0]["type"] == "text" and content[0]["text"] == config.prompt
    assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert content[1]["image_url"]["detail"] == "low"

    captioner = Captioner(config)
    images = [jpeg(f) for f in frames]
    captions = _run(captioner, images)
    assert len(fake.ok()) == 4 and captioner.spend.requests == 4
    assert all(c.text.startswith("[fake-openai test server") for c in captions)
    assert {r.image_sha256 for r in fake.ok()} == {hashlib.sha256(i).hexdigest() for i in images}
    tokens_in, tokens_out = sum(r.tokens_in for r in fake.ok()), sum(r.tokens_out for r in fake.ok())
    assert captioner.spend.tokens_in == tokens_in == sum(c.tokens_in for c in captions)
    assert captioner.spend.tokens_out == tokens_out
    expected = (tokens_in * PRICE.input_per_mtok + tokens_out * PRICE.output_per_mtok) / 1e6
    assert captioner.spend.usd == pytest.approx(expected) == pytest.approx(sum(c.usd for c in captions))


def test_key_comes_from_the_environment_and_a_refused_key_names_the_variable(fake, monkeypatch):
    monkeypatch.delenv("TEST_CAPTION_KEY")
    with pytest.raises(InvalidInputError, match="TEST_CAPTION_KEY"):
        Captioner(_config(fake))
    monkeypatch.setenv("TEST_CAPTION_KEY", "wrong")
    with pytest.raises(CaptionAuthError, match="401.*TEST_CAPTION_KEY"):
        _run(Captioner(_config(fake)), [b"x"])
    assert len(fake.requests) == 1  # not retried


def test_transient_failures_are_retried_and_bad_requests_are_not(fake, frames):
    fake.faults.extend(["500", "timeout", "malformed"])
    captioner = Captioner(_config(fake))
    (caption,) = _run(captioner, [jpeg(frames[0])])
    assert caption.attempts == 4 and [r.status for r in fake.requests][:1] == [500]
    assert captioner.spend.errors == {"500": 1, "timeout": 1, "malformed": 1}
    assert captioner.spend.captions == 1

    fake.faults.append("400")
    captioner = Captioner(_config(fake))
    with pytest.raises(CaptionError, match="HTTP 400") as e:
        _run(captioner, [jpeg(frames[1])])
    assert not e.value.retriable and captioner.spend.requests == 1

    fake.faults.extend(["500"] * 10)
    with pytest.raises(CaptionError, match="HTTP 500") as e:
        _run(Captioner(_config(fake)), [jpeg(frames[1])])
    assert e.value.retriable  # attempts exhausted: the asset stays pending for the next run


def test_a_429_storm_pauses_every_caller_for_retry_after_and_every_caption_arrives(fake, frames):
    """The server allows 2 requests/s and answers 429 with Retry-After: 1 beyond that; the client thinks it may send
    10/s with 8 in flight. Each 429 stops every caller for a second and halves the client's rate, so few 429s
    follow, and all 16 captions arrive."""
    fake.limit_per_s = 2
    images = [jpeg(np.roll(frames[i % 4], i, axis=1)) for i in range(16)]  # 16 distinct images
    captioner = Captioner(_config(fake, requests_per_minute=600, concurrency=8,
                                  retry=RetryPolicy(attempts=30, backoff_s=0.05, max_backoff_s=0.5)))
    captions = _run(captioner, images)
    assert len(captions) == 16 and len(fake.ok()) == 16
    storms = [r.at for r in fake.requests if r.status == 429]
    assert storms, "the server never limited: the test did not test anything"
    for t in storms:  # nothing new was sent while a Retry-After pause was running
        assert not [r for r in fake.requests if t + 0.1 < r.at < t + 0.9], f"request during the pause after {t}"
    # the first burst (the client's own bucket of 10) meets 429s; after that the client has learnt the real rate
    later = [t for t in storms if t > storms[0] + 0.5]
    assert len(later) <= 4, f"{len(later)} more 429s after the first burst: the client kept hammering"


def test_requests_per_minute_bound_the_send_rate(fake, frames):
    images = [jpeg(np.roll(frames[0], i, axis=0)) for i in range(15)]
    start = time.monotonic()
    _run(Captioner(_config(fake, requests_per_minute=300, concurrency=15)), images)  # 5/s, bucket of 5
    times = sorted(r.at for r in fake.requests)
    assert time.monotonic() - start >= (15 - 5) / 5 - 0.2
    for t in times:
        assert sum(t <= u < t + 1.0 for u in times) <= 5 + 5 + 1


def test_tokens_per_minute_bound_the_send_rate(fake, frames):
    config = _config(fake, tokens_per_minute=60 * 400, concurrency=8)  # 400 tokens/s, ~200 per request estimated
    start = time.monotonic()
    _run(Captioner(config), [jpeg(np.roll(frames[1], i, axis=0)) for i in range(8)])
    assert time.monotonic() - start >= 1.5


def test_retry_after_as_seconds_or_http_date():
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Thu, 26 Nov 2026 10:00:05 GMT", now=1795687200.0) == pytest.approx(5.0)
    assert retry_after_seconds("soon") is None


def test_keyframes_are_the_middle_frames_scaled_and_phash_finds_near_duplicates(frames):
    assert middle_frames([{"start_frame": 0, "end_frame": 10}, {"start_frame": 11, "end_frame": 40}]) == [5, 25]
    a, a_vp9, b, other = frames
    assert max(a.shape[:2]) == 320 and a.dtype == np.uint8
    h = phash(a)
    recompressed = load_image(jpeg(a, quality=40))
    distance = lambda x, y: bin(x ^ y).count("1")  # noqa: E731
    assert distance(h, phash(recompressed)) <= 4  # the same frame, re-encoded
    assert distance(h, phash(a_vp9)) <= 6  # the same footage, another encode and size
    assert distance(h, phash(b)) > 12 and distance(h, phash(other)) > 12  # other shots
    index = PhashIndex(distance=6, max_entries=2)
    index.add(h, "a")
    index.add(phash(b), "b")
    assert index.find(phash(recompressed)) == "a" and index.find(phash(other)) is None
    index.add(phash(other), "other")  # evicts "a", the oldest
    assert index.find(h) is None and len(index) == 2 and index.find(phash(b)) == "b"


def test_images_that_are_not_images_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="not an image"):
        load_image(b"GIF89a not really")
    assert load_image(jpeg(np.zeros((1000, 2000, 3), np.uint8)), max_side=512).shape == (256, 512, 3)


def test_cost_needs_a_price():
    with pytest.raises(InvalidInputError, match="no price for acme/unknown"):
        CaptionConfig(provider="acme", model="unknown").unit_price()
    assert CaptionConfig(prompt_version="v7").key == "caption:openai/gpt-4o-mini@v7"


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "http://127.0.0.1:8080/v1", "http://127.9.9.9/v1",
                                 "http://localhost:4000/v1", "http://[::1]:8000/v1"])
def test_caption_urls_are_https_or_this_machine(url):
    assert CaptionConfig(base_url=url).base_url == url


@pytest.mark.parametrize("url", ["http://api.example.com/v1?key=s3cr3t", "http://10.0.0.5:8000/v1",
                                 "http://[::ffff:10.0.0.5]/v1", "ftp://api.example.com/v1", "api.openai.com/v1"])
def test_caption_urls_that_would_expose_the_key_are_refused_at_config_time(url):
    with pytest.raises(InvalidInputError, match="must be https://, or http:// only to a loopback host") as e:
        CaptionConfig(base_url=url)
    assert "s3cr3t" not in str(e.value)


def test_the_ingest_command_refuses_a_plain_http_caption_url_before_it_starts(tmp_path):
    from typer.testing import CliRunner

    from tritonrepo.cli import app

    done = CliRunner().invoke(app, ["ingest", "run", str(tmp_path / "m.jsonl"), "--store", str(tmp_path / "s.db"),
                                    "--caption-url", "http://api.example.com/v1?key=s3cr3t"])
    assert done.exit_code == 1 and "'http://api.example.com/v1?…' refused" in done.output
    assert "s3cr3t" not in done.output and not (tmp_path / "s.db").exists()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: what a decompression bomb's header says is all Pillow reads
    at open."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    from tritonrepo.services.captions import MAX_PIXELS
    from tritonrepo.ensembles.video_io import VideoError

    assert MAX_PIXELS == 50_000_000
    with pytest.raises(InvalidInputError, match=r"image of 8000x7000 = 56.0 megapixels is over the 50-megapixel"):
        load_image(_png_header(8000, 7000))
    with pytest.warns(Warning), pytest.raises(InvalidInputError, match="over the 50-megapixel limit"):
        load_image(_png_header(10000, 10000))  # Pillow warns above its own 89 MP
    with pytest.raises(InvalidInputError, match="over the 50-megapixel limit"):
        load_image(_png_header(20000, 20000))  # Pillow's own guard fires first (400 MP)
    video = tmp_path / "huge.avi"  # one black 8000x7000 MJPEG frame
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=black:s=8000x7000:d=1", "-frames:v", "1",
                    "-c:v", "mjpeg", "-strict", "unofficial", str(video)], check=True)
    with pytest.raises(VideoError, match="video frame of 8000x7000 = 56.0 megapixels is over the 50-megapixel"):
        keyframes(video, [0])


def test_large_jpegs_are_decoded_at_a_reduced_scale_into_the_same_picture(frames, monkeypatch):
    from PIL import Image, ImageFile

    big = np.asarray(Image.fromarray(frames[0]).resize((3200, 1800), Image.Resampling.BICUBIC))
    data = jpeg(big, quality=95)
    decoded, load = [], ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or load(self))
    small = load_image(data, max_side=512)
    monkeypatch.undo()
    assert set(decoded) == {(800, 450)}  # 1/4 scale (the smallest covering 512x288), not the 5.8 MP of the file
    full = Image.open(io.BytesIO(data)).convert("RGB")
    full.thumbnail((512, 512))
    assert small.shape == np.asarray(full).shape == (288, 512, 3)
    assert np.abs(small.astype(int) - np.asarray(full).astype(int)).mean() < 3  # the same picture
