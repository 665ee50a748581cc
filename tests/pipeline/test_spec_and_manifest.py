"""Job spec validation and hashing; the manifest schema and its atomic writes."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    manifest_config_hash,
    read_manifest,
    rows_to_table,
    write_manifest,
)
from tasks.spec import JobSpecError, parse_spec
from tasks.storage import is_transient_storage_error, open_fs, write_atomic
from tasks.summary import error_cause, markdown_summary, summarize
from tasks.validate import validate_job

BASE = {"input_uri": "/in", "output_uri": "/out", "task": "box"}


def test_unknown_task_fails_with_one_message_naming_the_field():
    with pytest.raises(JobSpecError) as err:
        parse_spec({**BASE, "task": "colorize"})
    assert "task" in str(err.value) and "\n" not in str(err.value)


def test_unknown_field_and_bad_numbers_are_refused():
    with pytest.raises(JobSpecError, match="bogus"):
        parse_spec({**BASE, "bogus": 1})
    with pytest.raises(JobSpecError, match="steps"):
        parse_spec({**BASE, "steps": 0})


def test_config_hash_ignores_throughput_knobs_but_not_results():
    a = parse_spec(BASE)
    assert a.config_hash("m") == parse_spec({**BASE, "batch_size": 3, "num_actors": 4}).config_hash("m")
    assert a.config_hash("m") != parse_spec({**BASE, "steps": 8}).config_hash("m")
    assert a.config_hash("m") != a.config_hash("other-weights")


def test_missing_input_and_unloadable_prior_fail_fast(tmp_path):
    with pytest.raises(JobSpecError, match="input_uri: .* does not exist"):
        validate_job(parse_spec({**BASE, "input_uri": str(tmp_path / "nope"),
                                 "output_uri": str(tmp_path / "out")}))
    bad_prior = tmp_path / "broken.safetensors"
    bad_prior.write_bytes(b"not weights")
    with pytest.raises(JobSpecError, match="prior: cannot load"):
        validate_job(parse_spec({**BASE, "input_uri": str(tmp_path), "prior": str(bad_prior),
                                 "output_uri": str(tmp_path / "out")}))


def _row(i: int, status: str = "ok") -> dict:
    return {"id": f"img{i}", "source_uri": f"/in/img{i}.png", "mask_uri": None,
            "output_uri": f"/out/images/img{i}.png" if status == "ok" else None,
            "status": status, "error": None if status == "ok" else "truncated: half a file",
            "task": "box", "task_params": "{}", "method": "restora_flow", "steps": 4,
            "corrections": 1, "method_params": '{"corrections":1,"paste_known":false,"steps":4}',
            "nfe": 10 if status == "ok" else None, "samples": 1, "seed": 2**62 + i,
            "model_id": "abc", "config_hash": "h", "width": 16, "height": 16,
            "known_fraction": 0.9, "consistency": 0.01, "psnr": 20.0 + i, "ssim": 0.5,
            "psnr_hole": float("nan"), "lpips": None, "uncertainty_mean": None,
            "uncertainty_p95": None, "flag": None, "seconds": 0.5, "worker_node": "n1",
            "device": "cpu", "start_time": 1.7e9, "end_time": 1.7e9 + 0.5}


def test_manifest_round_trips_with_proper_types(tmp_path):
    rows = [_row(0), _row(1, "error")]
    table = rows_to_table({k: [r[k] for r in rows] for k in MANIFEST_COLUMNS})
    uri = str(tmp_path / "manifests" / "shard-00000.parquet")
    write_manifest(table, uri, shard_id="shard-00000", config_hash="h")
    back = pq.read_table(uri)
    assert back.schema.names == list(MANIFEST_COLUMNS)
    assert back.schema.field("seed").type == pa.int64()
    assert back.schema.field("start_time").type == pa.timestamp("us", tz="UTC")
    assert back["psnr_hole"].null_count == 2  # NaN is stored as null
    assert manifest_config_hash(uri) == "h"
    df = back.to_pandas()
    assert str(df["steps"].dtype) == "int32" and df.loc[1, "status"] == "error"
    assert read_manifest(uri).equals(back)
    assert not [p for p in (tmp_path / "manifests").iterdir() if p.name.startswith(".")]


def test_schema_is_exactly_the_documented_columns():
    assert MANIFEST_SCHEMA.names == [
        "id", "source_uri", "mask_uri", "output_uri", "status", "error", "task", "task_params",
        "method", "steps", "corrections", "method_params", "nfe", "samples", "seed", "model_id",
        "config_hash", "width", "height", "known_fraction", "consistency", "psnr", "ssim",
        "psnr_hole", "lpips", "uncertainty_mean", "uncertainty_p95", "flag", "seconds",
        "worker_node", "device", "start_time", "end_time"]


def test_atomic_write_leaves_old_file_when_it_fails(tmp_path, monkeypatch):
    fs, path = open_fs(str(tmp_path / "f.bin"))
    write_atomic(fs, path, b"old")

    def crash(*args, **kwargs):
        raise OSError("killed before the rename")

    monkeypatch.setattr(fs, "mv", crash)
    with pytest.raises(OSError):
        write_atomic(fs, path, b"new")
    assert (tmp_path / "f.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_only_transient_storage_errors_are_retryable():
    assert is_transient_storage_error(ConnectionResetError("reset"))
    assert is_transient_storage_error(TimeoutError())
    assert is_transient_storage_error(OSError("SlowDown: please reduce your request rate"))
    assert not is_transient_storage_error(FileNotFoundError("gone"))
    assert not is_transient_storage_error(ValueError("corrupt"))
    wrapped = RuntimeError("shard failed")
    wrapped.__cause__ = ConnectionError("socket closed")
    assert is_transient_storage_error(wrapped)


def test_summary_counts_errors_by_cause_and_averages_metrics():
    rows = [_row(0), _row(1), _row(2, "error")]
    table = rows_to_table({k: [r[k] for r in rows] for k in MANIFEST_COLUMNS})
    summary = summarize([table])
    assert summary["images"] == {"total": 3, "ok": 2, "error": 1}
    assert summary["errors_by_cause"] == {"truncated": 1}
    assert summary["metric_means"]["psnr"] == pytest.approx(20.5)
    summary["shards"] = {"total": 1, "run": 1, "skipped": 0}
    assert "| errors: truncated | 1 |" in markdown_summary(summary)
    assert error_cause("restore-failed: nan") == "restore-failed"


def test_actor_pool_that_would_take_every_cpu_is_refused_with_the_numbers():
    from tasks.pool import actor_resources
    from tasks.spec import JobSpec, JobSpecError

    spec = JobSpec(input_uri="in", output_uri="out", num_actors=2, cpus_per_actor=1.0)
    with pytest.raises(JobSpecError, match="num_actors=2 x cpus_per_actor=1.0"):
        actor_resources(spec, {"CPU": 2.0})
    ok = actor_resources(spec.model_copy(update={"cpus_per_actor": 0.5}), {"CPU": 2.0})
    assert ok.num_cpus == 0.5 and ok.num_gpus == 0.0
    assert actor_resources(spec, {"CPU": 8.0, "GPU": 2.0}).num_gpus == 1.0


def test_method_params_are_checked_against_the_method_with_the_name_in_the_message():
    with pytest.raises(JobSpecError, match="method 'ot_ode' has no parameter 'corrections'"):
        parse_spec({**BASE, "method": "ot_ode", "method_params": {"corrections": 1}})
    with pytest.raises(JobSpecError, match="t0 must be < 1.0"):
        parse_spec({**BASE, "method": "ot_ode", "method_params": {"t0": 1.5}})
    with pytest.raises(JobSpecError, match="averages must be an integer"):
        parse_spec({**BASE, "method": "pnp_flow", "method_params": {"averages": "five"}})
    with pytest.raises(JobSpecError, match="does not do task 'denoise'.*restora_flow_denoise"):
        parse_spec({**BASE, "task": "denoise"})
    with pytest.raises(JobSpecError, match="contradicts method_params.steps"):
        parse_spec({**BASE, "steps": 8, "method_params": {"steps": 9}})


def test_unset_method_params_resolve_to_the_tasks_published_defaults():
    assert parse_spec({**BASE, "method": "ot_ode"}).resolved_params == {
        "steps": 100, "t0": 0.1, "gamma": "gamma_t"}
    assert parse_spec({**BASE, "task": "random", "method": "pnp_flow"}).resolved_params["alpha"] == 0.01
    assert parse_spec({**BASE, "task": "random"}).resolved_params["steps"] == 128
    spec = parse_spec({**BASE, "method": "pnp_flow", "task": "denoise", "steps": 7})
    assert spec.resolved_params == {"steps": 7, "alpha": 0.8, "lr": 1.0, "averages": 5}


def test_config_hash_follows_the_parameters_that_run_not_how_they_were_written():
    base = parse_spec({**BASE, "method": "ot_ode"})
    same = parse_spec({**BASE, "method": "ot_ode", "method_params": {"t0": 0.1, "steps": 100}})
    assert base.config_hash("m") == same.config_hash("m")
    other = parse_spec({**BASE, "method": "ot_ode", "method_params": {"gamma": "constant"}})
    assert base.config_hash("m") != other.config_hash("m")
    assert parse_spec({**BASE, "steps": 64}).config_hash("m") == parse_spec(BASE).config_hash("m")


def test_cli_method_param_flags_reach_the_spec():
    from flows.cli import build_parser, spec_from_args

    args = build_parser().parse_args([
        "restore", "--input", "/in", "--output", "/out", "--task", "box", "--method", "ot_ode",
        "--method-param", "t0=0.3", "--method-param", "gamma=constant", "--steps", "50"])
    spec = spec_from_args(args)
    assert spec.method_params == {"t0": 0.3, "gamma": "constant"}
    assert spec.resolved_params == {"steps": 50, "t0": 0.3, "gamma": "constant"}


def test_methods_listing_shows_every_method_with_task_defaults_cost_and_sources(capsys):
    from flows.cli import describe_methods, main
    from restora_core import METHODS

    listed = {m["method"]: m for m in describe_methods()}
    assert set(listed) == set(METHODS) and {"flower", "ot_ode", "pnp_flow"} <= set(listed)
    assert listed["ot_ode"]["tasks"]["box"]["nfe"] == 90
    assert listed["pnp_flow"]["tasks"]["box"]["nfe"] == 500
    assert listed["restora_flow"]["tasks"]["random"]["params"]["steps"] == 128
    assert all(info["source"] for m in listed.values() for info in m["tasks"].values())
    assert main(["methods", "--task", "denoise"]) == 0
    out = capsys.readouterr().out
    assert "restora_flow_denoise" in out and "mask_ode" not in out and "t0=0.3" in out
