"""The writer interface every output format implements, and the layout the formats share.

A writer stores each restored PNG as the write stage produces it (``put``; Ray I/O workers, in
parallel), then completes the shard once, just before its manifest is written (``commit``), and
finishes the run after every shard (``finish``). Layout under the output prefix:

- ``images/<relpath>``: one PNG per image (the ``images`` format);
- ``data/<shard name>.<suffix>``: one file per shard (the one-file formats), named after the
  source shard (its input file without the suffix; ``shard-NNNNN`` for image folders);
- ``inputs/``, ``masks/``, ``uncertainty/``: side files at each row's ``side_relpath``.

A row's ``output_uri`` is ``<out>/images/<relpath>``, or ``<out>/data/<file>#<member>`` where
``member`` is the image's name inside the shard file (the tar member; the Parquet row's
``image.path``). Members are valid WebDataset keys plus ``.png``: no '.' in the base name, no
'#' anywhere (``member_name`` escapes them as ``%2E`` and ``%23``, and '%' as ``%25``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from ..storage import join

if TYPE_CHECKING:
    from ..spec import JobSpec

IMAGES_DIR = "images"
DATA_DIR = "data"
SIDE_TREES = ("inputs", "masks", "uncertainty")  # side files, at each row's side_relpath


class OutputWriter(Protocol):
    """An output format: where restored PNGs go and how a shard is completed; registered in
    ``tasks.writers``."""

    name: str
    folder: str  # where the restored images go, under the output prefix

    def put(self, fs: Any, root: str, output_uri: str, shard_name: str, relpath: str,
            png: bytes) -> tuple[str, bytes | None]:
        """Store (or keep) one restored PNG: (its output_uri, the bytes the commit needs or None)."""

    def commit(self, table: pa.Table, pngs: dict[str, bytes], shard_name: str,
               spec: JobSpec) -> pa.Table:
        """Complete the shard before its manifest ``table`` is written; return the table to write
        (rows whose image was lost become error rows). ``pngs`` maps output_uri -> PNG of the
        rows restored this run; the other ok rows were committed earlier."""

    def finish(self, output_uri: str, manifest_uris: Iterable[str],
               storage_options: dict[str, Any]) -> None:
        """After the run: write what spans shards (the images format's metadata.parquet)."""


def member_name(shard_name: str, relpath: str) -> str:
    """A row's name inside its shard file: ``relpath`` without the shard's folder, its base
    name's '.' (and '#' anywhere) escaped so that it is a valid WebDataset key plus ``.png``."""
    rel = relpath.removeprefix(f"{shard_name}/")
    folder, base = posixpath.split(rel.removesuffix(".png"))
    base = base.replace("%", "%25").replace(".", "%2E")
    return posixpath.join(folder.replace("%", "%25"), base).replace("#", "%23") + ".png"


def shard_file_uri(output_uri: str, shard_name: str, suffix: str) -> str:
    """URI of a shard's file for the one-file formats: ``<out>/data/<shard name><suffix>``."""
    return join(output_uri, DATA_DIR, f"{shard_name}{suffix}")


def split_output_uri(uri: str) -> tuple[str, str | None]:
    """(file URI, member inside it or None) of a manifest row's ``output_uri``."""
    if "#" not in uri:
        return uri, None
    file_uri, member = uri.rsplit("#", 1)
    return file_uri, member


def side_relpath(uri: str, output_uri: str) -> str | None:
    """Where a row's side files lie under inputs/, masks/ and uncertainty/ (from its output_uri):
    its images/ path, or ``<shard name>/<member>`` for a shard file; None for other URIs."""
    images = join(output_uri, IMAGES_DIR) + "/"
    data = join(output_uri, DATA_DIR) + "/"
    if uri.startswith(images):
        return uri[len(images):]
    file_uri, member = split_output_uri(uri)
    if member is not None and file_uri.startswith(data):
        return f"{posixpath.splitext(file_uri[len(data):])[0]}/{member}"
    return None
