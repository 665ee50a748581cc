"""Ray beyond one process: a two-node cluster on loopback, and `ray job submit` to a local head."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import REPO, child_env, free_port, gray_images, png, stop_process_group, wait_for
from .retry import TransientServiceError, call_with_retry

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(360)
def test_actors_on_both_nodes_work_and_a_removed_node_costs_no_image(tmp_path, tiny_prior):
    (tmp_path / "in").mkdir()
    for i, img in enumerate(gray_images(28, seed=6)):
        (tmp_path / "in" / f"img{i:02d}.png").write_bytes(png(img))
    work = Path("/tmp") / f"rtn{tmp_path.name[-6:]}"  # short: unix socket path limit
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "in").symlink_to(tmp_path / "in")
    (work / "ray").mkdir()
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("two_node_job.py")),
                           str(work), tiny_prior], cwd=REPO, env=child_env(RAY_TMPDIR=str(work)),
                          capture_output=True, text=True, timeout=330, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    result = json.loads(lines[0][len("RESULT "):])

    assert set(result["first"]["worker_nodes"]) == {result["head_node"], result["worker_node"]}
    assert result["removed_mid_run"]
    assert all(r["error"] == 0 for r in [result["first"], *result["rest"]])
    table = pq.read_table(work / "out" / "manifests")
    assert table.num_rows == 28 and set(table["status"].to_pylist()) == {"ok"}
    assert sorted(table["id"].to_pylist()) == [f"img{i:02d}" for i in range(28)]
    assert len(list((work / "out" / "images").glob("*.png"))) == 28


@pytest.fixture()
def ray_head(tmp_path):
    """`ray start --head --block` on 127.0.0.1 with its job server; stopped with its group."""
    port, dash = free_port(), free_port()
    temp = Path("/tmp") / f"rth{tmp_path.name[-6:]}"
    env = child_env(PATH=f"{Path(sys.executable).parent}:{child_env()['PATH']}")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
         "--node-ip-address=127.0.0.1", f"--port={port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash}", "--include-dashboard=true", "--num-cpus=2",
         # Own agent ports: the session's local Ray (other tests) already holds the defaults,
         # and a head whose dashboard agent cannot bind answers "No available agent" forever.
         f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", f"--ray-client-server-port={free_port()}",
         f"--temp-dir={temp}"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    url = f"http://127.0.0.1:{dash}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=90, what="the Ray head's job server")
        yield url, env
    finally:
        stop_process_group(proc, grace=20)


@pytest.mark.timeout(300)
def test_ray_job_submit_runs_the_restore_entrypoint(ray_head, tmp_path, tiny_prior):
    url, env = ray_head
    (tmp_path / "in").mkdir()
    for i, img in enumerate(gray_images(6, seed=7)):
        (tmp_path / "in" / f"img{i}.png").write_bytes(png(img))
    env = {**env, "RAY_ADDRESS": url, "RESTORA_PYTHON": sys.executable,
           "PREFECT_HOME": str(tmp_path / "prefect")}

    def submit() -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["bash", "infra/ray/submit.sh", "--input", str(tmp_path / "in"), "--output",
             str(tmp_path / "out"), "--task", "box", "--prior", tiny_prior, "--steps", "4",
             "--batch-size", "3"], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=280, check=False)
        text = proc.stdout + proc.stderr
        if proc.returncode != 0 and "submitted successfully" not in text and any(
                sign in text for sign in ("Connection refused", "503", "Failed to connect",
                                          "No available agent")):
            # The job server (or, right after the head starts, its job agent) was not ready and
            # the job never started: resubmit.
            raise TransientServiceError(text[-500:])
        return proc

    proc = call_with_retry(submit, what="ray job submit", deadline_s=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == {"total": 6, "ok": 6, "error": 0}
