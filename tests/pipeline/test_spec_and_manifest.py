"""Job spec validation and hashing; the manifest schema and its atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    SCHEMA_VERSION,
    CommittedManifest,
    ManifestVersionError,
    committed_manifest,
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
REPO = Path(__file__).resolve().parents[2]
ON_CPU = ("m", "cpu", "fp32")  # config_hash's model id, device kind and resolved precision


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
    h = a.config_hash(*ON_CPU)
    assert h == parse_spec({**BASE, "batch_size": 3, "num_actors": 4}).config_hash(*ON_CPU)
    assert h != parse_spec({**BASE, "steps": 8}).config_hash(*ON_CPU)
    assert h != a.config_hash("other-weights", "cpu", "fp32")
    # which Parquet rows become error rows; hashed only when changed (older hashes still match)
    assert h == parse_spec({**BASE, "max_row_group_bytes": 1 << 30}).config_hash(*ON_CPU)
    assert h != parse_spec({**BASE, "max_row_group_bytes": 1000}).config_hash(*ON_CPU)


def test_config_hash_covers_the_device_kind_and_the_resolved_precision(tmp_path, tiny_prior_path):
    (tmp_path / "in").mkdir()  # an output beside the input, not inside it
    spec = parse_spec({**BASE, "input_uri": str(tmp_path / "in"), "output_uri": str(tmp_path / "out"),
                       "prior": tiny_prior_path})
    on_cpu, on_gpu = validate_job(spec, device="cpu"), validate_job(spec, device="cuda")
    assert (on_cpu.precision, on_gpu.precision) == ("fp32", "bf16")  # what "auto" became
    assert on_cpu.config_hash != on_gpu.config_hash  # a CPU rerun does not skip GPU shards
    fp32 = spec.model_copy(update={"precision": "fp32"})
    assert validate_job(fp32, device="cpu").config_hash != validate_job(fp32, device="cuda").config_hash


def test_missing_input_and_unloadable_prior_fail_fast(tmp_path):
    with pytest.raises(JobSpecError, match="input_uri: .* does not exist"):
        validate_job(parse_spec({**BASE, "input_uri": str(tmp_path / "nope"),
                                 "output_uri": str(tmp_path / "out")}))
    bad_prior = tmp_path / "broken.safetensors"
    bad_prior.write_bytes(b"not weights")
    with pytest.raises(JobSpecError, match="prior: cannot load"):
        (tmp_path / "in").mkdir()  # an output beside the input, not inside it
        validate_job(parse_spec({**BASE, "input_uri": str(tmp_path / "in"), "prior": str(bad_prior),
                                 "output_uri": str(tmp_path / "out")}))


def _row(i: int, status: str = "ok") -> dict:
    return {"id": f"img{i}", "source_uri": f"/in/img{i}.png", "mask_uri": None,
            "output_uri": f"/out/images/img{i}.png" if status == "ok" else None,
            "status": status, "error": None if status == "ok" else "truncated: half a file",
            "task": "box", "task_params": "{}", "method": "restora_flow",
            "steps": 4 if status == "ok" else None, "corrections": 1 if status == "ok" else None,
            "method_params": ('{"corrections":1,"paste_known":false,"steps":4}'
                              if status == "ok" else None),
            "nfe": 10 if status == "ok" else None, "windows": 1 if status == "ok" else None,
            "tiles": 1 if status == "ok" else None, "samples": 1, "seed": 2**62 + i,
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
    assert committed_manifest(uri) == CommittedManifest("h", SCHEMA_VERSION)
    assert back.schema.metadata[b"restora.schema_version"] == str(SCHEMA_VERSION).encode()
    assert back.schema.field("steps").type == pa.int32()
    assert back["steps"].to_pylist() == [4, None]  # an image never restored ran no steps
    assert back.to_pandas().loc[1, "status"] == "error"
    assert read_manifest(uri).equals(back)
    assert not [p for p in (tmp_path / "manifests").iterdir() if p.name.startswith(".")]


def _v1_manifest(uri: str, rows: list[dict]) -> None:
    """A manifest as Restora wrote it before schema versions: no version key, no
    method_params, steps/corrections copied from the spec on every row."""
    v1 = pa.schema([f.with_nullable(False) if f.name in ("steps", "corrections") else f
                    for f in MANIFEST_SCHEMA if f.name != "method_params"])
    table = rows_to_table({k: [r[k] for r in rows] for k in MANIFEST_COLUMNS})
    table = table.drop_columns(["method_params"]).cast(v1)
    pq.write_table(table.replace_schema_metadata({b"restora.config_hash": b"old"}), uri)


def test_a_manifest_of_an_older_schema_is_read_back_in_the_current_one(tmp_path):
    uri = str(tmp_path / "shard-00000.parquet")
    _v1_manifest(uri, [{**_row(0), "corrections": 1}, {**_row(1, "error"), "steps": 4,
                                                        "corrections": 1}])
    assert committed_manifest(uri) == CommittedManifest("old", 1)
    table = read_manifest(uri)
    assert table.schema.names == list(MANIFEST_COLUMNS)
    assert table["method_params"].null_count == 2 and table["steps"].to_pylist() == [4, 4]
    assert read_manifest(uri, columns=["status", "method_params"]).num_rows == 2
    summary = summarize([read_manifest(uri)])
    assert summary["images"] == {"total": 2, "ok": 1, "error": 1}


def test_a_manifest_from_before_tiling_reads_windows_and_tiles_as_unknown(tmp_path):
    uri = str(tmp_path / "shard-00000.parquet")
    table = rows_to_table({k: [_row(0)[k]] for k in MANIFEST_COLUMNS})
    pq.write_table(table.drop_columns(["windows", "tiles"]).replace_schema_metadata(
        {b"restora.config_hash": b"h", b"restora.schema_version": b"3"}), uri)
    back = read_manifest(uri)
    assert back["windows"].to_pylist() == [None] and back["tiles"].to_pylist() == [None]
    assert back["nfe"].to_pylist() == [10]


def test_a_manifest_of_a_newer_schema_is_read_only_where_it_has_the_columns(tmp_path):
    uri = str(tmp_path / "shard-00000.parquet")
    table = rows_to_table({k: [_row(0)[k]] for k in MANIFEST_COLUMNS}).drop_columns(["seconds"])
    pq.write_table(table.replace_schema_metadata({b"restora.schema_version": b"99"}), uri)
    assert read_manifest(uri, columns=["output_uri"])["output_uri"].to_pylist() == [
        "/out/images/img0.png"]  # what --overwrite's clean-up needs
    with pytest.raises(ManifestVersionError, match=r"schema version 99, newer .* lacks \['seconds'\]"):
        read_manifest(uri)


def test_a_rerun_reruns_shards_of_an_older_schema_and_refuses_newer_ones(tmp_path, tiny_prior_path):
    from flows.restore_dataset import shards_to_run
    from tasks.manifest import manifest_uri
    from tasks.planning import Plan, ShardPlan

    (tmp_path / "in").mkdir()  # an output beside the input, not inside it
    spec = parse_spec({**BASE, "input_uri": str(tmp_path / "in"), "output_uri": str(tmp_path / "out"),
                       "prior": tiny_prior_path})
    info = validate_job(spec)
    shards = [ShardPlan(shard_id=f"shard-{i:05d}", kind="images", count=1) for i in range(3)]
    plan = Plan(input_uri=spec.input_uri, input_format="images", masks_uri=None, shards=shards)
    uris = [manifest_uri(spec.output_uri, s.shard_id) for s in shards]
    (tmp_path / "out" / "manifests").mkdir(parents=True)
    current = rows_to_table({k: [_row(0)[k]] for k in MANIFEST_COLUMNS})
    write_manifest(current, uris[0], shard_id="shard-00000", config_hash=info.config_hash)
    _v1_manifest(uris[1], [_row(1)])
    pq.write_table(pq.read_table(uris[1]).replace_schema_metadata(
        {b"restora.config_hash": info.config_hash.encode()}), uris[1])  # same hash, old schema
    for retry_failed in (False, True):
        work, skipped, _ = shards_to_run(plan, spec, info, retry_failed=retry_failed, overwrite=False)
        assert [(s.shard_id, redo) for s, redo in work] == [("shard-00001", None),
                                                             ("shard-00002", None)]
        assert skipped == 1
    newer = pq.read_table(uris[0])
    pq.write_table(newer.replace_schema_metadata(
        {**newer.schema.metadata, b"restora.schema_version": str(SCHEMA_VERSION + 1).encode()}),
        uris[0])
    with pytest.raises(JobSpecError,
                       match=f"schema version {SCHEMA_VERSION + 1}, newer than this Restora's"):
        shards_to_run(plan, spec, info, retry_failed=False, overwrite=False)
    assert len(shards_to_run(plan, spec, info, retry_failed=False, overwrite=True)[0]) == 3


def test_schema_is_exactly_the_documented_columns():
    assert MANIFEST_SCHEMA.names == [
        "id", "source_uri", "mask_uri", "output_uri", "status", "error", "task", "task_params",
        "method", "steps", "corrections", "method_params", "nfe", "windows", "tiles", "samples",
        "seed", "model_id",
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


def test_a_body_cut_short_and_5xx_answers_are_transient_but_403_is_not():
    from aiohttp import ClientPayloadError
    from botocore.exceptions import ClientError

    def answer(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert is_transient_storage_error(ClientPayloadError("Response payload is not completed"))
    assert is_transient_storage_error(answer(500, "InternalError"))
    assert is_transient_storage_error(answer(503, "SlowDown"))
    assert not is_transient_storage_error(answer(403, "AccessDenied"))
    denied = PermissionError("Access Denied")
    denied.__cause__ = answer(403, "AccessDenied")
    assert not is_transient_storage_error(denied)


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


def test_task_params_are_checked_against_the_task_at_the_edge_naming_the_parameter():
    with pytest.raises(JobSpecError) as err:
        parse_spec({**BASE, "task": "superres", "task_params": {"factor": 0}})
    assert str(err.value) == "invalid job spec: task_params: factor must be >= 1, got 0"
    with pytest.raises(JobSpecError, match="task 'box' has no parameter 'factor'; it takes "
                                           r"\['box', 'box_size'\]"):
        parse_spec({**BASE, "task_params": {"factor": 2}})
    with pytest.raises(JobSpecError, match="masks_uri is only used by the tasks that take a mask "
                                           r"\['inpaint'\], not 'box'"):
        parse_spec({**BASE, "masks_uri": "/masks"})
    from flows.cli import flagged

    assert flagged("invalid job spec: task_params: p must be < 1.0, got 2") == (
        "invalid job spec: --param: p must be < 1.0, got 2")


def test_config_hash_takes_the_task_params_resolved():
    plain = parse_spec({**BASE, "task": "superres"}).config_hash(*ON_CPU)
    assert parse_spec({**BASE, "task": "superres", "task_params": {"factor": 2}}).config_hash(
        *ON_CPU) == plain
    assert parse_spec({**BASE, "task": "superres", "task_params": {"factor": 4}}).config_hash(
        *ON_CPU) != plain


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
    assert base.config_hash(*ON_CPU) == same.config_hash(*ON_CPU)
    other = parse_spec({**BASE, "method": "ot_ode", "method_params": {"gamma": "constant"}})
    assert base.config_hash(*ON_CPU) != other.config_hash(*ON_CPU)
    assert parse_spec({**BASE, "steps": 64}).config_hash(*ON_CPU) == parse_spec(BASE).config_hash(*ON_CPU)


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


def _console(*args: str) -> subprocess.CompletedProcess:
    """The `restora` console entry (``flows.cli:script``) in a fresh process."""
    code = "import sys; from flows.cli import script; sys.argv[0] = 'restora'; script()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


def test_read_only_commands_leave_with_their_code_and_all_their_output(tmp_path):
    rows = [_row(i) for i in range(3)]
    uri = str(tmp_path / "out" / "manifests" / "shard-00000.parquet")
    write_manifest(rows_to_table({k: [r[k] for r in rows] for k in MANIFEST_COLUMNS}), uri,
                   shard_id="shard-00000", config_hash="h")
    # inspect exits through os._exit: the JSON must still arrive whole.
    proc = _console("inspect", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images"]["total"] == 3
    listing = _console("methods", "--json")
    assert listing.returncode == 0 and {m["method"] for m in json.loads(listing.stdout)} >= {
        "restora_flow", "restora_flow_denoise"}
    empty = _console("inspect", str(tmp_path / "nothing-here"))
    assert empty.returncode == 2 and "no manifests under" in empty.stderr


def test_resume_reads_each_committed_manifest_once_and_the_summary_matches(
        tmp_path, tiny_prior_path, monkeypatch):
    import flows.restore_dataset as rd
    from tasks.manifest import manifest_uri
    from tasks.planning import Plan, ShardPlan

    (tmp_path / "in").mkdir()  # an output beside the input, not inside it
    spec = parse_spec({**BASE, "input_uri": str(tmp_path / "in"), "output_uri": str(tmp_path / "out"),
                       "prior": tiny_prior_path})
    info = validate_job(spec)
    shards = [ShardPlan(shard_id=f"shard-{i:05d}", kind="images", count=2) for i in range(4)]
    plan = Plan(input_uri=spec.input_uri, input_format="images", masks_uri=None, shards=shards)
    (tmp_path / "out" / "manifests").mkdir(parents=True)
    for i, shard in enumerate(shards[:3]):  # three committed shards, one with an error row
        rows = [_row(2 * i), _row(2 * i + 1, "error" if i == 1 else "ok")]
        write_manifest(rows_to_table({k: [r[k] for r in rows] for k in MANIFEST_COLUMNS}),
                       manifest_uri(spec.output_uri, shard.shard_id), shard_id=shard.shard_id,
                       config_hash=info.config_hash)
    expected = rd.build_summary(plan, spec, info)
    reads: list[str] = []
    real = rd.read_manifest  # the flow's only manifest read besides the resume check
    monkeypatch.setattr(rd, "read_manifest",
                        lambda uri, *a, **k: reads.append(uri) or real(uri, *a, **k))

    fold = rd.SummaryFold(spec.samples)
    work, skipped, _ = rd.shards_to_run(plan, spec, info, retry_failed=False, overwrite=False,
                                        fold=fold)
    summary = rd.build_summary(plan, spec, info, fold)

    assert skipped == 3 and [s.shard_id for s, _ in work] == ["shard-00003"]
    assert reads == [manifest_uri(spec.output_uri, "shard-00003")]  # only the uncommitted one
    assert summary == expected
    assert summary["images"] == {"total": 6, "ok": 5, "error": 1}
    assert summary["shards"] == {"total": 4, "committed": 3}
    # --retry-failed takes the error rows from the same read, and folds only the shards it skips.
    reads.clear()
    fold = rd.SummaryFold(spec.samples)
    work, skipped, _ = rd.shards_to_run(plan, spec, info, retry_failed=True, overwrite=False,
                                        fold=fold)
    assert [(s.shard_id, redo) for s, redo in work] == [("shard-00001", ["/in/img3.png"]),
                                                        ("shard-00003", None)]
    assert reads == [] and fold.shards == {"shard-00000", "shard-00002"}
