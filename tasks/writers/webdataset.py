"""WebDataset output: one tar per shard, ``data/<shard name>.tar``, a sample per restored image.

A sample is ``<key>.png`` (the restored image) and ``<key>.json`` (its manifest row), adjacent,
as ``webdataset.WebDataset`` groups them. Keys mirror the source (a WebDataset input's sample
keys; a Parquet input's ids; an image folder's relative paths), escaped where a '.' would end
the key early (``base.member_name``).
"""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa

from .shard_file import ShardFileWriter


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


class WebDatasetWriter(ShardFileWriter):
    """Shards as tars that ``webdataset.WebDataset`` iterates: ``key.png`` + ``key.json``."""

    name = "webdataset"
    suffix = ".tar"

    def pack(self, rows: pa.Table, members: list[str], pngs: list[bytes]) -> bytes:
        """A tar of ``key.png`` and ``key.json`` (the manifest row, times as ISO 8601) per row."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for row, member, png in zip(rows.to_pylist(), members, pngs):
                mtime = row["end_time"].timestamp()
                key = member.removesuffix(".png")
                _add(tar, member, png, mtime)
                _add(tar, f"{key}.json",
                     json.dumps(row, default=lambda v: v.isoformat(), sort_keys=True).encode(),
                     mtime)
        return buf.getvalue()

    def unpack(self, data: bytes) -> dict[str, bytes]:
        """member -> bytes of every ``.png`` member."""
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return {m.name: tar.extractfile(m).read() for m in tar
                    if m.isfile() and m.name.endswith(".png")}
