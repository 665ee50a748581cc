"""Input formats behind one interface (``base.InputReader``).

A new format is one module here plus one entry in ``READERS``. The order of ``READERS`` is the
order ``--input-format auto`` tries: the first format whose files the input holds wins, so tar
shards come before the ``.parquet`` metadata img2dataset writes beside them.
"""

from __future__ import annotations

from typing import Any

from ..storage import list_files
from .base import InputFormatError, InputReader, ShardPlan, SourceRow
from .images import ImageFolderReader
from .parquet import ParquetReader
from .webdataset import WebDatasetReader

READERS: dict[str, InputReader] = {r.name: r for r in (
    WebDatasetReader(),
    ParquetReader(),
    ImageFolderReader(),
)}

__all__ = ["READERS", "InputFormatError", "InputReader", "ShardPlan", "SourceRow", "detect_format", "get_reader",
           "reader_names"]


def reader_names() -> tuple[str, ...]:
    """Names of the registered input formats (what ``--input-format`` accepts besides auto)."""
    return tuple(READERS)


def get_reader(name: str) -> InputReader:
    """The reader registered as ``name``; KeyError naming the known ones otherwise."""
    try:
        return READERS[name]
    except KeyError:
        raise KeyError(f"unknown input format '{name}'; expected one of {reader_names()}") from None


def detect_format(fs: Any, root: str) -> str:
    """The format of ``root`` (a file by its ending, else the first format with files under it)."""
    for reader in READERS.values():
        if root.lower().endswith(reader.suffixes) and not fs.isdir(root):
            return reader.name
    found = list_files(fs, root, tuple(s for r in READERS.values() for s in r.suffixes))
    for reader in READERS.values():
        if any(rel.lower().endswith(reader.suffixes) for rel in found):
            return reader.name
    return ImageFolderReader.name
