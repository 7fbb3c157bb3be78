"""A local HTTP origin on 127.0.0.1 for the fetch tests: subclass ``Origin`` with a ``do_GET`` and ``serve`` it."""

import http.server
import threading


class Origin(http.server.BaseHTTPRequestHandler):
    def send(self, status: int, body: bytes, **headers) -> None:
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def serve(handler: type[Origin]) -> http.server.ThreadingHTTPServer:
    """Serve ``handler`` on a free loopback port in a daemon thread (``server_address``, ``shutdown()``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
