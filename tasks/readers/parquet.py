"""Parquet shards: each file is a shard, each row an image (raw bytes or a {bytes, path} struct)."""

from __future__ import annotations

import bisect
import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..decode import ImageError
from ..storage import full_uri, join, list_files, open_fs
from .base import InputFormatError, ShardPlan, SourceRow, parse_params, read_uri

if TYPE_CHECKING:
    from ..spec import JobSpec


def _declared_bytes(pf: pq.ParquetFile, group: int, columns: list[str]) -> int:
    """Uncompressed bytes row group ``group`` declares for ``columns`` (from the footer only)."""
    meta = pf.metadata.row_group(group)
    chunks = (meta.column(i) for i in range(meta.num_columns))
    return sum(c.total_uncompressed_size for c in chunks
               if c.path_in_schema.split(".", 1)[0] in columns)


def _parquet_rows(uri: str, rows: list[int], spec: JobSpec) -> list[dict[str, Any] | ImageError]:
    """The requested rows of a Parquet shard as dicts (only the columns the job uses); a row of a
    row group that declares more than ``spec.max_row_group_bytes`` is an ImageError instead, found
    from the footer before anything is decompressed."""
    fs, path = open_fs(uri, spec.storage_options)
    with fs.open(path, "rb") as handle:
        # pyarrow 26 threads reading a Python file object can abort the process at exit.
        pf = pq.ParquetFile(handle)
        names = set(pf.schema_arrow.names)
        wanted = [c for c in (spec.id_column, spec.image_column, spec.mask_column, "task_params")
                  if c in names]
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        starts = [sum(sizes[:g]) for g in range(len(sizes))]
        group_of = {r: bisect.bisect_right(starts, r) - 1 for r in rows}
        bad = [r for r in rows if r < 0 or r >= sum(sizes)]
        if bad:
            raise ValueError(f"rows {bad[:5]} are outside the {sum(sizes)} rows of '{uri}'")
        oversize = {}
        for g in sorted(set(group_of.values())):
            declared = _declared_bytes(pf, g, wanted)
            if declared > spec.max_row_group_bytes:
                oversize[g] = ImageError(
                    "too-large", f"row group {g} of '{uri}' declares {declared} bytes "
                    f"uncompressed, over the cap of {spec.max_row_group_bytes}")
        groups = sorted(set(group_of.values()) - set(oversize))
        at, acc = {}, 0
        for g in groups:
            at[g] = acc
            acc += sizes[g]
        table = pa.concat_tables([pf.read_row_group(g, columns=wanted, use_threads=False)
                                  for g in groups]) if groups else None
        kept = [r for r in rows if group_of[r] not in oversize]
        index = [at[group_of[r]] + r - starts[group_of[r]] for r in kept]
        records = iter(table.take(pa.array(index, type=pa.int64())).to_pylist() if kept else [])
        return [oversize[group_of[r]] if group_of[r] in oversize else next(records) for r in rows]


def _cell_bytes(value: Any, file_uri: str, spec: JobSpec, what: str) -> bytes | None:
    """Bytes of an image cell: raw bytes, or the Hugging Face {bytes, path} struct."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            ref = value["path"]
            if "://" not in ref and not ref.startswith("/"):
                ref = join(file_uri.rsplit("/", 1)[0], ref)
            return read_uri(ref, spec.storage_options, what)
    raise ImageError("not-an-image", f"{what} cell holds {type(value).__name__}, not bytes "
                                     "or a {bytes, path} struct")


class ParquetReader:
    """Parquet files with an id column, an image column, optional mask bytes and task_params."""

    name = "parquet"
    suffixes = (".parquet",)

    def plan(self, spec: JobSpec, fs: Any, root: str) -> list[tuple[ShardPlan, list[dict] | None]]:
        """One shard per file (row counts from the footers), named after it; no item lists. A
        file without the image column is an InputFormatError naming its columns."""
        single = fs.isfile(root)
        rels = [posixpath.basename(root)] if single else list_files(fs, root, self.suffixes)
        shards = []
        for index, rel in enumerate(rels):
            path = root if single else posixpath.join(root, rel)
            with fs.open(path, "rb") as handle:
                meta = pq.read_metadata(handle)
            columns = meta.schema.to_arrow_schema().names
            if spec.image_column not in columns:
                raise InputFormatError(
                    f"Parquet file '{full_uri(fs, path)}' has no image column "
                    f"'{spec.image_column}'; its columns: {', '.join(columns)} (set "
                    "image_column in a --spec file to the column that holds the image bytes)")
            shards.append((ShardPlan(f"shard-{index:05d}", self.name, meta.num_rows,
                                     file_uri=full_uri(fs, path),
                                     name=posixpath.splitext(rel)[0]), None))
        return shards

    def requests(self, shard: ShardPlan, spec: JobSpec,
                 wanted: set[str] | None) -> Iterator[dict[str, Any]]:
        """Batches of row numbers."""
        rows = list(range(shard.count))
        if wanted is not None:
            rows = [r for r in rows if f"{shard.file_uri}#row={r}" in wanted]
        for start in range(0, len(rows), spec.batch_size):
            yield {"kind": self.name, "shard_id": shard.shard_id, "file": shard.file_uri,
                   "rows": rows[start:start + spec.batch_size]}

    def read(self, request: dict[str, Any], spec: JobSpec) -> Iterator[SourceRow]:
        """Read the batch's rows in one pass over their row groups."""
        file_uri = request["file"]
        for r, rec in zip(request["rows"], _parquet_rows(file_uri, request["rows"], spec)):
            if isinstance(rec, ImageError):
                yield SourceRow(str(r), f"{file_uri}#row={r}", error=rec)
                continue
            has_mask = rec.get(spec.mask_column) is not None
            row = SourceRow(rec.get(spec.id_column, str(r)), f"{file_uri}#row={r}",
                            f"{file_uri}#row={r}&column={spec.mask_column}" if has_mask else None)
            try:
                row.params = parse_params(rec.get("task_params"))
                row.image = _cell_bytes(rec.get(spec.image_column), file_uri, spec, "image")
                row.mask = _cell_bytes(rec.get(spec.mask_column), file_uri, spec, "mask")
                row.has_mask_ref = row.mask is not None
            except ImageError as exc:
                row.error = exc
            yield row

    def output_relpath(self, row_id: str, shard_name: str) -> str:
        """Under a folder named after the file: ids need only be unique within one file."""
        return f"{shard_name}/{row_id}.png"
