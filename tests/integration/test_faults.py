"""Faults the pipeline meets on a long job: damaged outputs, hostile inputs, concurrent runs.

Everything runs for real: the flow in-process on a local Ray and Prefect's harness, outputs on
the local disk and on moto's S3 server.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.spec import JobSpec

from .conftest import FAST, bomb_png, gray_images, png

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


def _files_under(root) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file()}


def test_hostile_parquet_rows_become_named_error_rows_and_nothing_escapes(
        pipeline, tmp_path, tiny_prior):
    import pickle

    good = gray_images(2, seed=3)
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_OpenOnUnpickle(str(marker)))
    ids = ["ok-1", "bomb", "../up", "/abs/path", "nul\x00byte", "n" * 10_000, "pickled", "ok-2"]
    images = [png(good[0]), bomb_png(), png(good[1]), png(good[1]), png(good[1]), png(good[1]),
              evil, png(good[1])]
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"id": ids, "image": images}), tmp_path / "pq" / "a.parquet")
    # A second file: one row group whose footer declares more bytes than the job's cap.
    rng = np.random.default_rng(0)
    blob = rng.integers(0, 255, 300_000, dtype=np.uint8).tobytes()  # incompressible
    pq.write_table(pa.table({"id": ["huge-0", "huge-1"], "image": [blob, blob]}),
                   tmp_path / "pq" / "b.parquet")
    out = tmp_path / "data" / "out"
    before = _files_under(tmp_path)
    spec = JobSpec(input_uri=str(tmp_path / "pq"), output_uri=str(out), task="box",
                   prior=tiny_prior, max_row_group_bytes=200_000, **FAST)

    summary = pipeline(spec=spec)

    rows = pq.read_table(out / "manifests")
    assert summary["images"] == {"total": 10, "ok": 2, "error": 8}
    by_source = dict(zip(rows["source_uri"].to_pylist(),
                         zip(rows["status"].to_pylist(), rows["error"].to_pylist())))
    causes = {src.rsplit("/", 1)[1]: (err or "").split(":")[0] for src, (_, err) in by_source.items()}
    assert causes == {"a.parquet#row=0": "", "a.parquet#row=1": "too-large",
                      "a.parquet#row=2": "unsafe-id", "a.parquet#row=3": "unsafe-id",
                      "a.parquet#row=4": "unsafe-id", "a.parquet#row=5": "unsafe-id",
                      "a.parquet#row=6": "not-an-image", "a.parquet#row=7": "",
                      "b.parquet#row=0": "too-large", "b.parquet#row=1": "too-large"}
    assert all("row group 0" in e and "over the cap of 200000" in e
               for s, (_, e) in by_source.items() if "b.parquet" in s)
    assert not marker.exists()  # the pickled cell was never unpickled
    new = _files_under(tmp_path) - before
    assert new and all(p.startswith(str(out) + "/") for p in new), sorted(new)[:5]
    # auto: Parquet in, Parquet out, named after the input file
    restored = pq.read_table(out / "data" / "a.parquet")
    assert [cell["path"] for cell in restored["image"].to_pylist()] == ["ok-1.png", "ok-2.png"]
    assert not (out / "data" / "b.parquet").exists()  # no row of it was restored


class _OpenOnUnpickle:
    """Unpickling this creates a file: the proof that something was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickled_checkpoint(path, marker) -> None:
    import torch

    torch.save({"weight": _OpenOnUnpickle(str(marker))}, str(path))


def _bogus_safetensors(path) -> None:
    import struct

    path.write_bytes(struct.pack("<Q", 2**62) + b'{"w": {}}')


@pytest.mark.parametrize("make, words", [(_pickled_checkpoint, "weights_only"),
                                         (_bogus_safetensors, "safetensors header claims")])
def test_a_hostile_prior_is_one_clear_job_error_and_nothing_is_unpickled(
        pipeline, tmp_path, make, words):
    from tasks.spec import JobSpecError

    src = tmp_path / "in"
    src.mkdir()
    (src / "img0.png").write_bytes(png(gray_images(1)[0]))
    marker = tmp_path / "unpickled"
    prior = tmp_path / ("evil.pt" if make is _pickled_checkpoint else "evil.safetensors")
    if make is _pickled_checkpoint:
        make(prior, marker)
    else:
        make(prior)
    spec = JobSpec(input_uri=str(src), output_uri=str(tmp_path / "out"), task="box",
                   prior=str(prior), prior_preset=None, **FAST)

    with pytest.raises(JobSpecError) as err:
        pipeline(spec=spec)

    message = str(err.value)
    assert message.startswith("prior: cannot load") and str(prior) in message, message
    assert words.lower() in message.lower(), message
    assert not marker.exists()
    assert not (tmp_path / "out" / "manifests").exists()


@pytest.mark.timeout(600)
def test_two_restore_runs_on_one_output_never_both_write(tmp_path, tiny_prior):
    import subprocess

    from .conftest import child_env, restora_cli, start_cli, stop_process_group, wait_for

    count = 400
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, img in enumerate(gray_images(count, seed=6)):
        (src / f"img{i:03d}.png").write_bytes(png(img))
    # 200 shards, one at a time: the first run holds the lease for far longer than the second
    # takes to start and ask for it (shards take ~0.3 s here; a run starts in ~20-30 s).
    args = ["restore", "--input", str(src), "--output", str(out), "--task", "box",
            "--prior", tiny_prior, "--steps", "4", "--batch-size", "2", "--shard-size", "2",
            "--num-actors", "1", "--max-concurrent-shards", "1"]
    logs = {name: tmp_path / f"run-{name}.log" for name in ("first", "second")}
    runs: dict[str, subprocess.Popen] = {}
    try:
        for name in ("first", "second"):
            if name == "second":
                wait_for(lambda: (out / "leases" / "00000001.json").exists(), timeout=240,
                         what="the first run's lease")
            with open(logs[name], "w") as log:
                runs[name] = start_cli(*args, env=child_env(PREFECT_HOME=str(tmp_path / name)),
                                       stdout=log, stderr=subprocess.STDOUT)
        runs["second"].wait(timeout=300)
        overlapped = runs["first"].poll() is None
    finally:
        for proc in runs.values():  # the first run is stopped mid-way; a rerun finishes it
            stop_process_group(proc)
    second_log = logs["second"].read_text()
    assert runs["second"].returncode == 1, (
        "the second run was not refused" + ("" if overlapped else
                                            " (the first had ended: the runs did not overlap)"),
        second_log[-3000:])
    holder = json.loads((out / "leases" / "00000001.json").read_text())["run_id"]
    assert f"is being written by run {holder}" in second_log, second_log[-2000:]
    # The refused run took no lease generation.
    assert sorted(p.name for p in (out / "leases").iterdir()) == ["00000001.json"]

    restora_cli(*args, env=child_env(PREFECT_HOME=str(tmp_path / "rerun")), timeout=400)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == {"total": count, "ok": count, "error": 0}
    ids = pq.read_table(out / "manifests")["id"].to_pylist()
    assert sorted(ids) == sorted(f"img{i:03d}" for i in range(count))  # once each


def test_a_run_is_refused_while_another_holds_the_s3_output(pipeline, s3, tiny_prior):
    from tasks.lease import LeaseHeldError, OutputLease

    fs, options, bucket = s3
    for i, img in enumerate(gray_images(2)):
        fs.pipe(f"{bucket}/in/img{i}.png", png(img))
    spec = JobSpec(input_uri=f"s3://{bucket}/in", output_uri=f"s3://{bucket}/out", task="box",
                   prior=tiny_prior, storage_options=options, **FAST)
    other = OutputLease(spec.output_uri, options, run_id="other-run")
    other.acquire()
    try:
        with pytest.raises(LeaseHeldError, match="is being written by run other-run"):
            pipeline(spec=spec)
        fs.invalidate_cache()
        assert not fs.exists(f"{bucket}/out/plan") and not fs.exists(f"{bucket}/out/manifests")
    finally:
        other.release()
    summary = pipeline(spec=spec)
    assert summary["images"]["ok"] == 2 and summary["run_id"] != "other-run"
