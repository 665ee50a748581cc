"""Ray beyond one process: a two-node cluster on loopback, and `ray job submit` to a local head."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .conftest import REPO, child_env, gray_images, local_ray_head, png, submit_job

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
    """A local Ray head with its job server (token mode: the run's token); stopped afterwards."""
    env = child_env(PATH=f"{Path(sys.executable).parent}:{child_env()['PATH']}")
    with local_ray_head(tmp_path, env) as url:
        yield url, env


@pytest.mark.timeout(300)
def test_ray_job_submit_runs_the_restore_entrypoint(ray_head, tmp_path, tiny_prior):
    url, env = ray_head
    (tmp_path / "in").mkdir()
    for i, img in enumerate(gray_images(6, seed=7)):
        (tmp_path / "in" / f"img{i}.png").write_bytes(png(img))
    env = {**env, "RAY_ADDRESS": url, "RESTORA_PYTHON": sys.executable,
           "PREFECT_HOME": str(tmp_path / "prefect")}

    proc = submit_job(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                       "--task", "box", "--prior", tiny_prior, "--steps", "4", "--batch-size",
                       "3"], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "succeeded" in proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"] == {"total": 6, "ok": 6, "error": 0}


@pytest.mark.timeout(400)
def test_ray_job_submit_trains_a_prior_on_two_ray_train_workers(ray_head, tmp_path):
    from restora_core.priors import load_prior

    url, env = ray_head
    (tmp_path / "in").mkdir()
    for i, img in enumerate(gray_images(8, seed=8)):
        (tmp_path / "in" / f"img{i}.png").write_bytes(png(img))
    env = {**env, "RAY_ADDRESS": url, "RESTORA_PYTHON": sys.executable,
           "PREFECT_HOME": str(tmp_path / "prefect")}
    out = tmp_path / "out" / "p.safetensors"
    model = json.dumps({"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                        "attn_resolutions": []})
    proc = submit_job(["train", "--data", str(tmp_path / "in"), "--resolution", "16",
                       "--channels", "1", "--max-steps", "2", "--batch-size", "4",
                       "--output", str(out), "--set", f"model={model}",
                       "--set", "sample_count=2", "--set", "sample_steps=2",
                       "--workers", "2", "--cpus-per-worker", "0.5"], env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    card = load_prior(str(out)).card
    assert card["training"]["workers"] == 2 and card["training"]["steps"] == 2
