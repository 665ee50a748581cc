"""`restora train --workers N` on real Ray Train workers: the same weights as one process, a killed
worker restarts the group from the last checkpoint and still ends on those weights, and a rerun
resumes unless the model, data or global batch changed."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import REPO, child_env, png, restora_cli, stop_process_group, wait_for

TINY_MODEL = json.dumps({"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                         "attn_resolutions": []})


def image_folder(path: Path, n: int = 24) -> Path:
    """Gray PNGs of assorted sizes (16..30 px) and one broken file."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(n):
        h, w = 16 + int(rng.integers(0, 15)), 16 + int(rng.integers(0, 15))
        base = rng.integers(0, 255, (4, 4)).astype(np.float32)
        img = np.kron(base, np.ones((8, 8), np.float32))[:h, :w]
        (path / f"img{i:02d}.png").write_bytes(png(img.astype(np.uint8)))
    (path / "broken.png").write_bytes(b"not a png")
    return path


def train_args(data: Path, out: Path, steps: int, batch: int, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--resolution", "16", "--channels", "1",
            "--max-steps", str(steps), "--batch-size", str(batch), "--output", str(out),
            "--set", f"model={TINY_MODEL}", "--set", "log_every=1", "--set", "sample_count=4",
            "--set", "sample_steps=2", "--hflip", *extra]


def one_process_weights(argv: list[str], plan_dir: Path) -> dict[str, torch.Tensor]:
    """The weights the plain loop (no Ray) ends on for the same command line."""
    from flows.train_prior import config_from_argv
    from restora_core.training import train
    from tasks.training_data import open_training_source, plan_training_data

    cfg, _, _ = config_from_argv(argv[1:])
    cfg = dataclasses.replace(cfg, checkpoint_dir=None, output=None, sample_count=0)
    data = plan_training_data(cfg, str(plan_dir))
    source, info = open_training_source(cfg, data)
    return train(cfg, source=source, data_info=info).model.state_dict()


def ray_checkpoint(run_folder: Path) -> dict:
    """The newest checkpoint state Ray Train persisted in the run folder."""
    newest = max(glob.glob(str(run_folder / "checkpoint_*" / "state.pt")))
    return torch.load(newest, map_location="cpu", weights_only=True)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.timeout(600)
def test_two_workers_train_the_weights_of_one_process_and_the_prior_restores(
        tmp_path, prefect_server):
    from restora_core.priors import load_prior

    data = image_folder(tmp_path / "imgs")
    out = tmp_path / "out" / "p.safetensors"
    argv = train_args(data, out, 3, 8, "--workers", "2", "--cpus-per-worker", "0.5")
    env = child_env()
    done = restora_cli(*argv, "--prefect-api-url", prefect_server, env=env, timeout=400)
    assert "trained 3 steps" in done.stdout

    state = ray_checkpoint(tmp_path / "out" / "p.ckpt")
    assert state["step"] == 3 and state["world_size"] == 2
    reference = one_process_weights(argv, tmp_path / "plan")
    assert max_difference(state["model"], reference) < 1e-5

    prior = load_prior(str(out))
    training, data_card = prior.card["training"], prior.card["data"]
    assert training["workers"] == 2 and training["batch_size"] == 8
    assert training["per_worker_batch"] == 4 and training["backend"] == "gloo"
    assert data_card["source"] == str(data) and data_card["count"] == 24
    assert data_card["skipped"] == 1 and "broken.png" in data_card["skipped_examples"][0]
    assert len(data_card["fingerprint"]) == 64 and data_card["shards"][0]["bytes"] > 0
    assert prior.card["command"].startswith("restora train --data")

    restora_cli("restore", "--input", str(data), "--output", str(tmp_path / "restored"),
                "--task", "box", "--prior", str(out), "--steps", "4",
                "--prefect-api-url", prefect_server, env=env, timeout=400)
    summary = json.loads((tmp_path / "restored" / "summary.json").read_text())
    assert summary["images"]["ok"] == 24


def registered_checkpoints(run_folder: Path) -> list[str]:
    """Checkpoints Ray Train has committed to the run (its snapshot file lists them)."""
    try:
        snapshot = json.loads((run_folder / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [c["checkpoint_dir_name"] for c in snapshot.get("checkpoint_results", [])]


def _train_workers(proc_pid: int) -> list:
    import psutil

    found = []
    for child in psutil.Process(proc_pid).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(900)
def test_a_killed_worker_restarts_the_group_from_its_checkpoint_and_ends_on_the_same_weights(
        tmp_path):
    data = image_folder(tmp_path / "imgs")
    steps = 20

    def argv(name: str) -> list[str]:
        return train_args(data, tmp_path / name / "p.safetensors", steps, 32, "--workers", "2",
                          "--cpus-per-worker", "0.5", "--max-failures", "2",
                          "--set", "checkpoint_every=2")

    run_folder = tmp_path / "killed" / "p.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *argv("killed")], cwd=REPO,
                            env=child_env(), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: registered_checkpoints(run_folder) or proc.poll() is not None, 300,
                 "the run's first checkpoint", interval=0.1)
        victims = _train_workers(proc.pid)
        assert proc.poll() is None and victims, "the run ended before a worker could be killed"
        os.kill(victims[-1].pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=480)
    finally:
        stop_process_group(proc)
    assert proc.returncode == 0, output[-4000:]
    assert f"trained {steps} steps" in output
    assert "resumed from:" in output, "the group did not restart from a checkpoint"
    killed = ray_checkpoint(run_folder)
    assert killed["step"] == steps

    restora_cli(*argv("whole"), timeout=480)
    whole = ray_checkpoint(tmp_path / "whole" / "p.ckpt")
    # the same two workers replay the same keyed batches: equal up to kernel nondeterminism
    assert max_difference(killed["model"], whole["model"]) < 1e-6
    assert max_difference(killed["ema"]["module"], whole["ema"]["module"]) < 1e-6


@pytest.mark.timeout(600)
def test_a_rerun_resumes_and_a_changed_batch_is_refused_until_restart(tmp_path, prefect_server):
    from restora_core.priors import load_prior

    data = image_folder(tmp_path / "imgs", n=8)
    out = tmp_path / "p.safetensors"
    env = child_env()
    url = ("--prefect-api-url", prefect_server)
    restora_cli(*train_args(data, out, 2, 8), *url, env=env)
    again = restora_cli(*train_args(data, out, 4, 8), *url, env=env)
    assert "resumed from:" in again.stdout and "trained 4 steps" in again.stdout
    assert load_prior(str(out)).card["training"]["steps"] == 4

    refused = restora_cli(*train_args(data, out, 4, 16), *url, env=env, check=False)
    assert refused.returncode == 2
    assert "batch_size: checkpoint 8 vs now 16" in refused.stderr and "--restart" in refused.stderr

    (data / "extra.png").write_bytes((data / "img00.png").read_bytes())
    changed = restora_cli(*train_args(data, out, 4, 8), *url, env=env, check=False)
    assert changed.returncode == 2 and "data fingerprint" in changed.stderr

    fresh = restora_cli(*train_args(data, out, 2, 16), "--restart", *url, env=env)
    assert "resumed from:" not in fresh.stdout
    assert load_prior(str(out)).card["training"]["batch_size"] == 16


@pytest.mark.timeout(600)
def test_two_workers_stream_parquet_from_s3_and_checkpoint_there(tmp_path, s3, prefect_server):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from restora_core.priors import load_prior

    fs, options, bucket = s3
    rng = np.random.default_rng(3)
    for shard in range(2):
        rows = [png(rng.integers(0, 255, (20, 20), dtype=np.uint8)) for _ in range(6)]
        local = tmp_path / f"part-{shard}.parquet"
        pq.write_table(pa.table({"image": pa.array(rows, pa.binary())}), local)
        fs.put(str(local), f"{bucket}/train/part-{shard}.parquet")
    out = f"s3://{bucket}/priors/p.safetensors"
    done = restora_cli(
        "train", "--data", f"s3://{bucket}/train", "--resolution", "16", "--channels", "1",
        "--max-steps", "3", "--batch-size", "8", "--output", out, "--stream",
        "--set", f"model={TINY_MODEL}", "--set", "sample_count=2", "--set", "sample_steps=2",
        "--set", f"storage_options={json.dumps(options)}", "--workers", "2",
        "--cpus-per-worker", "0.5", "--prefect-api-url", prefect_server, timeout=400)
    assert "trained 3 steps" in done.stdout
    fs.invalidate_cache()
    run = fs.ls(f"{bucket}/priors/p.ckpt")
    saved = [p for p in run if p.rsplit("/", 1)[-1].startswith("checkpoint_20")]
    assert saved and fs.exists(f"{saved[-1]}/state.pt")
    local_prior = tmp_path / "p.safetensors"
    fs.get(f"{bucket}/priors/p.safetensors", str(local_prior))
    card = load_prior(str(local_prior)).card
    assert card["data"]["kind"] == "StreamingImages" and card["data"]["stream"] is True
    assert card["training"]["workers"] == 2 and card["config"]["storage_options"] == {}
    assert [s["count"] for s in card["data"]["shards"]] == [6, 6]
