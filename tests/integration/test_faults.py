"""Faults the pipeline meets on a long job: damaged outputs, hostile inputs, concurrent runs.

Everything runs for real: the flow in-process on a local Ray and Prefect's harness, outputs on
the local disk and on moto's S3 server.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.spec import JobSpec

from .conftest import FAST, gray_images, png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _damage_two_manifests(fs, manifests: str) -> None:
    """Truncate shard-00001's manifest; put a foreign Parquet file in shard-00002's place."""
    path = f"{manifests}/shard-00001.parquet"
    data = fs.cat_file(path)
    fs.pipe_file(path, data[: len(data) // 3])
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["x"], "status": ["ok"]}), buf)
    fs.pipe_file(f"{manifests}/shard-00002.parquet", buf.getvalue())


def _resume_after_damage(pipeline, fs, root: str, spec: JobSpec) -> None:
    """Run, damage two manifests, resume; the damaged shards re-run and nothing is lost."""
    first = pipeline(spec=spec)
    assert first["images"] == {"total": 8, "ok": 8, "error": 0}
    _damage_two_manifests(fs, f"{root}/manifests")
    fs.invalidate_cache()

    resumed = pipeline(spec=spec)

    assert resumed["images"] == {"total": 8, "ok": 8, "error": 0}
    assert resumed["shards"] == {"total": 4, "committed": 4, "run": 2, "skipped": 2, "failed": 0,
                                 "damaged": 2}
    assert resumed["processed_this_run"] == 4
    damaged = {d["shard_id"]: d for d in resumed["damaged_manifests"]}
    assert set(damaged) == {"shard-00001", "shard-00002"}
    assert "unreadable Parquet" in damaged["shard-00001"]["reason"]
    assert "not a Restora manifest" in damaged["shard-00002"]["reason"]
    fs.invalidate_cache()
    aside = sorted(fs.find(f"{root}/damaged"))
    assert [p.rsplit("/", 1)[1].split(".parquet.")[0] for p in aside] == ["shard-00001",
                                                                          "shard-00002"]
    stored = json.loads(fs.cat_file(f"{root}/summary.json"))
    assert stored["shards"]["damaged"] == 2
    rows = pa.concat_tables([pq.read_table(io.BytesIO(fs.cat_file(p)))
                             for p in sorted(fs.glob(f"{root}/manifests/*.parquet"))])
    assert sorted(rows["id"].to_pylist()) == sorted(f"img{i}" for i in range(8))  # no duplicates
    assert set(rows["status"].to_pylist()) == {"ok"}

    again = pipeline(spec=spec)
    assert again["shards"]["run"] == 0 and again["shards"]["damaged"] == 0


def test_damaged_manifests_on_local_disk_are_moved_aside_and_their_shards_rerun(
        pipeline, tmp_path, tiny_prior):
    import fsspec

    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(gray_images(8)):
        (src / f"img{i}.png").write_bytes(png(img))
    out = tmp_path / "out"
    spec = JobSpec(input_uri=str(src), output_uri=str(out), task="box", prior=tiny_prior,
                   shard_size=2, **FAST)
    _resume_after_damage(pipeline, fsspec.filesystem("file"), str(out), spec)


def test_damaged_manifests_on_s3_are_moved_aside_and_their_shards_rerun(pipeline, s3, tiny_prior):
    fs, options, bucket = s3
    for i, img in enumerate(gray_images(8)):
        fs.pipe(f"{bucket}/in/img{i}.png", png(img))
    spec = JobSpec(input_uri=f"s3://{bucket}/in", output_uri=f"s3://{bucket}/out", task="box",
                   prior=tiny_prior, shard_size=2, storage_options=options, **FAST)
    _resume_after_damage(pipeline, fs, f"{bucket}/out", spec)
