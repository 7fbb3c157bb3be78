"""A local HTTP server speaking the OpenAI chat-completions wire format, for caption tests (no external API is
reachable here). Its answers are recorded-format responses whose text says what it is: a test server describing the
image's hash and size, never a model's caption. It can be scripted to fail (429 with Retry-After, 500, a timeout,
malformed JSON, 400, 401) and to enforce its own rate limit, and it records every request."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "test-key-not-secret"


@dataclass
class Request:
    at: float
    status: int
    image_sha256: str | None
    tokens_in: int = 0
    tokens_out: int = 0
    answered: bool = True  # False: a malformed body, or a delay the client gave up on (a real provider may bill it)


class FakeOpenAI:
    """``faults``: what the next requests get (e.g. "429", "500", "timeout", "malformed", "400", "401"), one each;
    ``limit_per_s``: answer 429 (Retry-After: ``retry_after``) beyond this many requests in the last second."""

    def __init__(self, limit_per_s: float | None = None, retry_after: str = "1", timeout_sleep_s: float = 3.0):
        self.faults: deque[str] = deque()
        self.limit_per_s = limit_per_s
        self.retry_after = retry_after
        self.timeout_sleep_s = timeout_sleep_s
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                fake._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def ok(self) -> list[Request]:
        """Requests answered with a caption the client could read."""
        return [r for r in self.requests if r.status == 200 and r.answered]

    # ---- one request ----------------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        now = time.monotonic()
        with self._lock:
            fault = self.faults.popleft() if self.faults else None
            recent = sum(1 for r in self.requests if r.status == 200 and now - r.at < 1.0)
            if fault is None and self.limit_per_s is not None and recent >= self.limit_per_s:
                fault = "429"
            record = Request(now, 0, None)
            self.requests.append(record)
        if h.path != "/v1/chat/completions":
            return self._send(h, record, 404, {"error": {"message": f"no route {h.path}"}})
        if h.headers.get("Authorization") != f"Bearer {KEY}" or fault == "401":
            return self._send(h, record, 401, {"error": {"message": "Incorrect API key provided",
                                                         "type": "invalid_request_error"}})
        if fault == "429":
            return self._send(h, record, 429, {"error": {"message": "Rate limit reached", "type": "requests"}},
                              {"Retry-After": self.retry_after})
        if fault == "500":
            return self._send(h, record, 500, {"error": {"message": "The server had an error", "type": "server_error"}})
        if fault == "400":
            return self._send(h, record, 400, {"error": {"message": "Invalid image", "type": "invalid_request_error"}})
        if fault == "timeout":
            record.answered = False
            time.sleep(self.timeout_sleep_s)
        try:
            request = json.loads(body)
            image = request["messages"][0]["content"][1]["image_url"]["url"]
            prompt = request["messages"][0]["content"][0]["text"]
            data = base64.b64decode(image.split(",", 1)[1])
        except (ValueError, KeyError, IndexError) as e:
            return self._send(h, record, 400, {"error": {"message": f"bad request body: {e}"}})
        record.image_sha256 = hashlib.sha256(data).hexdigest()
        if fault == "malformed":
            record.answered = False
            return self._send_raw(h, record, 200, b'{"id": "chatcmpl-test", "choices": [{"message": ')
        from PIL import Image

        width, height = Image.open(io.BytesIO(data)).size
        text = (f"[fake-openai test server, not a model's output] image sha256:{record.image_sha256[:16]} "
                f"{width}x{height}")
        record.tokens_in, record.tokens_out = 85 + len(prompt) // 4, len(text) // 4
        self._send(h, record, 200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": record.tokens_in, "completion_tokens": record.tokens_out,
                      "total_tokens": record.tokens_in + record.tokens_out}})

    def _send(self, h, record: Request, status: int, payload: dict, headers: dict | None = None) -> None:
        self._send_raw(h, record, status, json.dumps(payload).encode(), headers)

    def _send_raw(self, h, record: Request, status: int, raw: bytes, headers: dict | None = None) -> None:
        record.status = status
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(raw)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass
