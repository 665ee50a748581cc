"""Calling a test service as a real client would: retry its transient answers up to a deadline.

A server that is starting, or busy on a loaded CI box, answers 503 (or 502/504/429), refuses
connections or times out; a test that gives up on the first such answer fails at random. Every
test helper that calls a service (the Prefect API, moto's S3 server, `ray job submit`) goes
through :func:`call_with_retry`. Real errors (404, 422, a failed job) are raised at once.
"""

from __future__ import annotations

import socket
import time
import urllib.error
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

TRANSIENT_HTTP = frozenset({429, 502, 503, 504})


class TransientServiceError(RuntimeError):
    """Raised by a caller for an answer it knows to be transient (e.g. a CLI's output text)."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a transient answer worth retrying (busy, starting, connection lost)."""
    if isinstance(exc, TransientServiceError):
        return True
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in TRANSIENT_HTTP
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return isinstance(reason, (ConnectionError, socket.timeout, TimeoutError)) or \
            "refused" in str(reason).lower()
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
        return True
    response = getattr(exc, "response", None)  # botocore's ClientError of a busy S3 endpoint
    if isinstance(response, dict) and response.get("Error", {}).get("Code") in (
            "SlowDown", "ServiceUnavailable", "503"):
        return True
    return type(exc).__name__ in ("EndpointConnectionError", "ConnectTimeoutError",
                                  "ReadTimeoutError")


def call_with_retry(call: Callable[[], T], *, what: str, deadline_s: float = 60.0,
                    first_delay_s: float = 0.5, max_delay_s: float = 5.0) -> T:
    """``call()``, retried with growing pauses while it fails transiently, until ``deadline_s``;
    then the last error is raised with ``what`` in its message."""
    deadline = time.monotonic() + deadline_s
    delay = first_delay_s
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise AssertionError(f"{what}: still failing transiently after {deadline_s:.0f} s: "
                                     f"{type(exc).__name__}: {exc}") from exc
        time.sleep(delay)
        delay = min(delay * 2, max_delay_s)
