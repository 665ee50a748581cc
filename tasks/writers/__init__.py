"""Output formats behind one interface (``base.OutputWriter``), beside the input readers.

A new format is one module here plus one entry in ``WRITERS``. ``--output-format auto`` writes
the input's format: Parquet in, Parquet out; tars in, tars out; image files in, image files out.
Like the readers, these modules run in Ray's I/O workers and import no torch, Prefect or Ray.
"""

from __future__ import annotations

from typing import Any

from ..storage import open_fs
from .base import DATA_DIR, IMAGES_DIR, SIDE_TREES, OutputWriter, side_relpath, split_output_uri
from .images import ImageFilesWriter
from .parquet import ParquetWriter
from .shard_file import ShardFileWriter
from .webdataset import WebDatasetWriter

WRITERS: dict[str, OutputWriter] = {w.name: w for w in (
    ImageFilesWriter(),
    ParquetWriter(),
    WebDatasetWriter(),
)}
# The layout every run had before output formats existed: config hashes leave it out.
LEGACY_FORMAT = ImageFilesWriter.name

__all__ = ["DATA_DIR", "IMAGES_DIR", "LEGACY_FORMAT", "SIDE_TREES", "WRITERS", "OutputWriter",
           "get_writer", "read_output", "resolve_output_format", "side_relpath",
           "split_output_uri", "writer_names"]


def writer_names() -> tuple[str, ...]:
    """Names of the registered output formats (what ``--output-format`` accepts besides auto)."""
    return tuple(WRITERS)


def get_writer(name: str) -> OutputWriter:
    """The writer registered as ``name``; KeyError naming the known ones otherwise."""
    try:
        return WRITERS[name]
    except KeyError:
        raise KeyError(f"unknown output format '{name}'; expected one of {writer_names()}") from None


def resolve_output_format(requested: str, input_format: str) -> str:
    """The output format a run writes: ``requested``, or for auto the input's own format."""
    if requested != "auto":
        return requested
    return input_format if input_format in WRITERS else LEGACY_FORMAT


def read_output(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """The restored PNG a manifest row's ``output_uri`` names, in whichever format holds it."""
    file_uri, member = split_output_uri(uri)
    if member is None:
        fs, path = open_fs(uri, storage_options)
        return fs.cat_file(path)
    writer = next(w for w in WRITERS.values()
                  if isinstance(w, ShardFileWriter) and file_uri.endswith(w.suffix))
    return writer.read_member(uri, storage_options or {})
