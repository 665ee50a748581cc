"""The per-shard Parquet manifest: its schema, and writing (atomically, last) and reading it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .storage import join, open_fs, write_atomic

_TS = pa.timestamp("us", tz="UTC")

# One row per input image. Nullable columns are null where they do not apply (an error row has no
# output_uri, sampler settings or metrics; psnr/ssim/psnr_hole/lpips only exist when inputs are
# clean references; uncertainty_* only with samples > 1, flag only with an uncertainty threshold).
# steps, corrections, nfe and method_params are what the sampler ran with.
# output_uri names the restored image in the run's output format (tasks.writers, docs/outputs.md):
# <out>/images/<relpath> for image files; <out>/data/<shard file>#<member> for the one-file
# formats, member being the tar member (key.png) or the Parquet row's image.path.
MANIFEST_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("mask_uri", pa.string()),
    pa.field("output_uri", pa.string()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("task", pa.string(), nullable=False),
    pa.field("task_params", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("steps", pa.int32()),
    pa.field("corrections", pa.int32()),
    pa.field("method_params", pa.string()),  # JSON: every parameter as it ran
    pa.field("nfe", pa.int32()),  # of one sample: an image cost samples * nfe
    # Prior-sized tile evaluations: nfe is counted in them. windows: regions of the image that
    # were restored (1 at the prior's size; 0 when nothing was missing); tiles: the most tiles
    # in one of them (docs/tiling.md).
    pa.field("windows", pa.int32()),
    pa.field("tiles", pa.int32()),
    pa.field("samples", pa.int32(), nullable=False),
    pa.field("seed", pa.int64(), nullable=False),
    pa.field("model_id", pa.string(), nullable=False),
    pa.field("config_hash", pa.string(), nullable=False),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("known_fraction", pa.float64()),
    pa.field("consistency", pa.float64()),
    pa.field("psnr", pa.float64()),
    pa.field("ssim", pa.float64()),
    pa.field("psnr_hole", pa.float64()),
    pa.field("lpips", pa.float64()),
    # With samples > 1: the per-pixel std of the samples ([-1, 1] scale) over the missing
    # pixels (all pixels for denoising), its mean and 95th percentile; flag against the threshold.
    pa.field("uncertainty_mean", pa.float64()),
    pa.field("uncertainty_p95", pa.float64()),
    pa.field("flag", pa.string()),
    pa.field("seconds", pa.float64(), nullable=False),
    pa.field("worker_node", pa.string()),
    pa.field("device", pa.string()),
    pa.field("start_time", _TS, nullable=False),
    pa.field("end_time", _TS, nullable=False),
])
MANIFEST_COLUMNS = tuple(MANIFEST_SCHEMA.names)
_FLOAT_COLUMNS = ("known_fraction", "consistency", "psnr", "ssim", "psnr_hole", "lpips",
                  "uncertainty_mean", "uncertainty_p95")
META_CONFIG_HASH = b"restora.config_hash"
META_SHARD_ID = b"restora.shard_id"
META_SCHEMA_VERSION = b"restora.schema_version"
# Version of MANIFEST_SCHEMA, stored in each file's metadata (docs/manifest.md, "Manifest schema").
#   1 (no key): steps, corrections (and method_params, when present) copied from the job spec.
#   2: steps, corrections, method_params and nfe as the sampler ran them (null on error rows).
#   3: samples, uncertainty_mean, uncertainty_p95 and flag (several samples per image).
#   4: windows and tiles (images of any size, restored in prior-sized tiles); nfe counts
#      evaluations of one prior-sized tile.
# Bump it with every change of the columns, and teach _upgrade how to read the old version.
SCHEMA_VERSION = 4


class ManifestVersionError(ValueError):
    """A manifest written by a newer Restora than this one (its schema cannot be read back)."""


@dataclass(frozen=True)
class CommittedManifest:
    """What a committed manifest's file metadata says: its config hash and schema version; and
    its rows when it was read whole (``tasks.damaged.check_manifest``), so that resume and the
    run summary need not fetch it again."""

    config_hash: str
    schema_version: int
    table: pa.Table | None = field(default=None, compare=False, repr=False)


def manifest_dir(output_uri: str) -> str:
    """URI of the folder holding every shard's manifest."""
    return join(output_uri, "manifests")


def manifest_uri(output_uri: str, shard_id: str) -> str:
    """URI of one shard's manifest (its commit marker)."""
    return join(manifest_dir(output_uri), f"{shard_id}.parquet")


def _column(name: str, values: Any) -> pa.Array:
    field = MANIFEST_SCHEMA.field(name)
    values = list(values)
    if field.type == _TS:
        micro = [None if v is None else round(float(v) * 1e6) for v in values]
        return pa.array(micro, type=pa.int64()).cast(_TS)
    if name in _FLOAT_COLUMNS or field.type == pa.float64():
        clean = []
        for v in values:
            f = None if v is None else float(v)
            clean.append(None if f is None or np.isnan(f) else f)
        return pa.array(clean, type=pa.float64())
    if pa.types.is_integer(field.type):
        return pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)
                         for v in values], type=field.type)
    return pa.array([None if v is None else str(v) for v in values], type=field.type)


def rows_to_table(columns: Mapping[str, Iterable[Any]]) -> pa.Table:
    """Columns (lists or numpy arrays; timestamps as float epoch seconds) -> a schema-typed table."""
    missing = set(MANIFEST_COLUMNS) - set(columns)
    if missing:
        raise ValueError(f"manifest rows lack columns {sorted(missing)}")
    arrays = [_column(name, columns[name]) for name in MANIFEST_COLUMNS]
    return pa.Table.from_arrays(arrays, schema=MANIFEST_SCHEMA)


def concat(tables: list[pa.Table]) -> pa.Table:
    """One table from several manifest tables (an empty one when given none)."""
    tables = [t.select(list(MANIFEST_COLUMNS)).cast(MANIFEST_SCHEMA) for t in tables]
    return pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()


def write_manifest(table: pa.Table, uri: str, *, shard_id: str, config_hash: str,
                   storage_options: dict[str, Any] | None = None) -> None:
    """Write ``table`` to ``uri`` in one atomic step; config hash and shard id go in the metadata."""
    meta = dict(table.schema.metadata or {})
    meta[META_CONFIG_HASH] = config_hash.encode()
    meta[META_SHARD_ID] = shard_id.encode()
    meta[META_SCHEMA_VERSION] = str(SCHEMA_VERSION).encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf, compression="zstd")
    fs, path = open_fs(uri, storage_options)
    write_atomic(fs, path, buf.getvalue())


def schema_version(metadata: Mapping[bytes, bytes] | None) -> int:
    """The manifest schema version recorded in Parquet file metadata (1 when there is none)."""
    value = (metadata or {}).get(META_SCHEMA_VERSION)
    try:
        return int(value) if value else 1
    except ValueError:
        raise ManifestVersionError(f"unreadable manifest schema version {value!r}") from None


def _upgrade(table: pa.Table, version: int, wanted: list[str], uri: str) -> pa.Table:
    """The ``wanted`` columns of ``table`` (read from a version-``version`` manifest) in the
    current schema: columns an older version lacks are null (unknown); a newer version is read
    only when it still has every wanted column."""
    missing = [name for name in wanted if name not in table.column_names]
    if missing and version > SCHEMA_VERSION:
        raise ManifestVersionError(
            f"manifest '{uri}' has schema version {version}, newer than this Restora's "
            f"{SCHEMA_VERSION}, and lacks {missing}: read it with a newer Restora, or rerun the "
            "job with --overwrite")
    for name in missing:  # v1 -> v2: method_params may not exist
        field = MANIFEST_SCHEMA.field(name)
        table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table.select(wanted)


def read_manifest(uri: str, storage_options: dict[str, Any] | None = None,
                  columns: list[str] | None = None) -> pa.Table:
    """Read one manifest (or some of its columns) in the current schema, whatever its version."""
    wanted = list(MANIFEST_COLUMNS) if columns is None else list(columns)
    fs, path = open_fs(uri, storage_options)
    with fs.open(path, "rb") as handle:
        stored = pq.read_schema(handle)
        handle.seek(0)
        # use_threads=False: pyarrow 26's threaded read of a Python file object can abort the
        # interpreter at exit ("terminate called without an active exception").
        table = pq.read_table(handle, columns=[c for c in wanted if c in stored.names],
                              use_threads=False)
    return _upgrade(table, schema_version(stored.metadata), wanted, uri)


def committed_manifest(uri: str, storage_options: dict[str, Any] | None = None
                       ) -> CommittedManifest | None:
    """The config hash and schema version of a committed manifest; None when there is none."""
    fs, path = open_fs(uri, storage_options)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as handle:
        meta = pq.read_schema(handle).metadata or {}
    value = meta.get(META_CONFIG_HASH)
    return CommittedManifest(config_hash=value.decode() if value else "",
                             schema_version=schema_version(meta))


def manifest_config_hash(uri: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """The config hash a committed manifest was written with; None when there is no manifest."""
    committed = committed_manifest(uri, storage_options)
    return None if committed is None else committed.config_hash


def params_json(params: Mapping[str, Any]) -> str:
    """Canonical JSON text for a task-parameter dict (the manifest's ``task_params``)."""
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"))
