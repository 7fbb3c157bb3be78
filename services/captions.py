"""Captions for photos and video keyframes from an external multimodal model, for ingestion.

- ``Provider``: one attempt at captioning one JPEG. ``OpenAICompatible`` speaks the chat-completions wire format
  (OpenAI, Azure OpenAI, vLLM, LiteLLM, Ollama and other gateways): ``base_url``, model name, API key read from an
  environment variable (never from a file of the repository), the image as a base64 data URL.
- ``Captioner``: what every provider gets around it: requests and tokens per minute (``RateLimiter``), concurrency,
  timeouts, retries with capped, jittered backoff that honour ``Retry-After`` (a 429 pauses every caller for that
  long, not just the one that got it), and cost accounting (tokens in and out, US$ from ``PRICES``).
- Keyframes: the middle frame of each shot, decoded by FFmpeg (PyAV, as the shot model's CPU decoder), scaled to at
  most ``max_side`` pixels and JPEG-encoded; ``phash`` and ``PhashIndex`` find near-identical keyframes so they are
  captioned once.

Errors: 429, 408, 409, 5xx, timeouts, dropped connections and malformed responses are retried; any other 4xx is
permanent for the asset (a 401/403 names the API key variable). Retries exhausted leave the asset pending.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import ipaddress
import json
import logging
import math
import os
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from tritonrepo.clients.grpc_core import RetryPolicy
from tritonrepo.errors import ClientError, InvalidInputError

from .fetch import redact

log = logging.getLogger(__name__)

PROMPT = ("Write one factual sentence describing this news image or video frame for a search index: who or what is "
          "shown, the setting and the action. Do not guess names. No preamble.")
PROMPT_VERSION = "v1"  # bump whenever PROMPT changes: it is part of every caption's cache key
# Photos and video frames above this many pixels are refused before decoding (a small file can declare a huge image:
# a decompression bomb); 50 MP holds any camera's photo (a 45 MP full-frame sensor, 8K video is 33 MP).
MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class Price:
    """US$ per million tokens, with where the figure comes from."""

    input_per_mtok: float
    output_per_mtok: float
    source: str


# Provider list prices (US$ per 1M tokens). Not re-checked from this machine (no internet): verify before budgeting
# and add your provider's models here or pass ``price=`` to CaptionConfig.
PRICES: dict[tuple[str, str], Price] = {
    ("openai", "gpt-4o-mini"): Price(0.15, 0.60, "openai.com/api/pricing, list price as of 2024-10"),
    ("openai", "gpt-4o"): Price(2.50, 10.00, "openai.com/api/pricing, list price as of 2024-10"),
}


@dataclass(frozen=True, kw_only=True)
class CaptionConfig:
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    provider: str = "openai"  # price table and cache key
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable, never from a file
    prompt: str = PROMPT
    prompt_version: str = PROMPT_VERSION
    detail: str = "low"  # OpenAI image detail: "low" is a fixed 85 input tokens per image
    image_tokens: int = 85  # input tokens an image costs (rate-limit estimate before the response says)
    max_tokens: int = 80
    max_side: int = 512  # keyframes and photos are scaled to fit this before sending
    requests_per_minute: float = 500.0
    tokens_per_minute: float = 200_000.0
    burst_s: float = 1.0  # the buckets hold this many seconds of allowance: no minute's quota is spent in one burst
    concurrency: int = 8
    timeout_s: float = 60.0
    retry: RetryPolicy = RetryPolicy(attempts=8, backoff_s=0.5, max_backoff_s=30.0)
    phash_distance: int = 6  # keyframes this close (of 64 bits) share one caption
    price: Price | None = None  # None: PRICES[(provider, model)]

    def __post_init__(self):
        check_provider_url(self.base_url)

    @property
    def key(self) -> str:
        """Cache key of a caption: provider, model and prompt version (a new one re-captions)."""
        return f"caption:{self.provider}/{self.model}@{self.prompt_version}"

    def unit_price(self) -> Price:
        price = self.price or PRICES.get((self.provider, self.model))
        if price is None:
            raise InvalidInputError(f"no price for {self.provider}/{self.model}: add it to services.captions.PRICES "
                                    f"or give CaptionConfig(price=Price(...))")
        return price


def check_provider_url(url: str) -> None:
    """The API key goes with every request: only ``https://``, or plain ``http://`` to this machine (127.0.0.0/8, ::1,
    localhost: a local gateway or test server)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts and host and (parts.scheme == "https" or parts.scheme == "http" and _loopback(host)):
        return
    raise InvalidInputError(f"caption base URL {redact(url)!r} refused: the API key is sent to it, so it must be "
                            "https://, or http:// only to a loopback host (127.0.0.0/8, ::1, localhost)")


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


@dataclass(frozen=True)
class Caption:
    text: str
    tokens_in: int
    tokens_out: int
    usd: float
    model: str
    attempts: int = 1

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> "Caption":
        return cls(**json.loads(payload))


class CaptionError(ClientError):
    """A caption request failed. ``retriable``: another attempt may succeed; ``retry_after``: the provider's
    ``Retry-After`` in seconds, when it sent one."""

    def __init__(self, message: str, *, retriable: bool, retry_after: float | None = None, status: str | None = None):
        super().__init__(message, model="captions", status=status)
        self.retriable = retriable
        self.retry_after = retry_after


class CaptionAuthError(CaptionError):
    """The provider refused the API key (HTTP 401/403): every request would fail the same way."""


class Provider(Protocol):
    async def caption(self, jpeg: bytes, trace_id: str = "") -> tuple[str, int, int]:
        """One attempt: (caption, input tokens, output tokens) or CaptionError."""

    async def close(self) -> None: ...


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class OpenAICompatible:
    """Chat completions with one image: POST {base_url}/chat/completions."""

    def __init__(self, config: CaptionConfig):
        self.config = config
        key = os.environ.get(config.api_key_env)
        if not key:
            raise InvalidInputError(f"set the API key in the environment variable {config.api_key_env} (captions from "
                                    f"{redact(config.base_url)})")
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._session = None

    def body(self, jpeg: bytes) -> dict:
        url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
        return {"model": self.config.model, "max_tokens": self.config.max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": self.config.prompt},
                    {"type": "image_url", "image_url": {"url": url, "detail": self.config.detail}}]}]}

    async def caption(self, jpeg: bytes, trace_id: str = "") -> tuple[str, int, int]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
        url = self.config.base_url.rstrip("/") + "/chat/completions"
        shown = redact(url)
        headers = self._headers | ({"X-Request-ID": trace_id} if trace_id else {})
        try:
            async with self._session.post(url, json=self.body(jpeg), headers=headers) as r:
                text = await r.text(errors="replace")
                status, wait = r.status, retry_after_seconds(r.headers.get("Retry-After"))
        except asyncio.TimeoutError as e:
            raise CaptionError(f"POST {shown}: no answer within {self.config.timeout_s:g} s", retriable=True,
                               status="timeout") from e
        except aiohttp.ClientError as e:
            raise CaptionError(f"POST {shown}: {type(e).__name__}: {e}", retriable=True, status="connection") from e
        if status in (401, 403):
            raise CaptionAuthError(f"POST {shown}: HTTP {status}: the provider refused the key in "
                                   f"{self.config.api_key_env}: {text[:300]}", retriable=False, status=str(status))
        if status != 200:
            retriable = status in (408, 409, 429) or status >= 500
            raise CaptionError(f"POST {shown}: HTTP {status}: {text[:300]}", retriable=retriable, retry_after=wait,
                               status=str(status))
        try:
            answer = json.loads(text)
            content = answer["choices"][0]["message"]["content"]
            usage = answer["usage"]
            tokens = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
            if not isinstance(content, str) or not content.strip():
                raise ValueError("empty caption")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise CaptionError(f"POST {shown}: malformed chat completion ({type(e).__name__}: {e}): {text[:200]}",
                               retriable=True, status="malformed") from e
        return content.strip(), *tokens

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class RateLimiter:
    """Requests and tokens per minute as two buckets refilled continuously (each holding ``burst_s`` seconds of
    allowance). A 429 means the provider's real limit is below ours (shared keys, other clients): every caller waits
    out its ``Retry-After``, the request rate halves (at most once per second) and grows back by 1 % of the configured
    rate per success, so a storm of 429s does not repeat after each pause."""

    def __init__(self, requests_per_minute: float, tokens_per_minute: float, burst_s: float = 1.0):
        self.configured = (requests_per_minute / 60.0, tokens_per_minute / 60.0)
        self.burst_s = burst_s
        self.factor = 1.0  # share of the configured request rate allowed now
        self.level = [max(1.0, r * burst_s) for r in self.configured]
        self.paused_until = 0.0
        self._last_cut = -1e9
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    @property
    def rates(self) -> tuple[float, float]:
        return self.configured[0] * self.factor, self.configured[1]

    @property
    def capacity(self) -> tuple[float, float]:
        return tuple(max(1.0, r * self.burst_s) for r in self.rates)

    def _refill(self, now: float) -> None:
        if now <= self._stamp:  # paused: nothing accrues
            return
        for i, (rate, cap) in enumerate(zip(self.rates, self.capacity)):
            self.level[i] = min(cap, self.level[i] + rate * (now - self._stamp))
        self._stamp = now

    async def acquire(self, tokens: float) -> None:
        tokens = min(tokens, self.capacity[1])  # a request bigger than the bucket waits for a full one
        async with self._lock:  # first come, first served
            while True:
                now = time.monotonic()
                self._refill(now)
                if now >= self.paused_until and self.level[0] >= 1 and self.level[1] >= tokens:
                    self.level[0] -= 1
                    self.level[1] -= tokens
                    return
                wait = max(self.paused_until - now, (1 - self.level[0]) / self.rates[0],
                           (tokens - self.level[1]) / self.rates[1])
                await asyncio.sleep(max(wait, 0.001))

    def settle(self, estimated: float, actual: float) -> None:
        """Correct the token bucket once the response says what the request used."""
        self.level[1] = min(self.capacity[1], self.level[1] + estimated - actual)

    def throttled(self, retry_after: float) -> None:
        """A 429: everyone pauses; the request rate halves (once per second however many 429s arrive together)."""
        now = time.monotonic()
        self.paused_until = max(self.paused_until, now + retry_after)
        if now - self._last_cut >= 1.0:
            self._refill(now)
            self.factor, self._last_cut = max(0.01, self.factor / 2), now
        self.level[0] = 0.0  # no burst when the pause ends: requests resume at the (lower) rate
        self._stamp = max(self._stamp, self.paused_until)

    def succeeded(self) -> None:
        self.factor = min(1.0, self.factor + 0.01)


@dataclass
class Spend:
    """What captions cost in one run (cache hits cost nothing)."""

    requests: int = 0  # HTTP requests sent, retries included
    captions: int = 0  # captions paid for
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)  # status -> count


class Captioner:
    """Rate-limited, retried, costed captioning over a ``Provider``."""

    def __init__(self, config: CaptionConfig, provider: Provider | None = None, metrics=None):
        self.config = config
        self.price = config.unit_price()
        self.provider = provider or OpenAICompatible(config)
        self.limiter = RateLimiter(config.requests_per_minute, config.tokens_per_minute, config.burst_s)
        self._slots = asyncio.Semaphore(config.concurrency)
        self.spend = Spend()
        self.metrics = metrics

    def _estimate(self) -> int:
        return len(self.config.prompt) // 4 + self.config.image_tokens + self.config.max_tokens

    async def caption(self, jpeg: bytes, trace_id: str = "") -> Caption:
        retry = self.config.retry
        for attempt in range(retry.attempts):
            estimate = self._estimate()
            await self.limiter.acquire(estimate)
            self.spend.requests += 1
            try:
                async with self._slots:
                    text, tokens_in, tokens_out = await self.provider.caption(jpeg, trace_id)
            except CaptionError as e:
                self.limiter.settle(estimate, 0)  # a refused request used no tokens
                status = e.status or "error"
                self.spend.errors[status] = self.spend.errors.get(status, 0) + 1
                if self.metrics:
                    self.metrics.captions.labels(status).inc()
                if not e.retriable or attempt == retry.attempts - 1:
                    raise
                pause = retry.delay(attempt)
                if e.status == "429" or e.retry_after is not None:
                    pause = max(pause, e.retry_after or 0.0)
                    self.limiter.throttled(e.retry_after or pause)  # everyone waits, not only this request
                log.info("caption retry %d after %s: pausing %.2f s", attempt + 1, status, pause,
                         extra={"fields": {"trace_id": trace_id, "status": status}})
                await asyncio.sleep(pause)
                continue
            self.limiter.settle(estimate, tokens_in + tokens_out)
            self.limiter.succeeded()
            usd = (tokens_in * self.price.input_per_mtok + tokens_out * self.price.output_per_mtok) / 1e6
            s = self.spend
            s.captions, s.tokens_in, s.tokens_out, s.usd = (s.captions + 1, s.tokens_in + tokens_in,
                                                            s.tokens_out + tokens_out, s.usd + usd)
            if self.metrics:
                self.metrics.captions.labels("ok").inc()
                self.metrics.caption_tokens.labels("in").inc(tokens_in)
                self.metrics.caption_tokens.labels("out").inc(tokens_out)
                self.metrics.caption_usd.inc(usd)
            return Caption(text, tokens_in, tokens_out, usd, self.config.model, attempt + 1)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.provider.close()


# ---- images and keyframes ------------------------------------------------------------------------------------------


def middle_frames(shots: list[dict]) -> list[int]:
    """The middle frame of each shot (``start_frame``/``end_frame`` inclusive, as the shot model reports them)."""
    return [(s["start_frame"] + s["end_frame"]) // 2 for s in shots]


def keyframes(video: bytes | Path, indices: list[int], max_side: int = 512) -> dict[int, np.ndarray]:
    """RGB frames UINT8 [H, W, 3] at these frame indices (decode order, as the shot model counts), decoded by FFmpeg
    through PyAV and scaled to fit ``max_side``."""
    import av

    from tritonrepo.ensembles.video_io import BufferFile, VideoError

    wanted, found = set(indices), {}
    try:
        container = av.open(str(video) if isinstance(video, Path) else BufferFile(video), mode="r")
    except av.FFmpegError as e:
        raise VideoError(f"not a video FFmpeg can read: {e}") from e
    with container:
        stream = container.streams.video[0]
        _check_pixels(stream.codec_context.width, stream.codec_context.height, "video frame", VideoError)
        stream.thread_type = "AUTO"
        try:
            for n, frame in enumerate(container.decode(stream)):
                if n in wanted:
                    scale = min(1.0, max_side / max(frame.width, frame.height))
                    w, h = max(2, round(frame.width * scale / 2) * 2), max(2, round(frame.height * scale / 2) * 2)
                    found[n] = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
                    if len(found) == len(wanted):
                        break
        except av.FFmpegError as e:
            raise VideoError(f"corrupt video data at frame {len(found)}: {e}") from e
    return found


def load_image(data: bytes, max_side: int = 512) -> np.ndarray:
    """A photo's RGB pixels scaled to fit ``max_side``; anything Pillow cannot read is bad input. The size is read
    from the header first (``Image.open`` decodes nothing): over ``MAX_PIXELS`` is refused, and a JPEG is decoded at
    the smallest 1/2, 1/4 or 1/8 scale still covering the thumbnail (its DCT scaling), not at full size."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        _check_pixels(width, height, "image")
        scale = min(1.0, max_side / max(width, height, 1))
        image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))  # JPEG: at least this size
        image.load()
    except Image.DecompressionBombError as e:  # Pillow's own guard, at twice its MAX_IMAGE_PIXELS
        raise InvalidInputError(f"image over the {MAX_PIXELS / 1e6:g}-megapixel limit (captions.MAX_PIXELS): "
                                f"{e}") from e
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidInputError(f"not an image Pillow can read: {e}") from e
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side))
    return np.asarray(image)


def _check_pixels(width: int, height: int, what: str, error: type[Exception] = InvalidInputError) -> None:
    if width * height > MAX_PIXELS:
        raise error(f"{what} of {width}x{height} = {width * height / 1e6:.1f} megapixels is over the "
                    f"{MAX_PIXELS / 1e6:g}-megapixel limit (captions.MAX_PIXELS)")


def jpeg(pixels: np.ndarray, quality: int = 85) -> bytes:
    """JPEG bytes, deterministic for the same pixels (the caption cache keys on their hash)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_DCT32 = _dct_matrix(32)


def phash(pixels: np.ndarray) -> int:
    """64-bit perceptual hash: 32x32 grey, 2-D DCT, the 8x8 lowest frequencies against their median."""
    from PIL import Image

    grey = np.asarray(Image.fromarray(pixels).convert("L").resize((32, 32), Image.Resampling.LANCZOS), np.float64)
    low = (_DCT32 @ grey @ _DCT32.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])  # the DC term would skew the median
    return int("".join("1" if b else "0" for b in bits), 2)


class PhashIndex:
    """Near-duplicate lookup by Hamming distance: the 64 bits cut into ``distance + 1`` bands, so any hash within
    ``distance`` shares at least one whole band with it (pigeonhole); only those buckets are compared."""

    def __init__(self, distance: int, max_entries: int = 200_000):
        self.distance = distance
        self.bands = distance + 1
        self.max_entries = max_entries  # the oldest go first: near-duplicates cluster in time (a story's footage)
        self._buckets: dict[tuple[int, int], list[tuple[int, object]]] = {}
        self._order: deque[tuple[int, object]] = deque()

    def _keys(self, h: int):
        width = -(-64 // self.bands)
        return [(b, (h >> (b * width)) & ((1 << width) - 1)) for b in range(self.bands)]

    def find(self, h: int):
        """The value of an indexed hash within ``distance`` (the closest), or None."""
        best = None
        for key in self._keys(h):
            for other, value in self._buckets.get(key, ()):
                d = bin(h ^ other).count("1")
                if d <= self.distance and (best is None or d < best[0]):
                    best = (d, value)
        return None if best is None else best[1]

    def add(self, h: int, value) -> None:
        for key in self._keys(h):
            self._buckets.setdefault(key, []).append((h, value))
        self._order.append((h, value))
        if len(self._order) > self.max_entries:
            old = self._order.popleft()
            for key in self._keys(old[0]):
                bucket = self._buckets[key]
                bucket.remove(old)
                if not bucket:
                    del self._buckets[key]

    def __len__(self) -> int:
        return len(self._order)
