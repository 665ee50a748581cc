"""What the one-file formats (Parquet, WebDataset) share: a shard's images go into one file,
written whole (atomically) by the commit, just before the manifest.

The write stage keeps each restored PNG (``put`` returns it); Ray carries them in its object
store to the shard's commit, so the flow process never holds them. The commit holds one shard's
PNGs plus the file made of them: about twice the shard's encoded size (bound it with the input's
file size, or ``--shard-size`` for image folders). With ``--retry-failed`` the rows kept from
the earlier commit are read back from the shard file it wrote, so the new file holds them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..storage import open_fs, write_atomic
from .base import DATA_DIR, member_name, shard_file_uri, split_output_uri

if TYPE_CHECKING:
    from ..spec import JobSpec


class ShardFileWriter:
    """Base of the one-file formats: subclasses give ``name``, ``suffix``, ``pack``, ``unpack``."""

    name = ""
    suffix = ""
    folder = DATA_DIR

    def pack(self, rows: pa.Table, members: list[str], pngs: list[bytes]) -> bytes:
        """The shard file holding ``rows`` (ok manifest rows), each with its member and PNG."""
        raise NotImplementedError

    def unpack(self, data: bytes) -> dict[str, bytes]:
        """member -> PNG bytes of a shard file this format wrote."""
        raise NotImplementedError

    def put(self, fs: Any, root: str, output_uri: str, shard_name: str, relpath: str,
            png: bytes) -> tuple[str, bytes | None]:
        """Nothing is written yet: the PNG goes to the commit, the row names its member."""
        uri = shard_file_uri(output_uri, shard_name, self.suffix)
        return f"{uri}#{member_name(shard_name, relpath)}", png

    def commit(self, table: pa.Table, pngs: dict[str, bytes], shard_name: str,
               spec: JobSpec) -> pa.Table:
        """Write the shard file of the table's ok rows (new PNGs, and earlier ones read back from
        the file they were committed in); an ok row whose PNG is lost or whose member another
        row already took becomes an error row. No ok row: a stale file of the shard is removed."""
        status = table["status"].to_pylist()
        error = table["error"].to_pylist()
        uris = table["output_uri"].to_pylist()
        earlier: dict[str, dict[str, bytes]] = {}
        kept, members, images = [], [], []
        for i, (st, uri) in enumerate(zip(status, uris)):
            if st != "ok":
                continue
            file_uri, member = split_output_uri(uri or "")
            png = pngs.get(uri)
            if png is None and member is not None:
                if file_uri not in earlier:
                    earlier[file_uri] = self._read(file_uri, spec.storage_options)
                png = earlier[file_uri].get(member)
            if member is None or png is None:
                status[i], uris[i] = "error", None
                error[i] = f"output-lost: {uri} is not in the shard file any more; retry the row"
            elif member in members:
                status[i], uris[i] = "error", None
                error[i] = (f"duplicate-id: another row of the shard is already written as "
                            f"'{member}'")
            else:
                kept.append(i)
                members.append(member)
                images.append(png)
        table = _set(table, status=status, error=error, output_uri=uris)
        target = shard_file_uri(spec.output_uri, shard_name, self.suffix)
        fs, path = open_fs(target, spec.storage_options)
        if kept:
            write_atomic(fs, path, self.pack(table.take(kept), members, images))
        elif fs.exists(path):
            fs.rm_file(path)
        return table

    def finish(self, output_uri: str, manifest_uris: Iterable[str],
               storage_options: dict[str, Any]) -> None:
        """Nothing spans shards: each shard file is complete on its own."""

    def _read(self, file_uri: str, storage_options: dict[str, Any]) -> dict[str, bytes]:
        fs, path = open_fs(file_uri, storage_options)
        return self.unpack(fs.cat_file(path)) if fs.exists(path) else {}

    def read_member(self, uri: str, storage_options: dict[str, Any]) -> bytes:
        """The PNG an ``output_uri`` of this format names (KeyError when it is not there)."""
        file_uri, member = split_output_uri(uri)
        return self._read(file_uri, storage_options)[member]


def _set(table: pa.Table, **columns: list[Any]) -> pa.Table:
    """``table`` with the named columns replaced by these values (same types)."""
    for name, values in columns.items():
        index = table.schema.get_field_index(name)
        field = table.schema.field(index)
        table = table.set_column(index, field, pa.array(values, type=field.type))
    return table
