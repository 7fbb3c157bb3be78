"""Reading an ingestion asset's bytes without being turned against the machine that reads them.

- Local paths (and ``file://`` URIs) are read only inside allowed folders (the manifest's folder and each
  ``--allow-root``), judged on the resolved path, so ``..`` and symlinks that lead outside are refused.
- URLs are fetched only from public addresses: every address a name resolves to is checked (loopback, link-local,
  private, multicast, unspecified, reserved, IPv4-mapped IPv6 included) unless ``--allow-host`` names the host, and
  the connection goes to an address that was checked, so a name that resolves elsewhere a moment later (DNS
  rebinding) gains nothing. Redirects are followed by hand, at most ``MAX_REDIRECTS``, each hop checked again; HTTPS
  never redirects to plain HTTP. One deadline covers the whole download, and the size cap is checked against
  ``Content-Length`` and while streaming. Proxy variables (``http_proxy``...) are not used.
- ``redact``: a URL as logs, errors and dead letters show it, without user info, query or fragment (signed URLs
  carry their credentials there).
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from tritonrepo.errors import TritonRepoError

MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_REFUSED_KINDS = ("unspecified", "loopback", "link_local", "multicast", "reserved", "private")  # most telling first


class FetchError(TritonRepoError):
    """An asset's bytes could not be read. ``permanent``: retrying will not help (missing file, HTTP 4xx, a path or
    address the rules refuse)."""

    def __init__(self, message: str, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def redact(uri: str | None) -> str | None:
    """``scheme://host[:port]/path`` of a URL, with ``?…`` where a query was; paths and None unchanged."""
    if not uri or "://" not in uri:
        return uri
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: keep only what comes before any query
        return uri.split("?")[0].split("#")[0]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path,
                                    "…" if parts.query else "", ""))


# ---- local paths ---------------------------------------------------------------------------------------------------


def local_path(uri: str) -> Path:
    """The path a local ``uri`` names: a plain path or a ``file://`` URI (no other host than localhost)."""
    if uri.lower().startswith("file:"):
        parts = urllib.parse.urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"{redact(uri)}: a file:// URI names a local file, not one on host {parts.netloc!r}",
                             permanent=True)
        return Path(urllib.request.url2pathname(parts.path))
    if "://" in uri:
        raise FetchError(f"{redact(uri)}: only local paths, file://, http:// and https:// URIs are read",
                         permanent=True)
    return Path(uri)


def confine(path: Path, roots: Iterable[str | Path]) -> Path:
    """The resolved path (every symlink followed) if it lies inside one of ``roots``; refused (permanently)
    otherwise."""
    real = path.resolve()
    roots = [Path(r).resolve() for r in roots]
    if any(real.is_relative_to(root) for root in roots):
        return real
    shown = f"{path} (resolves to {real})" if real != path else str(path)
    raise FetchError(f"path {shown} is outside the manifest folder and every --allow-root (allowed: "
                     f"{', '.join(map(str, roots)) or 'none'})", permanent=True)


# ---- addresses -----------------------------------------------------------------------------------------------------


def address_kind(ip: str) -> str | None:
    """Why a fetch from this address is refused (``loopback``, ``private``, ...), or None for a public address.
    IPv4 addresses inside IPv6 (``::ffff:127.0.0.1``, 6to4) are judged as the IPv4 address they carry."""
    address = ipaddress.ip_address(ip.split("%")[0])  # without an IPv6 scope (fe80::1%eth0)
    if address.version == 6:
        address = address.ipv4_mapped or address.sixtofour or address
    for kind in _REFUSED_KINDS:
        if getattr(address, "is_" + kind):
            return kind.replace("_", "-")
    return None if address.is_global else "non-global"  # e.g. 100.64.0.0/10, shared carrier-grade NAT space


def host_key(host: str) -> str:
    """A host as ``--allow-host`` and URLs are compared: lower case, no brackets or final dot, IPs normalised."""
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _checked_addresses(host: str, port: int, allowed: set[str], where: str) -> list[str]:
    """Every address ``host`` resolves to, each checked unless the host is allowed by name."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise FetchError(f"{where}: cannot resolve {host}: {e.strerror}", permanent=False) from e
    ips = list(dict.fromkeys(info[4][0] for info in infos))
    if host_key(host) not in allowed:
        for ip in ips:
            kind = address_kind(ip)
            if kind:
                what = f"{host} is" if host_key(host) == host_key(ip) else f"{host} resolves to {ip},"
                raise FetchError(f"{where}: {what} a {kind} address; fetches from such addresses are refused unless "
                                 f"--allow-host {host} names the host", permanent=True)
    return ips


# ---- HTTP ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()  # certificates verified against the host name


class _Pinned(http.client.HTTPConnection):
    """HTTP(S) to an address checked beforehand; the Host header, and for HTTPS the SNI and the certificate check,
    use the name."""

    def __init__(self, host: str, port: int, ip: str, timeout: float, tls: bool):
        super().__init__(host, port, timeout=timeout)
        self.ip, self.tls = ip, tls
        if tls:
            self.default_port = 443

    def connect(self) -> None:
        self.sock = socket.create_connection((self.ip, self.port), self.timeout)
        if self.tls:
            self.sock = _tls().wrap_socket(self.sock, server_hostname=self.host)


def _cut(conn: _Pinned, expired: threading.Event) -> None:
    """At the deadline: wake whatever read is blocked on the connection (a slow drip never ends on its own)."""
    expired.set()
    sock = conn.sock
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's shutdown, under TLS too
        except OSError:
            pass


def fetch_url(url: str, *, limit: int, deadline_s: float, timeout_s: float, allow_hosts: Iterable[str] = (),
              max_redirects: int = MAX_REDIRECTS) -> bytes:
    """The body of ``url`` (at most ``limit`` bytes, within ``deadline_s`` in all, ``timeout_s`` per socket
    operation) under the rules above; ``FetchError`` otherwise (``permanent`` for refusals, HTTP 4xx but 408/429,
    oversize, the deadline and certificate failures)."""
    deadline = time.monotonic() + deadline_s
    allowed = {host_key(h) for h in allow_hosts}
    first = where = f"GET {redact(url)}"
    for _ in range(max_redirects + 1):
        location, body = _get(url, where, allowed, deadline, deadline_s, timeout_s, limit)
        if location is None:
            return body
        target = urllib.parse.urljoin(url, location)
        if url.lower().startswith("https:") and not target.lower().startswith("https:"):
            raise FetchError(f"{where}: refused redirect from https to {redact(target)}", permanent=True)
        url, where = target, f"{first} (redirected to {redact(target)})"
    raise FetchError(f"{where}: more than {max_redirects} redirects", permanent=True)


def _get(url: str, where: str, allowed: set[str], deadline: float, deadline_s: float, timeout_s: float,
         limit: int) -> tuple[str | None, bytes | None]:
    """One request: (redirect location, None) or (None, body)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise FetchError(f"{where}: not a valid URL ({e})", permanent=True) from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"{where}: only http:// and https:// URLs with a host are fetched", permanent=True)
    ips = _checked_addresses(parts.hostname, port, allowed, where)
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    late = FetchError(f"{where}: not complete within the {deadline_s:g} s deadline for a whole download "
                      "(IngestConfig.fetch_deadline_s, --fetch-deadline)", permanent=True)
    failure: Exception | None = None
    for ip in ips:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise late
        conn = _Pinned(parts.hostname, port, ip, min(timeout_s, remaining), tls=parts.scheme == "https")
        expired = threading.Event()
        watchdog = threading.Timer(remaining, _cut, (conn, expired))
        watchdog.daemon = True
        watchdog.start()
        try:
            try:
                conn.connect()
            except ssl.SSLCertVerificationError as e:
                raise FetchError(f"{where}: {e.verify_message or e}", permanent=True) from e
            except OSError as e:
                if expired.is_set():
                    raise late from e
                failure = e
                continue  # the next address of the name
            try:
                conn.request("GET", target, headers={"Accept-Encoding": "identity"})
                return _response(conn.getresponse(), where, limit, expired, late)
            except (OSError, http.client.HTTPException) as e:
                if expired.is_set():
                    raise late from e
                raise FetchError(f"{where}: {type(e).__name__}: {e}", permanent=False) from e
        finally:
            watchdog.cancel()
            conn.close()
    raise FetchError(f"{where}: cannot connect to {parts.hostname} ({', '.join(ips)}): {failure}", permanent=False)


def _response(response: http.client.HTTPResponse, where: str, limit: int, expired: threading.Event,
              late: FetchError) -> tuple[str | None, bytes | None]:
    status = response.status
    if status in _REDIRECTS:
        location = response.getheader("Location")
        if not location:
            raise FetchError(f"{where}: HTTP {status} without a Location header", permanent=True)
        return location, None
    if not 200 <= status < 300:
        retriable = status >= 500 or status in (408, 429)
        raise FetchError(f"{where}: HTTP {status} {response.reason}", permanent=not retriable)
    length = response.getheader("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise FetchError(f"{where}: Content-Length {length} is over the {limit}-byte limit", permanent=True)
    body = bytearray()
    while chunk := response.read1(1 << 16):
        body += chunk
        if len(body) > limit:
            raise FetchError(f"{where}: over the {limit}-byte limit", permanent=True)
        if expired.is_set():  # a drip that keeps coming after the watchdog cut the connection
            raise late
    if expired.is_set():  # the watchdog ended the body early
        raise late
    return None, bytes(body)
