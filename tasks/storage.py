"""fsspec helpers of the pipeline: join URIs, list files, classify transient errors; opening a
store and writing atomically come from ``restora_core.storage``."""

from __future__ import annotations

import errno
import os
import posixpath

import fsspec
from fsspec.core import split_protocol

# One atomic-write helper for the engine and the pipeline (restora_core/storage.py).
from restora_core.storage import is_object_store, open_fs, protocol, write_atomic

__all__ = ["TransientStorageError", "full_uri", "is_object_store", "is_transient_storage_error",
           "is_within", "join", "list_files", "location", "open_fs", "read_bytes", "write_atomic"]

_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE,
                     errno.EAGAIN, errno.EBUSY, errno.ENETUNREACH, errno.EHOSTUNREACH}
# S3 error codes that say "try again" (botocore's ClientError, before s3fs turns it into OSError).
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
                    "Throttling", "ThrottlingException", "RequestTimeTooSkewed"}
# Exception types (by name: their packages are optional) of a lost connection or a body cut
# short; a short body must be retried, never decoded as a broken image.
_TRANSIENT_TYPES = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                    "ClientConnectionError", "ServerDisconnectedError", "ClientOSError",
                    "ServerTimeoutError", "ConnectionClosedError", "ClientPayloadError",
                    "ContentLengthError", "TransferEncodingError", "IncompleteRead",
                    "IncompleteReadError", "ResponseStreamingError", "ProtocolError",
                    "ResponseParserError"}
_TRANSIENT_WORDS = ("slowdown", "slow down", "service unavailable", "serviceunavailable",
                    "internal error", "internalerror", "throttl", "timed out", "timeout",
                    "connection reset", "connection aborted", "temporarily", "503", "500 ")


class TransientStorageError(OSError):
    """A storage failure worth retrying (network, throttling, 5xx)."""


# Protocol spellings that name the same store, for comparing locations.
_SAME_STORE = {"s3a": "s3", "gcs": "gs", "local": "file", "abfss": "abfs"}


def location(uri: str) -> tuple[str, str]:
    """(protocol, path) that two URIs of one place share: local paths absolute with links
    resolved, protocol aliases folded (s3a -> s3), no trailing '/'; for chained URIs the last."""
    protocol, path = split_protocol(uri.rsplit("::", 1)[-1])
    protocol = _SAME_STORE.get(protocol or "file", protocol or "file")
    if protocol == "file":
        return protocol, os.path.realpath(os.path.expanduser(path))
    return protocol, path.strip("/")


def is_within(inner: str, outer: str) -> bool:
    """Whether ``inner`` is ``outer`` or lies under it (same store, a prefix at a '/')."""
    (p_in, in_path), (p_out, out_path) = location(inner), location(outer)
    if p_in != p_out:
        return False
    return in_path == out_path or in_path.startswith(out_path.rstrip("/") + "/")


def join(uri: str, *parts: str) -> str:
    """Join URI path parts with '/', keeping the protocol of ``uri``."""
    out = uri.rstrip("/")
    for part in parts:
        if part:
            out = f"{out}/{part.strip('/')}"
    return out


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The protocol-qualified URI of ``path`` on ``fs`` (plain path for local files)."""
    if protocol(fs) in ("file", "local"):
        return path
    return fs.unstrip_protocol(path)


def list_files(fs: fsspec.AbstractFileSystem, root: str, suffixes: tuple[str, ...]) -> list[str]:
    """Sorted paths relative to ``root`` of files under it whose lower-cased name ends in a suffix."""
    root = root.rstrip("/")
    if not fs.exists(root):
        return []
    found = fs.find(root, withdirs=False)
    rel = []
    for path in found:
        name = posixpath.basename(path)
        if name.startswith(".") or not name.lower().endswith(suffixes):
            continue
        rel.append(posixpath.relpath(path, root))
    return sorted(rel)


def read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """Whole file as bytes."""
    return fs.cat_file(path)


def is_transient_storage_error(exc: BaseException | None) -> bool:
    """Whether an exception (or one it wraps) looks like a retryable storage failure."""
    seen = 0
    while exc is not None and seen < 10:
        seen += 1
        if isinstance(exc, TransientStorageError):
            return True
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return False
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        if type(exc).__name__ in _TRANSIENT_TYPES:
            return True
        response = getattr(exc, "response", None)  # botocore's ClientError
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return status >= 500 or response.get("Error", {}).get("Code") in _TRANSIENT_CODES
        if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
            return True
        if isinstance(exc, OSError) and any(w in str(exc).lower() for w in _TRANSIENT_WORDS):
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return False
