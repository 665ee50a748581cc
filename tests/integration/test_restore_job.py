"""The restore-dataset flow in-process against moto S3, a local Ray and Prefect's harness."""

from __future__ import annotations

import io
import json

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from tasks.manifest import MANIFEST_COLUMNS
from tasks.spec import JobSpec
from tasks.writers import read_output

from .conftest import FAST, bomb_png, gray_images, png

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _read_manifests(fs, prefix: str) -> pa.Table:
    files = sorted(fs.glob(f"{prefix}/manifests/*.parquet"))
    return pa.concat_tables([pq.read_table(fs.open(f, "rb")) for f in files])


def test_s3_images_and_masks_are_restored_to_s3_with_manifests(pipeline, s3, tiny_prior,
                                                                s3_endpoint):
    fs, options, bucket = s3
    images = gray_images(10)
    for i, img in enumerate(images):
        sub = "a/" if i % 2 else ""
        fs.pipe(f"{bucket}/in/{sub}img{i}.png", png(img))
        mask = np.full((16, 16), 255, np.uint8)
        mask[4:12, 4:12] = 0
        fs.pipe(f"{bucket}/masks/{sub}img{i}.png", png(mask))
    spec = JobSpec(input_uri=f"s3://{bucket}/in", masks_uri=f"s3://{bucket}/masks",
                   output_uri=f"s3://{bucket}/out", task="inpaint", prior=tiny_prior,
                   shard_size=4, storage_options=options, **FAST)

    summary = pipeline(spec=spec)

    assert summary["images"] == {"total": 10, "ok": 10, "error": 0}
    assert summary["shards"]["total"] == 3 and summary["shards"]["run"] == 3
    fs.invalidate_cache()
    restored = fs.find(f"{bucket}/out/images")
    assert f"{bucket}/out/images/metadata.parquet" in restored  # imagefolder's metadata
    assert len(restored) == 11 and f"{bucket}/out/images/a/img1.png" in restored
    out = np.asarray(Image.open(io.BytesIO(fs.cat(f"{bucket}/out/images/a/img1.png"))))
    known = np.ones((16, 16), bool)
    known[4:12, 4:12] = False
    assert out.shape == (16, 16)
    # Known pixels stay close to the input (a random prior fills the hole with anything).
    assert np.abs(out[known].astype(float) - images[1][known]).mean() < 40

    # pyarrow's own S3 filesystem reads the manifests back (it ignores AWS_ENDPOINT_URL).
    from pyarrow import fs as pafs

    host = s3_endpoint.split("://", 1)[1]
    arrow_s3 = pafs.S3FileSystem(access_key="testing", secret_key="testing",
                                 endpoint_override=host, scheme="http")
    table = pq.read_table(f"{bucket}/out/manifests", filesystem=arrow_s3)
    assert table.schema.names == list(MANIFEST_COLUMNS)
    assert table.num_rows == 10 and set(table["status"].to_pylist()) == {"ok"}
    assert table["mask_uri"].null_count == 0
    assert set(table["nfe"].to_pylist()) == {4 + 2 * (4 - 1)}
    assert min(table["known_fraction"].to_pylist()) == pytest.approx(0.75)
    assert table["output_uri"][0].as_py().startswith(f"s3://{bucket}/out/images/")
    plan = json.loads(fs.cat(f"{bucket}/out/plan/plan.json"))
    assert [s["shard_id"] for s in plan["shards"]] == ["shard-00000", "shard-00001", "shard-00002"]
    stored = json.loads(fs.cat(f"{bucket}/out/summary.json"))
    assert stored["images"]["ok"] == 10 and stored["throughput_images_per_s"] > 0


def _hf_struct(data: bytes | None, path: str | None) -> dict:
    return {"bytes": data, "path": path}


def test_parquet_shards_raw_bytes_and_hugging_face_structs(pipeline, s3, tiny_prior, tmp_path):
    fs, options, bucket = s3
    imgs = gray_images(7, seed=1)
    raw = pa.table({"id": [f"r{i}" for i in range(4)], "image": [png(x) for x in imgs[:4]],
                    "task_params": [None, json.dumps({"box_size": 4}), None, None]})
    fs.pipe(f"{bucket}/side/side.png", png(imgs[6]))
    struct_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    hf = pa.table({"id": ["h0", "h1", "h2"],
                   "image": pa.array([_hf_struct(png(imgs[4]), "h0.png"),
                                      _hf_struct(png(imgs[5]), None),
                                      _hf_struct(None, f"s3://{bucket}/side/side.png")], type=struct_type)})
    with fs.open(f"{bucket}/pq/part-0.parquet", "wb") as f:
        pq.write_table(raw, f, row_group_size=3)
    with fs.open(f"{bucket}/pq/part-1.parquet", "wb") as f:
        pq.write_table(hf, f)
    spec = JobSpec(input_uri=f"s3://{bucket}/pq", output_uri=f"s3://{bucket}/out", task="box",
                   input_format="parquet", inputs="clean", prior=tiny_prior, storage_options=options, **FAST)

    summary = pipeline(spec=spec)

    assert summary["images"] == {"total": 7, "ok": 7, "error": 0}
    table = _read_manifests(fs, f"{bucket}/out").to_pandas().set_index("id")
    assert json.loads(table.loc["r1", "task_params"]) == {"box_size": 4}
    assert table.loc["r1", "known_fraction"] == pytest.approx(1 - 16 / 256)
    assert table.loc["h2", "source_uri"].endswith("part-1.parquet#row=2")
    assert table["psnr"].notna().all() and table["ssim"].notna().all()
    # auto: Parquet out, a file per input file, that datasets loads with an Image column
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/out/data")) == [
        "part-0.parquet", "part-1.parquet"]
    fs.get(f"{bucket}/out/data/part-1.parquet", str(tmp_path / "part-1.parquet"))
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "part-1.parquet"),
                                   split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(loaded.features["image"], datasets.Image)
    assert loaded["id"] == ["h0", "h1", "h2"] and loaded[2]["image"].size == (16, 16)
    assert table.loc["h2", "output_uri"] == f"s3://{bucket}/out/data/part-1.parquet#h2.png"


def test_bad_inputs_become_error_rows_and_the_rest_is_restored(pipeline, tmp_path, tiny_prior):
    src, masks = tmp_path / "in", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    good = gray_images(3)
    full = np.full((16, 16), 255, np.uint8)
    for i, img in enumerate(good):
        (src / f"good{i}.png").write_bytes(png(img))
        (masks / f"good{i}.png").write_bytes(png(full))
    whole = png(good[0])
    (src / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (masks / "truncated.png").write_bytes(png(full))
    (src / "notes.png").write_bytes(b"these are not pixels")
    (masks / "notes.png").write_bytes(png(full))
    (src / "bomb.png").write_bytes(bomb_png())
    (masks / "bomb.png").write_bytes(png(full))
    (src / "nomask.png").write_bytes(png(good[1]))
    (src / "wrongmask.png").write_bytes(png(good[2]))
    (masks / "wrongmask.png").write_bytes(png(np.full((8, 8), 255, np.uint8)))
    (src / "big.png").write_bytes(png(np.zeros((20, 20), np.uint8)))
    (masks / "big.png").write_bytes(png(np.zeros((20, 20), np.uint8)))
    # size_policy error: "big" is refused (the default, tile, would restore it at 20x20).
    spec = JobSpec(input_uri=str(src), masks_uri=str(masks), output_uri=str(tmp_path / "out"),
                   task="inpaint", prior=tiny_prior, size_policy="error", **FAST)

    summary = pipeline(spec=spec)

    rows = pq.read_table(tmp_path / "out" / "manifests").to_pandas().set_index("id")
    assert summary["images"] == {"total": 9, "ok": 3, "error": 6}
    assert set(rows.index[rows.status == "ok"]) == {"good0", "good1", "good2"}
    causes = {i: rows.loc[i, "error"].split(":")[0] for i in rows.index[rows.status == "error"]}
    assert causes == {"truncated": "truncated", "notes": "not-an-image", "bomb": "too-large",
                      "nomask": "mask-missing", "wrongmask": "mask-size", "big": "size"}
    assert "decompression bomb" in rows.loc["bomb", "error"]
    assert rows.loc["wrongmask", "error"] == "mask-size: mask is 8x8, image is 16x16"
    assert rows.loc[rows.status == "error", "output_uri"].isna().all()
    assert summary["errors_by_cause"]["too-large"] == 1
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        "good0.png", "good1.png", "good2.png", "metadata.parquet"]


def test_an_id_that_escapes_the_output_prefix_is_an_error_row(pipeline, tmp_path, tiny_prior):
    imgs = gray_images(3, seed=2)
    table = pa.table({"id": ["ok-1", "../../escaped", "nested/ok-2"],
                      "image": [png(x) for x in imgs]})
    (tmp_path / "pq").mkdir()
    pq.write_table(table, tmp_path / "pq" / "part.parquet")
    out = tmp_path / "data" / "out"
    spec = JobSpec(input_uri=str(tmp_path / "pq"), output_uri=str(out), task="box",
                   prior=tiny_prior, output_format="images", **FAST)

    summary = pipeline(spec=spec)

    rows = pq.read_table(out / "manifests").to_pandas()
    assert summary["images"] == {"total": 3, "ok": 2, "error": 1}
    bad = rows[rows.status == "error"].iloc[0]
    assert bad["error"].startswith("unsafe-id:") and "../../escaped" in bad["error"]
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "data" / "escaped.png").exists()
    assert (out / "images" / "part" / "nested" / "ok-2.png").exists()  # the input file's name


def test_rerun_skips_committed_shards_retry_failed_redoes_errors_overwrite_redoes_all(
        pipeline, tmp_path, tiny_prior):
    src = tmp_path / "in"
    src.mkdir()
    imgs = gray_images(8, seed=3)
    for i, img in enumerate(imgs):
        (src / f"img{i}.png").write_bytes(png(img))
    (src / "img3.png").write_bytes(b"corrupt")
    out = tmp_path / "out"
    spec = JobSpec(input_uri=str(src), output_uri=str(out), task="box", prior=tiny_prior,
                   shard_size=4, **FAST)
    first = pipeline(spec=spec)
    assert first["images"] == {"total": 8, "ok": 7, "error": 1}
    manifests = out / "manifests"
    stamp = {p.name: p.stat().st_mtime_ns for p in manifests.iterdir()}
    before = pq.read_table(manifests / "shard-00000.parquet").to_pandas().set_index("id")

    # A new file in the input does not change the stored plan.
    (src / "img9.png").write_bytes(png(imgs[0]))
    again = pipeline(spec=spec)
    assert again["shards"] == {"total": 2, "committed": 2, "run": 0, "skipped": 2, "failed": 0,
                               "damaged": 0}
    assert {p.name: p.stat().st_mtime_ns for p in manifests.iterdir()} == stamp

    (src / "img3.png").write_bytes(png(imgs[3]))
    retried = pipeline(spec=spec, retry_failed=True)
    assert retried["shards"]["run"] == 1 and retried["processed_this_run"] == 1
    assert retried["images"] == {"total": 8, "ok": 8, "error": 0}
    after = pq.read_table(manifests / "shard-00000.parquet").to_pandas().set_index("id")
    assert after.loc["img3", "status"] == "ok"
    for kept in ("img0", "img1", "img2"):  # rows that were fine are not redone
        assert after.loc[kept, "end_time"] == before.loc[kept, "end_time"]
    assert (manifests / "shard-00001.parquet").stat().st_mtime_ns == stamp["shard-00001.parquet"]

    changed = pipeline(spec=spec.model_copy(update={"steps": 5}))
    assert changed["shards"]["run"] == 2  # another config hash: nothing is skipped
    overwritten = pipeline(spec=spec.model_copy(update={"steps": 5}), overwrite=True)
    assert overwritten["shards"]["run"] == 3 and overwritten["images"]["total"] == 9


def test_same_image_same_pixels_whatever_the_batching(pipeline, tmp_path, tiny_prior):
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(gray_images(5, seed=4)):
        (src / f"img{i}.png").write_bytes(png(img))
    base = {"input_uri": str(src), "task": "random", "prior": tiny_prior, "steps": 4}
    pipeline(spec=JobSpec(output_uri=str(tmp_path / "a"), batch_size=5, num_actors=1, **base))
    pipeline(spec=JobSpec(output_uri=str(tmp_path / "b"), batch_size=2, num_actors=2,
                          shard_size=2, **base))
    for i in range(5):
        a = (tmp_path / "a" / "images" / f"img{i}.png").read_bytes()
        b = (tmp_path / "b" / "images" / f"img{i}.png").read_bytes()
        assert a == b


def test_webdataset_tar_shards_on_s3_are_restored_end_to_end(pipeline, s3, tiny_prior, tmp_path):
    from pipeline.shards import img2dataset_members, tar_bytes

    fs, options, bucket = s3
    images = gray_images(7, seed=5)
    hole = np.full((16, 16), 255, np.uint8)
    hole[4:12, 4:12] = 0
    fs.pipe(f"{bucket}/wds/00000.tar",
            tar_bytes(img2dataset_members(images[:4], 0, masks=[hole] * 4)))
    fs.pipe(f"{bucket}/wds/00001.tar",
            tar_bytes(img2dataset_members(images[4:], 1, masks=[hole] * 3)))
    # img2dataset's per-shard metadata sits beside the tars.
    fs.pipe(f"{bucket}/wds/00000.parquet", b"PAR1")
    fs.pipe(f"{bucket}/wds/00000_stats.json", b"{}")
    spec = JobSpec(input_uri=f"s3://{bucket}/wds", output_uri=f"s3://{bucket}/out",
                   task="inpaint", prior=tiny_prior, storage_options=options, **FAST)

    summary = pipeline(spec=spec)

    assert summary["images"] == {"total": 7, "ok": 7, "error": 0}
    assert summary["shards"]["total"] == 2
    table = _read_manifests(fs, f"{bucket}/out").to_pandas().set_index("id")
    assert set(table["status"]) == {"ok"}
    assert sorted(table.index) == [f"00000/00000000{i}" for i in range(4)] + [
        f"00001/00001000{i}" for i in range(3)]
    row = table.loc["00001/000010002"]
    assert row["source_uri"] == f"s3://{bucket}/wds/00001.tar#000010002.png"
    assert row["mask_uri"] == f"s3://{bucket}/wds/00001.tar#000010002.mask.png"
    assert row["known_fraction"] == pytest.approx(0.75)
    # auto: tars out, one per input tar, that webdataset iterates
    assert row["output_uri"] == f"s3://{bucket}/out/data/00001.tar#000010002.png"
    fs.invalidate_cache()
    fs.get(f"{bucket}/out/data/00001.tar", str(tmp_path / "00001.tar"))
    samples = list(wds.WebDataset(str(tmp_path / "00001.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"00001000{i}" for i in range(3)]
    assert json.loads(samples[2]["json"])["id"] == "00001/000010002"
    out = np.asarray(Image.open(io.BytesIO(read_output(row["output_uri"], options))))
    known = hole > 0
    assert out.shape == (16, 16)
    assert np.abs(out[known].astype(float) - images[6][known]).mean() < 40

    # The second tar leaves the input: --overwrite leaves none of its outputs on S3.
    fs.rm(f"{bucket}/wds/00001.tar")
    again = pipeline(spec=spec, overwrite=True)
    assert again["images"] == {"total": 4, "ok": 4, "error": 0}
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/out/manifests")) == [
        "shard-00000.parquet"]
    assert [p.split("/out/data/", 1)[1] for p in sorted(fs.find(f"{bucket}/out/data"))] == [
        "00000.tar"]
    assert not fs.exists(f"{bucket}/out/plan/shard-00001.json")


def _artifacts(flow_run_id: str) -> dict[str, object]:
    """The latest artifact of each key that a flow run created (read back from Prefect's API)."""
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    return {a.key: a for a in asyncio.run(read())}


def test_progress_artifact_counts_images_and_the_preview_shows_degraded_restored_reference(
        pipeline, tmp_path, tiny_prior):
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(gray_images(10, seed=6)):
        (src / f"img{i}.png").write_bytes(png(img))
    spec = JobSpec(input_uri=str(src), output_uri=str(tmp_path / "out"), task="box",
                   inputs="clean", prior=tiny_prior, shard_size=6, **FAST)

    summary = pipeline(spec=spec)

    artifacts = _artifacts(summary["flow_run_id"])
    progress = artifacts["restora-progress"]
    assert progress.data == pytest.approx(100.0)
    assert progress.description.startswith("10/10 images (100.0%), ")
    assert "images/s" in progress.description and progress.description.endswith(", done")
    samples = artifacts["restora-samples"]
    assert "Columns: degraded input | restored | reference" in samples.data
    grid = Image.open(tmp_path / "out" / "preview.png")
    # Four samples (4 of shard 0's first batch), three 64-px tiles each with 4-px gaps.
    assert grid.size == (3 * 64 + 2 * 4, 4 * 64 + 3 * 4)
    strip = np.asarray(grid.convert("L"))[:64]
    degraded, restored, reference = strip[:, :64], strip[:, 68:132], strip[:, 136:200]
    box = slice(24, 40)  # inside the centred box of 5/16 of 16 px, scaled by 4

    def gap(a, b):
        return np.abs(a.astype(float) - b).mean()

    # Outside the box the degraded input is the reference plus the small observation noise.
    assert gap(degraded[:16], reference[:16]) < 4
    assert gap(degraded[box, box], reference[box, box]) > 3 * gap(degraded[:16], reference[:16])
    assert gap(restored[:16], reference[:16]) < 40


def test_run_shard_reports_after_every_batch(ray_local, tmp_path, tiny_prior):
    from tasks.planning import make_plan
    from tasks.pool import ActorPool
    from tasks.shard import run_shard
    from tasks.validate import validate_job

    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(gray_images(10, seed=7)):
        (src / f"img{i}.png").write_bytes(png(img))
    spec = JobSpec(input_uri=str(src), output_uri=str(tmp_path / "out"), task="box",
                   prior=tiny_prior, steps=2, batch_size=3, num_actors=1, max_inflight_batches=1)
    info = validate_job(spec)
    (shard,) = make_plan(spec).shards
    reports: list[tuple[str, int]] = []
    pool = ActorPool(spec, info)
    try:
        result = run_shard(shard, spec, info, pool, on_progress=lambda s, n: reports.append((s, n)))
    finally:
        pool.shutdown()

    assert result["processed"] == 10
    assert reports == [("shard-00000", n) for n in (0, 3, 6, 9, 10)]


def test_overwrite_removes_outputs_of_shards_that_left_the_plan(pipeline, tmp_path, tiny_prior):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    images = gray_images(9, seed=8)
    for i, img in enumerate(images):
        (src / ("sub" if i >= 6 else "") / f"img{i}.png").write_bytes(png(img))
    out = tmp_path / "out"
    (out).mkdir()
    (out / "README.txt").write_text("not Restora's")
    spec = JobSpec(input_uri=str(src), output_uri=str(out), task="box", prior=tiny_prior,
                   shard_size=4, save_inputs=True, **FAST)
    first = pipeline(spec=spec)
    assert first["shards"]["total"] == 3 and (out / "images" / "sub" / "img8.png").exists()

    for i in range(4, 9):  # the input shrinks to one shard
        (src / ("sub" if i >= 6 else "") / f"img{i}.png").unlink()
    second = pipeline(spec=spec, overwrite=True)

    assert second["images"] == {"total": 4, "ok": 4, "error": 0}

    def files(folder: str) -> list[str]:
        root = out / folder
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    kept = [f"img{i}.png" for i in range(4)]
    assert files("images") == [*kept, "metadata.parquet"] and files("inputs") == kept
    assert files("manifests") == ["shard-00000.parquet"]
    assert files("plan") == ["plan.json", "shard-00000.json"]
    assert files("preview") == [f"shard-00000/{i:02d}.png" for i in range(4)]
    assert not (out / "images" / "sub").exists()  # no empty folders left behind
    assert (out / "README.txt").read_text() == "not Restora's"
    # imagefolder, even pointed at the output root, sees the restored images only: ids, metrics,
    # no invented label, no preview strips or saved inputs.
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), split="train",
                                   cache_dir=str(tmp_path / "hf"))
    assert sorted(loaded["id"]) == [f"img{i}" for i in range(4)]
    assert "label" not in loaded.column_names and None not in loaded["consistency"]


def test_several_samples_flag_rows_and_report_the_most_uncertain(pipeline, tmp_path, tiny_prior):
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(gray_images(5, seed=5)):
        (src / f"img{i}.png").write_bytes(png(img))
    spec = JobSpec(input_uri=str(src), output_uri=str(tmp_path / "out"), task="box",
                   prior=tiny_prior, samples=3, save_uncertainty=True,
                   uncertainty_threshold=1e-9, shard_size=3, **FAST)

    summary = pipeline(spec=spec)

    assert summary["images"]["ok"] == 5 and summary["flags"] == {"uncertain": 5}
    ranked = [r["uncertainty_mean"] for r in summary["most_uncertain"]]
    assert len(ranked) == 5 and ranked == sorted(ranked, reverse=True) and ranked[-1] > 0
    assert (tmp_path / "out" / "most_uncertain.png").exists()
    assert len(list((tmp_path / "out" / "uncertainty").glob("*.png"))) == 5
    table = pa.concat_tables([pq.read_table(f) for f in (tmp_path / "out" / "manifests").glob("*")])
    assert set(table["samples"].to_pylist()) == {3} and set(table["flag"].to_pylist()) == {"uncertain"}
