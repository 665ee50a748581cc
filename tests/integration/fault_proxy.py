"""A fault-injecting HTTP/1.1 reverse proxy on 127.0.0.1 in front of an S3 server (moto).

Clients point ``endpoint_url`` at ``proxy.url``; each request is forwarded to the upstream
server, or answered with a fault instead. Two sources of faults:

- a *rate*: each request of a chosen class (``read`` = GET/HEAD, ``write`` = PUT/POST/DELETE)
  fails with probability ``rate``, the kind drawn from ``kinds`` by a seeded RNG;
- *rules*: a request whose target (``/bucket/key?query``) matches a regex fails with a given
  kind, the first ``times`` matches (or always): "503 the first 5 PUTs of shard-00001's
  manifest", "403 on this input".

Kinds: ``500`` (InternalError), ``503`` (SlowDown), ``reset`` (the connection is dropped with no
answer; a write is first forwarded or not, at random, so the client cannot know whether it
landed), ``lost-reply`` (a write is forwarded, then the connection dropped), ``truncate`` (a GET
answer announces its full Content-Length and stops half way; a PUT reaches the server with half
its body and both connections are dropped), and the permanent ``403`` (AccessDenied) and ``404``
(NoSuchKey). ``counts[(class, kind)]`` says how often each
was injected, ``requests[class]`` how many requests came.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import unquote, urlsplit

TRANSIENT_KINDS = ("500", "503", "reset", "truncate")
READS = frozenset({"GET", "HEAD"})
WRITES = frozenset({"PUT", "POST", "DELETE"})
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-connection", "expect"}
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "403": (403, "AccessDenied", "Access Denied"),
    "404": (404, "NoSuchKey", "The specified key does not exist."),
}


def method_class(method: str) -> str:
    """``read`` for GET/HEAD, ``write`` for PUT/POST/DELETE, else ``other``."""
    return "read" if method in READS else "write" if method in WRITES else "other"


@dataclass
class Rule:
    """Fail requests of ``methods`` whose target matches ``pattern`` with ``kind``, the first
    ``times`` matches (None = every match)."""

    pattern: str
    kind: str
    methods: frozenset[str] = READS | WRITES
    times: int | None = None
    hits: int = 0
    _regex: re.Pattern = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.pattern)

    def take(self, method: str, target: str) -> bool:
        """Whether this rule fires for the request (and count it when it does)."""
        if method not in self.methods or not self._regex.search(target):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


class FaultProxy:
    """The proxy: ``start()`` it, use ``url``, read ``counts``, ``stop()`` it (or use ``with``)."""

    def __init__(self, upstream: str, *, rate: float = 0.0, kinds: tuple[str, ...] = TRANSIENT_KINDS,
                 classes: tuple[str, ...] = ("read", "write"), seed: int = 0):
        """A proxy to ``upstream`` (``http://host:port``) failing ``rate`` of ``classes``."""
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rate, self.kinds, self.classes = rate, tuple(kinds), tuple(classes)
        self.rules: list[Rule] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.requests: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The endpoint to give clients."""
        assert self._server is not None, "start() the proxy first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_rule(self, pattern: str, kind: str, *, methods: frozenset[str] | set[str] = READS | WRITES,
                 times: int | None = None) -> Rule:
        """Add a targeted fault (see ``Rule``); returns it so a test can read its ``hits``."""
        rule = Rule(pattern, kind, frozenset(methods), times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """No more faults: rate 0, no rules (counters are kept)."""
        with self._lock:
            self.rate, self.rules = 0.0, []

    def choose(self, method: str, target: str) -> str | None:
        """The fault for this request (None = forward it untouched); counts what it picks."""
        cls = method_class(method)
        with self._lock:
            self.requests[cls] += 1
            kind = next((r.kind for r in self.rules if r.take(method, target)), None)
            if kind is None and cls in self.classes and self._rng.random() < self.rate:
                usable = [k for k in self.kinds if not (k == "truncate" and method == "HEAD")]
                kind = self._rng.choice(usable) if usable else None
            if kind is not None:
                self.counts[(cls, kind)] += 1
            return kind

    def coin(self) -> bool:
        """A fair coin from the proxy's seeded RNG."""
        with self._lock:
            return self._rng.random() < 0.5

    def start(self) -> FaultProxy:
        """Listen on 127.0.0.1 (a free port) in a daemon thread."""
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _error_xml(code: str, message: str, resource: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><Resource>{resource}</Resource>"
            f"<RequestId>fault-proxy</RequestId></Error>").encode()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses its connections
    owner: FaultProxy

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet in tests

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the socket was dropped on purpose

    def _read_body(self) -> bytes:
        """The request body, de-chunked when the client sent Transfer-Encoding: chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        method, target = self.command, unquote(self.path)
        body = self._read_body()  # always consumed: the connection's framing depends on it
        kind = self.owner.choose(method, target)
        if kind in _ERRORS:
            self._send_error(kind, urlsplit(target).path)
        elif kind in ("reset", "lost-reply"):
            if method_class(method) == "write" and (kind == "lost-reply" or self.owner.coin()):
                self._forward(method, body)  # landed, but the client never hears of it
            self._drop()
        elif kind == "truncate" and method_class(method) == "write":
            self._forward(method, body, cut=True)
            self._drop()
        else:
            status, reason, headers, payload = self._forward(method, body)
            self._respond(status, reason, headers, payload, truncate=kind == "truncate")

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

    def _forward(self, method: str, body: bytes, cut: bool = False
                 ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send the request upstream; with ``cut``, only half the body and then hang up."""
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            if cut:
                conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
                for key, value in headers.items():
                    conn.putheader(key, value)
                conn.endheaders(body[: len(body) // 2])
                return 0, "", [], b""
            conn.request(method, self.path, body=body if body or method in WRITES else None,
                         headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, resp.reason, resp.getheaders(), payload
        finally:
            conn.close()

    def _respond(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes,
                 truncate: bool = False) -> None:
        self.send_response_only(status, reason)
        length = None
        for key, value in headers:
            if key.lower() in _HOP_BY_HOP or key.lower() in ("content-length", "date", "server"):
                if key.lower() == "content-length":
                    length = value
                continue
            self.send_header(key, value)
        # HEAD keeps the object's length; everything else says what it sends.
        self.send_header("Content-Length", length if self.command == "HEAD" and length
                         else str(len(payload)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if truncate and len(payload) > 1:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self._drop()
            return
        self.wfile.write(payload)

    def _send_error(self, kind: str, resource: str) -> None:
        status, code, message = _ERRORS[kind]
        payload = _error_xml(code, message, resource)
        self.send_response_only(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", "fault-proxy")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _drop(self) -> None:
        """Hang up at once with a TCP reset (SO_LINGER 0), the way a dying peer does."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
