"""One way to write whole files on any fsspec store, atomically on every store.

Object stores (S3, GCS, Azure, memory) make a single PUT visible all at once, multipart uploads
included, so a file is written in place with one ``pipe_file``: a rename there would be a copy
and a delete, not atomic, and would leave a ``.partial`` object behind on failure. File-like
stores (local disk, NFS) get a hidden temporary name in the same folder and a rename, which is
atomic within one file system. Readers therefore see either nothing or the whole file.

Needs only fsspec: the engine (priors, checkpoints, training sets) and the pipeline's I/O
workers (``tasks.storage``) share it without importing torch.
"""

from __future__ import annotations

import posixpath
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs

# Stores where one PUT is atomic; everything else is treated as a file system with renames.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory", "r2"})


def open_fs(uri: str, storage_options: dict[str, Any] | None = None
            ) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path without protocol) for any fsspec URI."""
    return url_to_fs(uri, **(storage_options or {}))


def protocol(fs: fsspec.AbstractFileSystem) -> str:
    """The main protocol name of ``fs`` (``file``, ``s3``, ``memory``, ...)."""
    proto = fs.protocol
    return proto[0] if isinstance(proto, (tuple, list)) else proto


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    """True for stores where one PUT is atomic (S3, GCS, Azure, memory)."""
    return protocol(fs) in OBJECT_STORES


def write_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` at ``path`` so that readers see either nothing or the whole file."""
    if is_object_store(fs):
        fs.pipe_file(path, data)
        return
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = posixpath.join(parent, f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
        fs.mv(tmp, path)
    except BaseException:
        try:
            fs.rm(tmp)
        except (OSError, FileNotFoundError):
            pass
        raise


def write_uri_atomic(uri: str, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """``write_atomic`` addressed by URI (opens the store itself)."""
    fs, path = open_fs(uri, storage_options)
    write_atomic(fs, path, data)

