"""Input readers without Ray: planning and reading WebDataset tars, format detection, registry."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.batch_io import load_batch
from tasks.planning import make_plan
from tasks.readers import READERS, detect_format, get_reader, reader_names
from tasks.shard import batch_requests
from tasks.spec import JobSpec, JobSpecError, RunInfo, parse_spec
from tasks.storage import open_fs

from .shards import img2dataset_members, png, tar_bytes

INFO = RunInfo(model_id="m", config_hash="h", channels=1, resolution=16, device="cpu",
               precision="fp32")


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(n)]


def _rows(spec: JobSpec) -> dict[str, dict]:
    """Plan ``spec`` and read every batch: {id: row fields} (the Ray stages, called directly)."""
    plan = make_plan(spec)
    rows = {}
    for shard in plan.shards:
        for request in batch_requests(shard, spec):
            batch = load_batch(request, spec, INFO)
            for i, row_id in enumerate(batch["id"]):
                rows[row_id] = {k: batch[k][i] for k in ("status", "error", "source_uri",
                                                          "mask_uri", "task_params", "relpath",
                                                          "image", "mask")}
    return rows


def test_img2dataset_tar_becomes_one_row_per_key_with_shard_slash_key_ids(tmp_path):
    images = _images(5)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "00000.tar").write_bytes(tar_bytes(img2dataset_members(images[:3], 0)))
    (tmp_path / "in" / "00001.tar").write_bytes(tar_bytes(img2dataset_members(images[3:], 1)))
    # img2dataset writes per-shard metadata beside the tars; auto must still pick the tars.
    pq.write_table(pa.table({"key": ["000000000"], "status": ["success"]}),
                   tmp_path / "in" / "00000.parquet")
    (tmp_path / "in" / "00000_stats.json").write_text("{}")
    spec = JobSpec(input_uri=str(tmp_path / "in"), output_uri=str(tmp_path / "out"), task="box",
                   batch_size=2)

    plan = make_plan(spec)
    rows = _rows(spec)

    assert plan.input_format == "webdataset"
    assert [(s.shard_id, s.count) for s in plan.shards] == [("shard-00000", 3), ("shard-00001", 2)]
    assert sorted(rows) == ["00000/000000000", "00000/000000001", "00000/000000002",
                            "00001/000010000", "00001/000010001"]
    row = rows["00001/000010001"]
    assert row["status"] == "ok" and row["relpath"] == "00001/000010001.png"
    assert row["source_uri"] == f"{tmp_path}/in/00001.tar#000010001.png"
    # Pixels arrive unchanged from the member's byte range.
    np.testing.assert_allclose(row["image"][0], images[4] / 127.5 - 1, atol=1e-6)


def test_bad_members_become_error_rows_naming_the_member(tmp_path):
    good = _images(3, seed=1)
    members = [("a.png", png(good[0])), ("a.json", b"{}"),
               ("b.json", json.dumps({"key": "b"}).encode()),  # metadata but no image
               ("c.png", b"these are not pixels"),
               ("d.jpg", png(good[1])), ("d.png", png(good[2])),  # two images for one key
               ("../evil.png", png(good[0])),
               ("e.png", png(good[1])), ("e.json", b"{not json")]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "part.tar").write_bytes(tar_bytes(members))
    spec = JobSpec(input_uri=str(tmp_path / "in"), output_uri=str(tmp_path / "out"), task="box")

    rows = _rows(spec)

    assert rows["part/a"]["status"] == "ok"
    assert rows["part/b"]["error"] == ("image-missing: sample 'b' of 'part.tar' has b.json "
                                       "but no image member")
    assert rows["part/c"]["error"].startswith("not-an-image: member 'c.png': ")
    assert rows["part/c"]["source_uri"].endswith("part.tar#c.png")
    assert rows["part/d"]["error"].startswith("ambiguous-image: sample 'd' of 'part.tar'")
    assert rows["part/e"]["error"].startswith("bad-json: ")
    unsafe = [r for k, r in rows.items() if "evil" in k]
    assert len(unsafe) == 1 and unsafe[0]["error"].startswith("unsafe-id: ")


def test_a_truncated_tar_keeps_its_whole_members_and_names_the_cut_one(tmp_path):
    images = _images(3, seed=2)
    whole = tar_bytes([(f"k{i}.png", png(x)) for i, x in enumerate(images)])
    last = png(images[2])
    cut = whole.index(last) + len(last) // 2  # inside the last member's data
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "s.tar").write_bytes(whole[:cut])
    (tmp_path / "in" / "junk.tar").write_bytes(b"not a tar at all" * 64)
    spec = JobSpec(input_uri=str(tmp_path / "in"), output_uri=str(tmp_path / "out"), task="box")

    rows = _rows(spec)

    assert rows["s/k0"]["status"] == rows["s/k1"]["status"] == "ok"
    assert rows["s/k2"]["error"].startswith("truncated: member 'k2.png' of 's.tar' ends at byte")
    assert rows["junk"]["error"].startswith("not-a-tar: 'junk.tar' cannot be read as a tar")


def test_mask_members_are_used_for_a_task_that_takes_masks(tmp_path):
    images = _images(2, seed=3)
    hole = np.full((16, 16), 255, np.uint8)
    hole[4:8, 4:8] = 0
    members = img2dataset_members(images, 0, masks=[hole, None])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "00000.tar").write_bytes(tar_bytes(members))
    spec = JobSpec(input_uri=str(tmp_path / "in"), output_uri=str(tmp_path / "out"),
                   task="inpaint")

    rows = _rows(spec)

    first = rows["00000/000000000"]
    assert first["status"] == "ok" and first["mask"][0].sum() == 256 - 16
    assert first["mask_uri"].endswith("00000.tar#000000000.mask.png")
    assert rows["00000/000000001"]["error"] == (
        "mask-missing: member '000000001.png': task 'inpaint' needs a mask for this image "
        "and none was found")


def test_json_task_params_are_used_and_bad_ones_become_bad_params_rows(tmp_path):
    members = img2dataset_members(_images(4, seed=3), 0)
    per_key = {"000000000": {"box_size": 4}, "000000001": {"note": "x"},
               "000000002": {"box_size": 17}, "000000003": {"box_size": "big"}}
    members = [(n, json.dumps({"key": n[:-5], "task_params": per_key[n[:-5]]}).encode()
                if n.endswith(".json") else b) for n, b in members]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "00000.tar").write_bytes(tar_bytes(members))
    spec = JobSpec(input_uri=str(tmp_path / "in"), output_uri=str(tmp_path / "out"), task="box")

    rows = _rows(spec)

    first = rows["00000/000000000"]
    assert first["status"] == "ok" and json.loads(first["task_params"]) == {"box_size": 4}
    errors = [rows[f"00000/00000000{i}"]["error"] for i in (1, 2, 3)]
    assert errors == [
        ("bad-params: member '000000001.png': task_params: task 'box' has no parameter 'note'; "
         "it takes ['box', 'box_size']"),
        ("bad-params: member '000000002.png': task_params: box_size 17 does not fit in the "
         "prior's 16x16"),
        "bad-params: member '000000003.png': task_params: box_size must be an integer, got 'big'"]


def test_auto_detection_and_the_registry(tmp_path):
    fs, _ = open_fs(str(tmp_path))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.png").write_bytes(png(_images(1)[0]))
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "pq" / "p.parquet")
    (tmp_path / "one.tar").write_bytes(tar_bytes([("a.png", png(_images(1)[0]))]))
    assert detect_format(fs, str(tmp_path / "imgs")) == "images"
    assert detect_format(fs, str(tmp_path / "pq")) == "parquet"
    assert detect_format(fs, str(tmp_path / "one.tar")) == "webdataset"
    assert set(reader_names()) == {"images", "parquet", "webdataset"} == set(READERS)
    assert get_reader("webdataset").name == "webdataset"
    with pytest.raises(JobSpecError, match="input_format: .*expected auto or one of"):
        parse_spec({"input_uri": "/in", "output_uri": "/out", "input_format": "tfrecord"})


def test_member_ranges_come_back_exact_whether_close_together_or_far_apart(tmp_path):
    from tasks.readers.webdataset import _fetch

    data = bytes(range(256)) * 20_000  # 5 MB
    (tmp_path / "f.tar").write_bytes(data)
    fs, path = open_fs(str(tmp_path / "f.tar"))
    near = [[10, 5], [100, 3]]  # one read of bytes 10..103
    far = [[10, 5], [4_000_000, 7], [100, 3]]  # one read per range
    assert _fetch(fs, path, near) == [data[10:15], data[100:103]]
    assert _fetch(fs, path, far) == [data[10:15], data[4_000_000:4_000_007], data[100:103]]
