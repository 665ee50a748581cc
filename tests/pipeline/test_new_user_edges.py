"""Edges a new user hits first: an output inside the input, a Parquet file without an image
column, images of a size no image of the job can have, and what the exit code says."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.batch_io import load_batch
from tasks.planning import check_first_images, make_plan
from tasks.shard import batch_requests
from tasks.spec import JobSpec, JobSpecError, RunInfo
from tasks.storage import is_within
from tasks.validate import validate_job

from .conftest import png_bytes

# digits32: a 32x32 gray prior; superres by 2 takes 16x16 observed inputs.
DIGITS32 = RunInfo(model_id="m", config_hash="h", channels=1, resolution=32, device="cpu",
                   precision="fp32")


def _folder(path, sizes: list[int]) -> str:
    path.mkdir(parents=True)
    for i, side in enumerate(sizes):
        (path / f"im{i}.png").write_bytes(png_bytes(np.full((side, side), 100, np.uint8)))
    return str(path)


def test_an_output_inside_the_input_is_refused_before_any_work_naming_both(tmp_path):
    src = _folder(tmp_path / "in", [16])
    for output in (f"{src}/restored", f"{tmp_path}/in/../in/restored", f"file://{src}"):
        spec = JobSpec(input_uri=src, output_uri=output, task="box", prior="missing.safetensors")
        with pytest.raises(JobSpecError) as err:
            validate_job(spec)  # refused before the (missing) prior is even looked at
        assert "output_uri:" in str(err.value) and spec.output_uri in str(err.value)
        assert f"inside the input '{src}'" in str(err.value)
    assert not (tmp_path / "in" / "restored").exists()


def test_inside_means_a_path_prefix_on_the_same_store():
    assert is_within("s3a://bucket/data/out", "s3://bucket/data/")
    assert not is_within("s3://bucket/data2/out", "s3://bucket/data")  # a sibling prefix
    assert not is_within("s3://other/data/out", "s3://bucket/data")
    assert not is_within("/data/out", "s3://data")
    assert is_within("file:///tmp/a/b", "/tmp/a")


def test_a_parquet_file_without_the_image_column_is_one_error_listing_its_columns(tmp_path):
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "part-0.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "pixels": [b"x", b"y"], "label": [1, 2]}), path)
    spec = JobSpec(input_uri=str(tmp_path / "in"), output_uri=str(tmp_path / "out"), task="box")
    with pytest.raises(JobSpecError) as err:
        make_plan(spec)
    message = str(err.value)
    assert message.startswith("input_uri: ") and str(path) in message
    assert "no image column 'image'" in message and "id, pixels, label" in message


def _superres(tmp_path, sizes: list[int], **fields) -> JobSpec:
    return JobSpec(input_uri=_folder(tmp_path / "in", sizes), output_uri=str(tmp_path / "out"),
                   task="superres", prior="digits32", **fields)


def test_superres_on_images_at_the_priors_size_is_refused_at_plan_time_with_the_right_numbers(
        tmp_path):
    spec = _superres(tmp_path, [32, 32, 32], size_policy="error")
    with pytest.raises(JobSpecError) as err:
        check_first_images(make_plan(spec), spec, DIGITS32)
    message = str(err.value)
    assert "the input must be 16x16 for digits32 at factor 2 (got 32x32" in message
    assert "none of the first 3 image(s)" in message and "im0.png" in message
    assert "prior takes 16x16" not in message
    assert "--inputs clean" in message and "a prior of about 64x64" in message


def test_a_mixed_size_dataset_or_a_size_policy_that_maps_any_size_is_not_refused(tmp_path):
    mixed = _superres(tmp_path / "a", [32, 16, 32])  # only the first image is off
    check_first_images(make_plan(mixed), mixed, DIGITS32)
    resized = _superres(tmp_path / "b", [32, 32], size_policy="resize")
    check_first_images(make_plan(resized), resized, DIGITS32)
    right = _superres(tmp_path / "c", [16])
    check_first_images(make_plan(right), right, DIGITS32)
    tiled = _superres(tmp_path / "d", [32, 32])  # the default policy, tile: any size is taken
    assert tiled.size_policy == "tile"
    check_first_images(make_plan(tiled), tiled, DIGITS32)


def test_each_off_size_image_row_says_what_the_input_must_be(tmp_path):
    spec = _superres(tmp_path, [32, 16], size_policy="error")
    (shard,) = make_plan(spec).shards
    batch = load_batch(next(batch_requests(shard, spec)), spec, DIGITS32)
    assert list(batch["status"]) == ["error", "ok"]
    assert batch["error"][0].startswith(
        "size: the input must be 16x16 for digits32 at factor 2 (got 32x32")


def test_the_exit_code_says_whether_any_image_was_restored(capsys):
    from flows.cli import (
        EXIT_NOTHING_RESTORED,
        EXIT_OK,
        EXIT_USAGE,
        build_parser,
        restore_exit_code,
    )

    def summary(ok: int, error: int) -> dict:
        return {"images": {"total": ok + error, "ok": ok, "error": error},
                "manifests_dir": "out/manifests"}

    assert restore_exit_code(summary(3, 5)) == EXIT_OK == 0
    assert restore_exit_code(summary(0, 8)) == EXIT_NOTHING_RESTORED
    assert "none of the 8 images was restored" in capsys.readouterr().err
    assert len({EXIT_OK, EXIT_USAGE, EXIT_NOTHING_RESTORED, 1}) == 4
    restore = build_parser()._subparsers._group_actions[0].choices["restore"]
    assert "exit codes:" in restore.format_help()
    assert f"{EXIT_NOTHING_RESTORED}  the job completed but every row is an error" in (
        restore.format_help())
