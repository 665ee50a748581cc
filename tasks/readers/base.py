"""The reader interface every input format implements, and the pieces formats share.

A reader plans shards from a listing (``plan``), cuts a shard into batch requests
(``requests``; plain dicts, sent to Ray tasks), and turns one request into ``SourceRow``s of
undecoded bytes (``read``). Decoding, seeding and the manifest are the same for every format.
A row a reader already knows is bad carries an ``ImageError`` instead of bytes; a transient
storage error is raised, so that the shard task retries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..decode import ImageError
from ..storage import is_transient_storage_error, open_fs

if TYPE_CHECKING:
    from ..spec import JobSpec


class InputFormatError(ValueError):
    """The input as a whole does not fit its format (e.g. no image column): one job error at
    plan time, not one error row per image. The message names the file and what it found."""


@dataclass(frozen=True)
class ShardPlan:
    """One shard: a unit of work, retry and resume."""

    shard_id: str
    kind: str  # the name of the reader that plans and reads it
    count: int
    items_uri: str | None = None  # readers with item lists: JSON list of item dicts
    file_uri: str | None = None  # readers whose shard is one file (Parquet, tar)
    # The source's name, which output files mirror: the file's path under the input without its
    # suffix (None: the shard has no file of its own, and outputs use shard_id).
    name: str | None = None

    @property
    def output_name(self) -> str:
        """What the shard's output files are named after: its source's name, else its id."""
        return self.name or self.shard_id


@dataclass
class SourceRow:
    """One input image as read, before decoding."""

    raw_id: Any
    source_uri: str
    mask_uri: str | None = None
    image: bytes | None = None
    mask: bytes | None = None
    has_mask_ref: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    error: ImageError | None = None
    where: str | None = None  # names the member/cell in decoding errors (e.g. a tar member)


class InputReader(Protocol):
    """An input format: planning, batching and reading; registered in ``tasks.readers``."""

    name: str
    suffixes: tuple[str, ...]  # file name endings that make ``auto`` pick this format

    def plan(self, spec: JobSpec, fs: Any, root: str) -> list[tuple[ShardPlan, list[dict] | None]]:
        """Shards of the input under ``root``, each with its item list (None if it has none)."""

    def requests(self, shard: ShardPlan, spec: JobSpec,
                 wanted: set[str] | None) -> Iterator[dict[str, Any]]:
        """Batch requests ({kind, shard_id, ...}) of a shard; only sources in ``wanted`` if given."""

    def read(self, request: dict[str, Any], spec: JobSpec) -> Iterator[SourceRow]:
        """The rows of one batch request, in order."""

    def output_relpath(self, row_id: str, shard_name: str) -> str:
        """Where a row's restored PNG goes, relative to ``<output>/images`` (``shard_name``: the
        shard's ``name``, or its id when it has none)."""


def read_uri(uri: str, storage_options: dict[str, Any], what: str) -> bytes:
    """Bytes of ``uri``; a missing/unreadable file is an ImageError, a transient one is raised."""
    try:
        fs, path = open_fs(uri, storage_options)
        return fs.cat_file(path)
    except Exception as exc:
        if is_transient_storage_error(exc):
            raise
        cause = ("mask-missing" if what == "mask" else
                 "access-denied" if isinstance(exc, PermissionError) else
                 "missing" if isinstance(exc, FileNotFoundError) else "unreadable")
        doing = "access denied reading" if isinstance(exc, PermissionError) else "cannot read"
        raise ImageError(cause, f"{doing} {what} '{uri}': {type(exc).__name__}: {exc}") from None


def parse_params(value: Any) -> dict[str, Any]:
    """Per-row task parameters from JSON text, a dict or a Parquet map; raises ImageError."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ImageError("bad-params", f"task_params is not JSON: {exc}") from None
    if isinstance(value, list):  # a Parquet map arrives as [(key, value), ...]
        value = dict(value)
    if not isinstance(value, dict):
        raise ImageError("bad-params", f"task_params must be an object, got {type(value).__name__}")
    return {k: v for k, v in value.items() if v is not None}


def item_list_requests(shard: ShardPlan, spec: JobSpec, wanted: set[str] | None,
                       **extra: Any) -> Iterator[dict[str, Any]]:
    """Batches of a shard's stored item list (items whose ``source`` is in ``wanted``, if given)."""
    items = [it for it in shard_items(shard, spec.storage_options)
             if wanted is None or it["source"] in wanted]
    for start in range(0, len(items), spec.batch_size):
        yield {"kind": shard.kind, "shard_id": shard.shard_id, **extra,
               "items": items[start:start + spec.batch_size]}


def shard_items(shard: ShardPlan, storage_options: dict[str, Any] | None = None) -> list[dict]:
    """A shard's stored item list (readers that plan one, e.g. image folders and tar shards)."""
    if not shard.items_uri:
        raise ValueError(f"shard {shard.shard_id} is a {shard.kind} shard; it has no item list")
    fs, path = open_fs(shard.items_uri, storage_options)
    return json.loads(fs.cat_file(path).decode())
