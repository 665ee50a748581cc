"""Damaged manifests: tell a trustworthy commit marker from a truncated or foreign file, and move
a damaged one aside so its shard re-runs.

A manifest is trusted only when its bytes parse as Parquet, its file metadata carries Restora's
keys (a config hash; the shard id, where present, naming the shard it sits under), it has the columns resume and
the summary read, and it holds one row per item of the shard. Anything else is damaged: it is
moved to ``<output>/damaged/<name>.<UTC timestamp>`` (outside ``manifests/``, so dataset readers
of that folder never see it) and never deleted, so a person can look at it.
"""

from __future__ import annotations

import io
import posixpath
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .manifest import (
    META_CONFIG_HASH,
    META_SHARD_ID,
    SCHEMA_VERSION,
    CommittedManifest,
    ManifestVersionError,
    schema_version,
)
from .storage import full_uri, is_object_store, join, open_fs

DAMAGED_DIR = "damaged"
# Columns every manifest version has and that resume, --retry-failed and the summary read.
_REQUIRED = ("id", "source_uri", "output_uri", "status", "error", "config_hash")
_STATUSES = {"ok", "error"}


class DamagedManifestError(ValueError):
    """A file in ``manifests/`` that is not a readable Restora manifest of its shard."""


@dataclass(frozen=True)
class MovedManifest:
    """Where a damaged manifest went, and why it was not trusted."""

    shard_id: str
    uri: str
    moved_to: str
    reason: str


def damaged_dir(output_uri: str) -> str:
    """Folder that receives damaged manifests (a sibling of ``manifests/``)."""
    return join(output_uri, DAMAGED_DIR)


def check_manifest(uri: str, shard_id: str, expected_rows: int,
                   storage_options: dict[str, Any] | None = None) -> CommittedManifest | None:
    """The committed manifest at ``uri``, rows included (None when absent); DamagedManifestError
    when it cannot be trusted as shard ``shard_id``'s commit marker; ManifestVersionError when
    newer Restora wrote it."""
    fs, path = open_fs(uri, storage_options)
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        return None
    try:
        # One GET for the whole file: the footer alone would not show a damaged data page.
        table = pq.read_table(io.BytesIO(data), use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DamagedManifestError(f"unreadable Parquet ({len(data)} bytes): {exc}") from None
    meta = table.schema.metadata or {}
    if META_CONFIG_HASH not in meta:
        raise DamagedManifestError("not a Restora manifest: its metadata has no restora.config_hash")
    written_for = meta.get(META_SHARD_ID, shard_id.encode()).decode(errors="replace")
    if written_for != shard_id:
        raise DamagedManifestError(f"written for shard '{written_for}', not '{shard_id}'")
    try:
        version = schema_version(meta)
    except ManifestVersionError as exc:
        raise DamagedManifestError(str(exc)) from None
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing and version <= SCHEMA_VERSION:
        raise DamagedManifestError(f"schema version {version} but no column(s) {missing}")
    if version <= SCHEMA_VERSION:
        statuses = set(table["status"].to_pylist())
        if not statuses <= _STATUSES:
            raise DamagedManifestError(f"unknown status value(s) {sorted(map(str, statuses - _STATUSES))}")
        if table.num_rows != expected_rows:
            raise DamagedManifestError(f"{table.num_rows} row(s) for a shard of {expected_rows} item(s)")
    return CommittedManifest(config_hash=meta[META_CONFIG_HASH].decode(errors="replace"),
                             schema_version=version, table=table)


def move_aside(uri: str, output_uri: str, shard_id: str, reason: str,
               storage_options: dict[str, Any] | None = None) -> MovedManifest:
    """Move a damaged manifest into ``damaged/`` under a timestamped name; say where it went."""
    fs, path = open_fs(uri, storage_options)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"{time.time() % 1:.6f}"[1:]
    dfs, folder = open_fs(damaged_dir(output_uri), storage_options)
    target = posixpath.join(folder, f"{posixpath.basename(path)}.{stamp}")
    if not is_object_store(dfs):
        dfs.makedirs(folder, exist_ok=True)
    fs.mv(path, target)
    return MovedManifest(shard_id=shard_id, uri=uri, moved_to=full_uri(dfs, target), reason=reason)
