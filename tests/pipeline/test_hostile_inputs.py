"""Hostile inputs at the reader and decoder: unsafe ids, oversized row groups, soft masks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.decode import Geometry, ImageError, decode_mask, safe_id
from tasks.readers import get_reader
from tasks.spec import parse_spec

from .conftest import png_bytes


@pytest.mark.parametrize("raw", ["../x", "a/../../x", "/etc/passwd", "nul\x00byte", "n" * 10_000,
                                 "C:\\evil", "a//b", "./a", ""])
def test_ids_that_could_leave_the_output_prefix_are_refused(raw):
    with pytest.raises(ImageError) as err:
        safe_id(raw)
    assert err.value.cause == "unsafe-id"
    assert len(str(err.value)) < 200  # a 10,000-character id is not echoed whole


def test_a_row_group_declaring_more_than_the_cap_is_error_rows_without_reading_it(tmp_path):
    blob = np.random.default_rng(0).integers(0, 255, 50_000, dtype=np.uint8).tobytes()
    small = png_bytes(np.zeros((16, 16), np.uint8))
    table = pa.table({"id": ["s0", "s1", "big0", "big1"], "image": [small, small, blob, blob]})
    path = tmp_path / "a.parquet"
    pq.write_table(table, path, row_group_size=2)  # group 0: small rows, group 1: the blobs
    spec = parse_spec({"input_uri": str(tmp_path), "output_uri": str(tmp_path / "out"),
                       "task": "box", "max_row_group_bytes": 20_000})
    request = {"kind": "parquet", "shard_id": "shard-00000", "file": str(path), "rows": [0, 2, 3, 1]}

    rows = list(get_reader("parquet").read(request, spec.input))

    assert [r.raw_id for r in rows] == ["s0", "2", "3", "s1"]
    assert rows[0].image == small and rows[3].image == small and rows[0].error is None
    for bad in rows[1:3]:
        assert bad.image is None and bad.error.cause == "too-large"
        assert "row group 1" in str(bad.error) and "over the cap of 20000" in str(bad.error)


def test_anti_aliased_mask_edges_count_as_known():
    mask = np.zeros((16, 16), np.uint8)
    mask[:, 8:] = 255
    mask[:, 7] = 128  # a soft edge: half-covered pixels
    mask[:, 6] = 1  # the faintest edge pixel is still known
    geo = Geometry(16, 16, 16, "error")

    known = decode_mask(png_bytes(mask), geo)[0]

    assert known.dtype == np.float32 and set(np.unique(known)) == {0.0, 1.0}
    assert known[:, 6:].all() and not known[:, :6].any()
