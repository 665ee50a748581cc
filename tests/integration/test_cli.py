"""The `restora` command in fresh processes: fail-fast specs, a killed run, inspect."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from .conftest import (
    REPO,
    child_env,
    gray_images,
    png,
    prefect_api,
    restora_cli,
    start_cli,
    stop_process_group,
    wait_for,
)

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(120)
def test_bad_job_specs_fail_fast_with_one_message(tmp_path, tiny_prior, s3_endpoint):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png(gray_images(1)[0]))
    common = ["restore", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    cases = {
        "task": (["--task", "colorize", "--prior", tiny_prior],
                 ("argument --task: invalid choice: 'colorize' (choose from 'inpaint', 'box', "
                 "'random', 'superres', 'denoise', 'outpaint')")),
        "bucket": (["--task", "box", "--prior", tiny_prior, "--endpoint-url", s3_endpoint,
                    "--output", "s3://no-such-bucket/out"],
                   "--output: bucket 'no-such-bucket' of 's3://no-such-bucket/out' does not exist"),
        "prior": (["--task", "box", "--prior", str(tmp_path / "missing.safetensors")],
                  "--prior: cannot load"),
        "spec": (["--task", "box", "--prior", tiny_prior, "--steps", "0"], "--steps: Input should be"),
    }
    for name, (extra, message) in cases.items():
        proc = restora_cli(*common, *extra, check=False, timeout=90)
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        errors = [line for line in proc.stderr.splitlines() if "error:" in line.lower()]
        assert len(errors) == 1 and message in errors[0], (name, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def _alive(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(420)
def test_a_killed_run_leaves_no_services_loses_nothing_committed_and_resumes(tmp_path,
                                                                             tiny_prior):
    import psutil

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, img in enumerate(gray_images(40, seed=5)):
        (src / f"img{i:02d}.png").write_bytes(png(img))
    args = ["restore", "--input", str(src), "--output", str(out), "--task", "box",
            "--prior", tiny_prior, "--steps", "4", "--batch-size", "2", "--shard-size", "2",
            "--num-actors", "1", "--max-concurrent-shards", "1"]
    env = child_env(PREFECT_HOME=str(tmp_path / "prefect"))
    proc = start_cli(*args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc_pid = proc.pid
    manifests = out / "manifests"
    try:
        wait_for(lambda: manifests.exists() and len(list(manifests.glob("*.parquet"))) >= 3,
                 timeout=240, what="three committed shards")
        # What the run started: Prefect's ephemeral server, Ray's gcs/raylet/agents/workers
        # (workers in process groups of their own), and the watchdog.
        started = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in started)
        assert "uvicorn" in names and "raylet" in names and "watchdog.py" in names
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as `kill -9 <pid>` does
        proc.wait(timeout=10)
        wait_for(lambda: not any(_alive(p) for p in started), timeout=15,
                 what="every process the killed run started to die: "
                      + ", ".join(f"{p.pid} {p.name()}" for p in started if _alive(p)))
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
    logged = proc.stdout + proc.stderr
    assert "took over the output from run " in logged and f"pid {proc_pid}" in logged
    assert f"{20 - len(committed)} shard(s) of the plan have no manifest" in logged
    assert len(list((out / "leases").glob("*.json"))) == 1  # the dead run's lease was pruned
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == {"total": 40, "ok": 40, "error": 0}
    assert summary["shards"]["skipped"] == len(committed)
    assert {p.name: p.stat().st_mtime_ns for p in committed} == stamps
    assert "manifests: " + str(manifests) in proc.stdout

    report = restora_cli("inspect", str(out), timeout=60)
    assert "20 manifest(s), 40 rows: 40 ok, 0 error" in report.stdout
    report = restora_cli("inspect", str(committed[0]), "--json", timeout=60)
    assert json.loads(report.stdout)["images"]["total"] == 2


def _all_actions(parser: argparse.ArgumentParser, prefix: str = "restora"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_actions(sub, f"{prefix} {name}")
        else:
            yield prefix, action


def test_every_flag_explains_itself_and_choices_come_from_their_definitions():
    from flows.cli import build_parser
    from flows.train_prior import train_parser
    from restora_core import METHODS
    from tasks.readers import reader_names
    from tasks.spec import field_choices

    actions = [*_all_actions(build_parser()), *_all_actions(train_parser(), "restora train")]
    silent = [f"{where} {'/'.join(a.option_strings) or a.dest}" for where, a in actions
              if not a.help and a.dest != "command"]
    assert not silent, f"flags without help text: {silent}"
    restore = {a.dest: a for where, a in actions if where == "restora restore"}
    assert restore["method"].choices == list(METHODS)
    assert restore["input_format"].choices == ["auto", *reader_names()]
    for dest in ("task", "size_policy", "precision", "inputs"):
        assert restore[dest].choices == field_choices(dest) and restore[dest].choices, dest


@pytest.mark.timeout(120)
def test_version_examples_and_errors_that_name_the_flag_and_the_allowed_values():
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert restora_cli("--version", timeout=60).stdout.strip() == f"restora {version}"
    top = restora_cli("--help", timeout=60).stdout
    examples = [line.strip() for line in top.splitlines() if line.startswith("  restora ")]
    assert [e.split()[1] for e in examples] == ["restore", "train"]
    bad = restora_cli("restore", "--method", "nope", check=False, timeout=60)
    assert bad.returncode == 2
    assert "argument --method: invalid choice: 'nope'" in bad.stderr and "'pnp_flow'" in bad.stderr
    bad = restora_cli("restore", "--input", str(REPO), "--output", "/tmp/x", "--task", "box",
                      "--steps", "0", check=False, timeout=60)
    assert bad.returncode == 2 and "--steps: Input should be greater than or equal to 1" in bad.stderr


@pytest.mark.timeout(120)
def test_tasks_lists_every_task_with_its_parameters_geometry_side_input_and_methods():
    from restora_core.degradations import TASKS

    listed = json.loads(restora_cli("tasks", "--json", timeout=60).stdout)
    assert [t["task"] for t in listed] == list(TASKS)
    by_name = {t["task"]: t for t in listed}
    assert by_name["superres"]["parameters"] == [{
        "name": "factor", "type": "int", "default": 2, "range": ">= 1",
        "help": "scale factor s: the input is 1/s of the prior's size per side"}]
    assert by_name["superres"]["input_size"] == "the prior's size / factor"
    assert by_name["inpaint"]["side_input"] == "mask" and by_name["box"]["side_input"] is None
    assert by_name["denoise"]["methods"] == ["restora_flow_denoise", "ot_ode", "pnp_flow", "flower"]
    assert "restora_flow" in by_name["outpaint"]["methods"]
    text = restora_cli("tasks", timeout=60).stdout
    assert "outpaint: extend the canvas by pad pixels per edge" in text
    assert "    sigma (float, default 0.2, > 0.0, < 1.0): noise std on the [-1, 1] scale" in text
    assert "  side input: mask (--masks)" in text
    assert "pad (int[4] | None, default None, >= 0)" in text
    help_text = restora_cli("restore", "--help", timeout=60).stdout
    assert "superres: factor" in " ".join(help_text.split())


@pytest.mark.timeout(180)
def test_a_recipe_whose_dataset_is_not_built_builds_it_and_says_so(tmp_path, monkeypatch, capsys):
    from flows.train_prior import build_recipe_set, config_from_argv, missing_data_message

    monkeypatch.chdir(tmp_path)
    cfg, recipe, _ = config_from_argv(["--recipe", "digits32", "--output", "p.safetensors"])
    message = missing_data_message(cfg, recipe)
    assert "--recipe digits32" in message and "scripts/build_datasets.py --only digits32" in message
    assert build_recipe_set(cfg, recipe) is None
    assert "not built yet; building it now" in capsys.readouterr().err
    from restora_core.datasets import load_npz

    built = load_npz(cfg.data, cfg.resolution)
    assert len(built) > 4000 and built.images.shape[1:] == (32, 32, 1)
    assert missing_data_message(cfg, recipe) is None
    assert cfg.checkpoint_dir == "p.ckpt"  # beside the output, never the recipe's own folder
    with pytest.raises(SystemExit):  # no --output: the shipped prior is never overwritten
        config_from_argv(["--recipe", "digits32"])


# A small UNet so that 20 steps on a loaded 2-core box take seconds, not minutes.
TINY_MODEL = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
              "dropout": 0.0}


@pytest.mark.timeout(900)
def test_train_a_prior_then_restore_with_it(tmp_path, prefect_server):
    from restora_core import load_prior

    digits = np.load(REPO / "restora_core" / "data" / "digits32_eval.npz")["images"]
    data = tmp_path / "digits.npz"
    np.savez(data, images=digits)
    out = tmp_path / "out"
    env = child_env(PREFECT_HOME=str(tmp_path / "home"))
    trained = restora_cli(
        "train", "--recipe", "digits32", "--data", str(data), "--max-steps", "20",
        "--output", str(out / "p.safetensors"), "--batch-size", "8", "--max-seconds", "none",
        "--set", f"model={json.dumps(TINY_MODEL)}", "--set", "sample_count=4",
        "--set", "sample_steps=2", "--set", "log_every=5", "--set", "checkpoint_every=10",
        "--prefect-api-url", prefect_server, env=env, timeout=600)
    run_id = re.search(r"flow run: +([0-9a-f-]{36})", trained.stdout).group(1)
    run = prefect_api(prefect_server, f"/flow_runs/{run_id}")
    assert run["state_type"] == "COMPLETED"
    assert prefect_api(prefect_server, f"/flows/{run['flow_id']}")["name"] == "train-prior"
    artifacts = prefect_api(prefect_server, "/artifacts/filter",
                            {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    assert {"train-summary", "train-loss", "train-progress"} <= {a["key"] for a in artifacts}
    assert sorted(p.name for p in (out / "p.ckpt").glob("step_*.pt")) == [
        "step_000000010.pt", "step_000000020.pt"]
    assert (out / "p_samples.png").stat().st_size > 0
    prior = load_prior(str(out / "p.safetensors"))
    assert prior.card["training"]["steps"] == 20 and prior.card["name"] == "digits32"
    assert prior.card["command"].startswith("restora train --recipe digits32")
    assert f"sha256 {prior.model_id})" in trained.stdout

    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        (src / f"d{i}.png").write_bytes(png(digits[i, :, :, 0]))
    restora_cli("restore", "--input", str(src), "--output", str(tmp_path / "restored"),
                "--task", "box", "--prior", str(out / "p.safetensors"), "--steps", "4",
                "--prefect-api-url", prefect_server, env=env, timeout=400)
    summary = json.loads((tmp_path / "restored" / "summary.json").read_text())
    assert summary["images"] == {"total": 6, "ok": 6, "error": 0}
    table = pq.read_table(tmp_path / "restored" / "manifests")
    assert set(table["model_id"].to_pylist()) == {prior.model_id}


@pytest.mark.timeout(420)
def test_exit_codes_tell_a_refused_job_from_one_where_every_row_failed(tmp_path, tiny_prior):
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(gray_images(3)):
        (src / f"img{i}.png").write_bytes(png(img))
    env = child_env(PREFECT_HOME=str(tmp_path / "prefect"))
    common = ["--prior", tiny_prior, "--steps", "2", "--num-actors", "1"]

    inside = restora_cli("restore", "--input", str(src), "--output", str(src / "restored"),
                         "--task", "box", *common, env=env, check=False, timeout=90)
    assert inside.returncode == 2
    assert f"--output: '{src}/restored' lies inside the input '{src}'" in inside.stderr
    assert not (src / "restored").exists()

    # The tiny prior is 16x16, so superres by 2 takes 8x8 inputs: every 16x16 image is off,
    # which the plan finds from the first images' headers, before any actor starts.
    superres = restora_cli("restore", "--input", str(src), "--output", str(tmp_path / "sr"),
                           "--task", "superres", "--size-policy", "error", *common, env=env,
                           check=False, timeout=300)
    assert superres.returncode == 2, superres.stderr[-3000:]
    assert ("the input must be 8x8 for tiny16.safetensors at factor 2 (got 16x16"
            in superres.stderr)
    assert not (tmp_path / "sr" / "manifests").exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"b{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    failed = restora_cli("restore", "--input", str(broken), "--output", str(tmp_path / "b-out"),
                         "--task", "box", *common, env=env, check=False, timeout=300)
    assert failed.returncode == 3, failed.stderr[-3000:]
    assert "none of the 3 images was restored" in failed.stderr
    assert "restored 0/3 images (3 errors)" in failed.stdout


@pytest.mark.timeout(420)
def test_images_of_any_size_come_back_at_their_own_size_and_cost_what_their_holes_cost(
        tmp_path):
    from PIL import Image

    from restora_core.samplers import get_method

    rng = np.random.default_rng(0)
    src, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    src.mkdir()
    masks.mkdir()
    shapes = {"prior": (32, 32), "large": (50, 70), "short": (20, 40), "deep": (41, 33)}
    images = {}
    for name, (h, w) in shapes.items():
        dtype = np.uint16 if name == "deep" else np.uint8  # a 16-bit input stays 16-bit
        images[name] = rng.integers(0, np.iinfo(dtype).max + 1, (h, w), dtype=dtype)
        mask = np.full((h, w), 255, np.uint8)
        mask[h // 2:h // 2 + 4, w // 3:w // 3 + 4] = 0  # one small hole
        (src / f"{name}.png").write_bytes(png(images[name]))
        (masks / f"{name}.png").write_bytes(png(mask))

    restora_cli("restore", "--input", str(src), "--masks", str(masks), "--output", str(out),
                "--task", "inpaint", "--prior", "digits32", "--steps", "2", "--num-actors", "1",
                env=child_env(PREFECT_HOME=str(tmp_path / "prefect")), timeout=400)

    rows = {r["id"]: r for r in pq.read_table(out / "manifests").to_pylist()}
    one_tile = get_method("restora_flow").cost("inpaint", {"steps": 2})
    for name, pixels in images.items():
        row = rows[name]
        assert row["status"] == "ok", row["error"]
        assert (row["nfe"], row["windows"], row["tiles"]) == (one_tile, 1, 1)
        with Image.open(out / "images" / f"{name}.png") as img:
            restored = np.asarray(img)
        assert restored.shape == pixels.shape and restored.dtype == pixels.dtype
        if name != "prior":  # tiled: the known pixels are the input's own values
            known = np.asarray(Image.open(masks / f"{name}.png")) > 0
            np.testing.assert_array_equal(restored[known], pixels[known])
