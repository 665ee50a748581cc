"""Image-file output: one PNG per image under ``images/``, at the path the reader gives it (the
input's own layout: an image folder's relative paths, ``<tar path>/<key>``, ``<parquet file
name>/<id>``), plus ``images/metadata.parquet`` after each run.

``metadata.parquet`` follows ``datasets``' imagefolder convention: a ``file_name`` column
(relative to ``images/``) and the row's id and metrics. With a metadata file present, imagefolder
takes its rows and nothing else: it invents no ``label`` column from the folders, and PNGs that
no metadata row names (previews, inputs/, masks/) are not loaded even from the output root. One
file for the whole output, because imagefolder finds metadata only by that exact name (one per
folder) and an image folder's shards share folders. It is Parquet, not JSON lines, so that a
column null in every row (``flag``, ``lpips``) keeps its type: imagefolder takes the features of
each metadata file's first chunk and refuses files whose features differ. The file is rebuilt
from the committed manifests at the end of every run (the manifests stay the commit markers); its
rows are held in memory while it is built (a few tens of bytes per image).
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..manifest import MANIFEST_SCHEMA, read_manifest
from ..storage import join, open_fs, write_atomic
from .base import IMAGES_DIR

if TYPE_CHECKING:
    from ..spec import JobSpec

METADATA_NAME = "metadata.parquet"
# The manifest columns metadata.parquet repeats beside file_name: what a user filters on.
METADATA_COLUMNS = ("id", "source_uri", "width", "height", "seed", "known_fraction",
                    "consistency", "psnr", "ssim", "psnr_hole", "lpips", "uncertainty_mean",
                    "uncertainty_p95", "flag")
METADATA_SCHEMA = pa.schema([pa.field("file_name", pa.string()),
                             *(MANIFEST_SCHEMA.field(c).with_nullable(True)
                               for c in METADATA_COLUMNS)])


def metadata_uri(output_uri: str) -> str:
    """Where the images format's imagefolder metadata lives."""
    return join(output_uri, IMAGES_DIR, METADATA_NAME)


class ImageFilesWriter:
    """PNG files under ``images/``, written by the write stage as each batch is restored."""

    name = "images"
    folder = IMAGES_DIR

    def put(self, fs: Any, root: str, output_uri: str, shard_name: str, relpath: str,
            png: bytes) -> tuple[str, bytes | None]:
        """Write the PNG now, atomically; the commit needs nothing more."""
        write_atomic(fs, posixpath.join(root, IMAGES_DIR, relpath), png)
        return join(output_uri, IMAGES_DIR, relpath), None

    def commit(self, table: pa.Table, pngs: dict[str, bytes], shard_name: str,
               spec: JobSpec) -> pa.Table:
        """Nothing to add: every image is already written."""
        return table

    def finish(self, output_uri: str, manifest_uris: Iterable[str],
               storage_options: dict[str, Any]) -> None:
        """Rebuild ``images/metadata.parquet`` from the ok rows of the committed manifests."""
        prefix = join(output_uri, IMAGES_DIR) + "/"
        parts = []
        for uri in manifest_uris:
            try:
                table = read_manifest(uri, storage_options,
                                      columns=["status", "output_uri", *METADATA_COLUMNS])
            except FileNotFoundError:  # the shard has no commit
                continue
            table = table.filter(pc.equal(table["status"], "ok"))
            names = [u[len(prefix):] if u and u.startswith(prefix) else None
                     for u in table["output_uri"].to_pylist()]
            table = table.append_column("file_name", pa.array(names, pa.string()))
            table = table.filter(pc.is_valid(table["file_name"]))
            parts.append(table.select(METADATA_SCHEMA.names).cast(METADATA_SCHEMA))
        rows = pa.concat_tables(parts) if parts else METADATA_SCHEMA.empty_table()
        fs, path = open_fs(metadata_uri(output_uri), storage_options)
        if not rows.num_rows:  # imagefolder cannot read an empty metadata file
            if fs.exists(path):
                fs.rm_file(path)
            return
        buf = io.BytesIO()
        pq.write_table(rows, buf, compression="zstd")
        write_atomic(fs, path, buf.getvalue())
