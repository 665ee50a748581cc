"""Parquet output: one file per shard, ``data/<shard name>.parquet``, one row per restored image.

Each row holds ``id``, ``image`` (Hugging Face's ``{bytes, path}`` Image struct; ``path`` is the
row's member name, the fragment of its ``output_uri``) and the rest of its manifest row. The
schema metadata carries the ``huggingface`` features JSON that makes ``datasets`` read ``image``
as an ``Image`` feature.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from .shard_file import ShardFileWriter

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
# Hugging Face writes image datasets in row groups of 100 rows (datasets.config), so that a
# streaming reader never holds more than that many images.
_ROW_GROUP_ROWS = 100
_FEATURES = {"info": {"features": {"id": {"dtype": "string", "_type": "Value"},
                                   "image": {"_type": "Image"}}}}


class ParquetWriter(ShardFileWriter):
    """Shards as Parquet files that ``datasets.load_dataset("parquet", ...)`` reads as images."""

    name = "parquet"
    suffix = ".parquet"

    def pack(self, rows: pa.Table, members: list[str], pngs: list[bytes]) -> bytes:
        """id, image {bytes, path}, then the other manifest columns; HF features in the metadata."""
        image = pa.array([{"bytes": b, "path": m} for b, m in zip(pngs, members)], type=IMAGE_TYPE)
        rest = rows.drop_columns(["id"])
        table = pa.Table.from_arrays(
            [rows["id"], image, *rest.columns],
            schema=pa.schema([pa.field("id", pa.string()), pa.field("image", IMAGE_TYPE),
                              *rest.schema]))
        table = table.replace_schema_metadata({b"huggingface": json.dumps(_FEATURES).encode()})
        buf = io.BytesIO()
        pq.write_table(table, buf, row_group_size=_ROW_GROUP_ROWS, compression="zstd")
        return buf.getvalue()

    def unpack(self, data: bytes) -> dict[str, bytes]:
        """image.path -> image.bytes of every row."""
        table = pq.read_table(io.BytesIO(data), columns=["image"], use_threads=False)
        return {cell["path"]: cell["bytes"] for cell in table["image"].to_pylist()}
