"""The `restora` command in fresh processes: fail-fast specs, a killed run, inspect."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from .conftest import REPO, child_env, gray_images, png, restora_cli, stop_process_group, wait_for

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(120)
def test_bad_job_specs_fail_fast_with_one_message(tmp_path, tiny_prior, s3_endpoint):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png(gray_images(1)[0]))
    common = ["restore", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    cases = {
        "task": (["--task", "colorize", "--prior", tiny_prior], "task: Input should be 'inpaint', 'box', 'random', 'superres' or 'denoise'"),
        "bucket": (["--task", "box", "--prior", tiny_prior, "--endpoint-url", s3_endpoint,
                    "--output", "s3://no-such-bucket/out"],
                   "output_uri: bucket 'no-such-bucket' of 's3://no-such-bucket/out' does not exist"),
        "prior": (["--task", "box", "--prior", str(tmp_path / "missing.safetensors")],
                  "prior: cannot load"),
        "spec": (["--task", "box", "--prior", tiny_prior, "--steps", "0"], "steps"),
    }
    for name, (extra, message) in cases.items():
        proc = restora_cli(*common, *extra, check=False, timeout=90)
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        errors = [line for line in proc.stderr.splitlines() if "error:" in line.lower()]
        assert len(errors) == 1 and message in errors[0], (name, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(420)
def test_a_killed_run_loses_nothing_committed_and_resumes(tmp_path, tiny_prior):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, img in enumerate(gray_images(40, seed=5)):
        (src / f"img{i:02d}.png").write_bytes(png(img))
    args = ["restore", "--input", str(src), "--output", str(out), "--task", "box",
            "--prior", tiny_prior, "--steps", "4", "--batch-size", "2", "--shard-size", "2",
            "--num-actors", "1", "--max-concurrent-shards", "1"]
    env = child_env(PREFECT_HOME=str(tmp_path / "prefect"))
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    manifests = out / "manifests"
    try:
        wait_for(lambda: manifests.exists() and len(list(manifests.glob("*.parquet"))) >= 3,
                 timeout=240, what="three committed shards")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        stop_process_group(proc)
    committed = sorted(manifests.glob("*.parquet"))
    assert 3 <= len(committed) < 20, "the run was not interrupted mid-way"
    for path in committed:  # every visible manifest is whole, and its images exist
        table = pq.read_table(path)
        assert table.num_rows == 2 and set(table["status"].to_pylist()) == {"ok"}
        for uri in table["output_uri"].to_pylist():
            assert os.path.exists(uri)
    assert not [p for p in manifests.iterdir() if not p.name.endswith(".parquet")
                and not p.name.startswith(".")]
    stamps = {p.name: p.stat().st_mtime_ns for p in committed}

    proc = restora_cli(*args, env=env, timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == {"total": 40, "ok": 40, "error": 0}
    assert summary["shards"]["skipped"] == len(committed)
    assert {p.name: p.stat().st_mtime_ns for p in committed} == stamps
    assert "manifests: " + str(manifests) in proc.stdout

    report = restora_cli("inspect", str(out), timeout=60)
    assert "20 manifest(s), 40 rows: 40 ok, 0 error" in report.stdout
    report = restora_cli("inspect", str(committed[0]), "--json", timeout=60)
    assert json.loads(report.stdout)["images"]["total"] == 2


@pytest.mark.timeout(60)
def test_train_without_the_training_flow_says_so(tmp_path):
    proc = restora_cli("train", "--help", check=False, timeout=50)
    if proc.returncode == 2:
        assert "training flow" in proc.stderr or "main(argv)" in proc.stderr
    else:  # flows/train_prior.py has landed: its own help must come out
        assert proc.returncode == 0
