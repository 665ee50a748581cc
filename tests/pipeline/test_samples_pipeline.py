"""Several samples per image through the pipeline: the spec refuses what adds nothing, the
manifest records the spread and the flag, the uncertainty map is written as documented, and the
summary counts the flags."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from restora_core.metrics import uncertainty_summary
from tasks.batch_io import load_batch, write_batch
from tasks.decode import STD_PNG_SCALE
from tasks.manifest import MANIFEST_COLUMNS, rows_to_table
from tasks.spec import JobSpecError, parse_spec
from tasks.summary import markdown_summary, summarize
from tasks.validate import validate_job
from tasks.worker import RestoreWorker, worker_kwargs

from .conftest import png_bytes

BASE = {"input_uri": "/in", "output_uri": "/out", "task": "box"}


def test_spec_refuses_samples_that_add_nothing_and_hash_ignores_them_at_one_sample():
    with pytest.raises(JobSpecError, match="deterministic"):
        parse_spec({**BASE, "task": "denoise", "method": "restora_flow_denoise", "samples": 4})
    with pytest.raises(JobSpecError, match="need samples > 1"):
        parse_spec({**BASE, "save_uncertainty": True})
    with pytest.raises(JobSpecError, match="need samples > 1"):
        parse_spec({**BASE, "uncertainty_threshold": 0.1})
    one = parse_spec(BASE).config_hash("m", "cpu", "fp32")
    assert one == parse_spec({**BASE, "samples": 1, "estimate": "median"}).config_hash("m", "cpu", "fp32")
    four = parse_spec({**BASE, "samples": 4}).config_hash("m", "cpu", "fp32")
    assert len({one, four, parse_spec({**BASE, "samples": 4, "estimate": "median"}).config_hash("m", "cpu", "fp32"),
                parse_spec({**BASE, "samples": 4, "uncertainty_threshold": 0.1}).config_hash("m", "cpu", "fp32")}) == 4
    assert four == parse_spec({**BASE, "samples": 4, "save_uncertainty": True}).config_hash("m", "cpu", "fp32")


def test_cli_sampling_flags_reach_the_spec():
    from flows.cli import build_parser, spec_from_args

    args = build_parser().parse_args([
        "restore", "--input", "/in", "--output", "/out", "--task", "box", "--samples", "8",
        "--estimate", "median", "--save-uncertainty", "--uncertainty-threshold", "0.05"])
    spec = spec_from_args(args)
    assert (spec.samples, spec.estimate, spec.save_uncertainty, spec.uncertainty_threshold) == (
        8, "median", True, 0.05)


def test_uncertainty_summary_uses_the_missing_pixels_or_all_of_them():
    std = torch.zeros(2, 1, 4, 4)
    std[:, :, :2] = 0.5  # the top half is uncertain
    mask = torch.ones(2, 1, 4, 4)
    mask[0, :, :2] = 0  # image 0 misses the top half; image 1 misses nothing
    mean, p95 = uncertainty_summary(std, mask)
    assert mean.tolist() == [0.5, 0.25] and p95[0].item() == 0.5
    assert uncertainty_summary(std)[0].tolist() == [0.25, 0.25]


def _job(tmp_path, tiny_prior_path, **fields):
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        (src / f"img{i}.png").write_bytes(png_bytes(rng.integers(0, 255, (16, 16), dtype=np.uint8)))
    spec = parse_spec({"input_uri": str(src), "output_uri": str(tmp_path / "out"), "task": "box",
                       "prior": tiny_prior_path, "method_params": {"steps": 3}, "batch_size": 2,
                       **fields})
    info = validate_job(spec)
    items = [{"id": f"img{i}", "source": str(src / f"img{i}.png"), "mask": None} for i in range(3)]
    request = {"kind": "images", "shard_id": "shard-00000", "items": items}
    batch = load_batch(request, spec.input, spec.restoration, info)
    restored = RestoreWorker(**worker_kwargs(spec, info), threads=1)(batch)
    assert list(restored["status"]) == ["ok"] * 3, list(restored["error"])
    return rows_to_table(write_batch(restored, spec.output, info))


def test_manifest_records_spread_and_flag_and_the_map_is_the_documented_16_bit_png(
        tmp_path, tiny_prior_path):
    table = _job(tmp_path, tiny_prior_path, samples=4, save_uncertainty=True,
                       uncertainty_threshold=1e-9)
    rows = table.to_pylist()
    assert [r["samples"] for r in rows] == [4, 4, 4]
    assert all(0 < r["uncertainty_mean"] <= r["uncertainty_p95"] for r in rows)
    assert [r["flag"] for r in rows] == ["uncertain"] * 3  # every spread exceeds 1e-9
    hole = np.zeros((16, 16), bool)
    hole[5:10, 5:10] = True  # the centred box of 5/16 of the side
    for r in rows:
        png = Image.open(io.BytesIO((tmp_path / "out" / "uncertainty" / f"{r['id']}.png")
                                    .read_bytes()))
        std = np.asarray(png, dtype=np.float64) / STD_PNG_SCALE
        assert png.mode.startswith("I") and std.shape == (16, 16)
        assert std[hole].mean() == pytest.approx(r["uncertainty_mean"], abs=2 / STD_PNG_SCALE)
    summary = summarize([table])
    assert summary["flags"] == {"uncertain": 3}
    assert summary["metric_means"]["uncertainty_mean"] > 0
    assert "| flag: uncertain | 3 |" in markdown_summary({**summary, "shards": {}})


def test_one_sample_leaves_the_uncertainty_columns_empty(tmp_path, tiny_prior_path):
    table = _job(tmp_path, tiny_prior_path)
    assert table["samples"].to_pylist() == [1, 1, 1]
    assert table["uncertainty_mean"].null_count == 3 and table["flag"].null_count == 3
    assert not (tmp_path / "out" / "uncertainty").exists()


def test_summary_reads_a_manifest_committed_before_the_uncertainty_columns(tmp_path):
    from flows.restore_dataset import build_summary
    from tasks.manifest import manifest_uri, write_manifest
    from tasks.planning import Plan, ShardPlan
    from tasks.spec import RunInfo

    spec = parse_spec({**BASE, "output_uri": str(tmp_path / "out")})
    old_columns = [c for c in MANIFEST_COLUMNS
                   if c not in ("samples", "uncertainty_mean", "uncertainty_p95", "flag")]
    row = {"id": "a", "source_uri": "/in/a.png", "output_uri": None, "status": "ok",
           "known_fraction": 0.9, "seconds": 0.1}
    table = pa.table({c: [row.get(c)] for c in old_columns})
    write_manifest(table, manifest_uri(spec.output_uri, "shard-00000"), shard_id="shard-00000",
                   config_hash="h")
    plan = Plan(input_uri="/in", input_format="images", masks_uri=None,
                shards=[ShardPlan("shard-00000", "parquet", 1)])
    summary = build_summary(plan, spec, RunInfo("m", "h", 1, 16, "cpu", "fp32"))
    assert summary["images"]["ok"] == 1 and summary["flags"] == {}
