"""Secrets stay secret (nothing recorded holds them) and only who holds the key gets in."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from .conftest import (
    REPO,
    child_env,
    dashboard_get,
    free_port,
    gray_images,
    image_folder,
    local_ray_head,
    png,
    restora_cli,
    stop_process_group,
    submit_job,
    wait_for,
)

pytestmark = [pytest.mark.integration]


def sentinels() -> dict[str, str]:
    """Unique AWS credentials (moto takes any) that no code path could write by chance."""
    tag = uuid.uuid4().hex
    return {"AWS_ACCESS_KEY_ID": f"AKIASENTINEL{tag[:8].upper()}",
            "AWS_SECRET_ACCESS_KEY": f"secret-sentinel-{tag}"}


def holders(needles: dict[str, str], places: dict[str, bytes]) -> list[str]:
    """'PLACE holds NAME' for every needle found in any place's bytes."""
    return [f"{place} holds {name}" for place, data in places.items()
            for name, value in needles.items() if value.encode() in data]


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (databases, logs, results), read as bytes."""
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def s3_objects(fs, prefix: str) -> dict[str, bytes]:
    """Every object under an S3 prefix, read as bytes."""
    return {f"s3://{key}": fs.cat_file(key) for key in fs.find(prefix)}


def upload_images(fs, prefix: str, n: int, seed: int) -> None:
    """``n`` gray PNGs under ``prefix``."""
    for i, img in enumerate(gray_images(n, seed=seed)):
        fs.pipe_file(f"{prefix}/img{i}.png", png(img))


@pytest.mark.timeout(360)
def test_s3_credentials_reach_no_prefect_record_log_or_output(s3, s3_endpoint, tiny_prior,
                                                             tmp_path):
    fs, _, bucket = s3
    upload_images(fs, f"{bucket}/in", 6, seed=11)
    creds = sentinels()
    home = tmp_path / "prefect"
    ray_tmp = Path("/tmp") / f"rts{uuid.uuid4().hex[:6]}"  # short: unix socket path limit
    env = child_env(PREFECT_HOME=str(home), RAY_TMPDIR=str(ray_tmp), **creds)
    flags = ["restore", "--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out",
             "--task", "box", "--prior", tiny_prior, "--steps", "4", "--batch-size", "3",
             "--endpoint-url", s3_endpoint]

    refused = restora_cli(*flags, "--storage-option",
                          f"secret={creds['AWS_SECRET_ACCESS_KEY']}", env=env, check=False)
    assert refused.returncode == 2 and "AWS_SECRET_ACCESS_KEY" in refused.stderr
    ran = restora_cli(*flags, env=env)
    fs.invalidate_cache()
    summary = json.loads(fs.cat_file(f"{bucket}/out/summary.json"))
    assert summary["images"] == {"total": 6, "ok": 6, "error": 0}

    # The search can see what Prefect recorded: the run's parameters are in its database.
    prefect_files = files_under(home)
    places = {"refused run's output": (refused.stdout + refused.stderr).encode(),
              "run's stdout/stderr": (ran.stdout + ran.stderr).encode(),
              **prefect_files, **files_under(ray_tmp), **s3_objects(fs, f"{bucket}/out")}
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert any(name.endswith(".db") for name in prefect_files)
    assert any(f"s3://{bucket}/in".encode() in data for data in prefect_files.values())
    assert holders(creds, places) == []


@pytest.fixture()
def token_head(tmp_path):
    """A local head in token mode with a token of its own: (job server URL, token, head env)."""
    token = secrets.token_hex(32)
    env = child_env(PATH=f"{Path(sys.executable).parent}:{child_env()['PATH']}",
                    RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    with local_ray_head(tmp_path, env) as url:
        yield url, token, env


@pytest.mark.timeout(360)
def test_token_head_refuses_strangers_and_records_no_submitter_secret(token_head, s3, s3_endpoint,
                                                                      tiny_prior, tmp_path):
    url, token, head_env = token_head
    # Without the token the Jobs API answers 401; with a wrong one, 403.
    assert dashboard_get(url, "/api/jobs/")[0] == 401
    assert dashboard_get(url, "/api/jobs/", "not-" + token)[0] == 403
    fs, _, bucket = s3
    upload_images(fs, f"{bucket}/in", 4, seed=12)
    creds = sentinels()
    # The submitter holds secrets of its own; the job must run on the head's credentials
    # (here: the test's AWS_* variables the head was started with) and record none of these.
    env = {k: v for k, v in head_env.items() if k != "RAY_AUTH_MODE"}
    env.update(creds, RAY_ADDRESS=url, RESTORA_PYTHON=sys.executable, RAY_AUTH_TOKEN=token,
               PREFECT_HOME=str(tmp_path / "prefect"))

    proc = submit_job(["--input", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out",
                       "--task", "box", "--prior", tiny_prior, "--steps", "4", "--batch-size",
                       "2", "--endpoint-url", s3_endpoint], env)
    assert proc.returncode == 0 and "succeeded" in proc.stdout + proc.stderr, \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{bucket}/out/summary.json"))["images"]["ok"] == 4

    status, body = dashboard_get(url, "/api/jobs/", token)
    assert status == 200
    jobs = json.loads(body)
    # The record holds the forwarded variables (the search sees them), but no secret.
    assert len(jobs) == 1 and str(tmp_path / "prefect") in json.dumps(jobs[0]["runtime_env"])
    listing = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "list",
                              "--address", url], env={**env, "RAY_AUTH_MODE": "token"},
                             capture_output=True, text=True, timeout=60, check=True)
    logs = dashboard_get(url, f"/api/jobs/{jobs[0]['submission_id']}/logs", token)[1]
    places = {"/api/jobs/": body, "ray job list": listing.stdout.encode(), "job logs": logs,
              "submit output": (proc.stdout + proc.stderr).encode()}
    assert holders({**creds, "RAY_AUTH_TOKEN": token}, places) == []


@pytest.mark.timeout(300)
def test_prefect_server_script_demands_its_auth_string_and_restora_sends_it(tmp_path, tiny_prior):
    home, port = tmp_path / "prefect-home", free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = child_env(PATH=f"{Path(sys.executable).parent}:{child_env()['PATH']}",
                    PREFECT_HOME=str(home), PREFECT_PORT=str(port))
    env.pop("PREFECT_SERVER_API_AUTH_STRING", None)
    server = subprocess.Popen(["bash", "infra/local/start_prefect_server.sh"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)

    def status(auth: str | None) -> int:
        req = urllib.request.Request(f"{api}/flow_runs/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        if auth:
            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    try:
        auth_file = home / "server_auth_string"
        wait_for(lambda: auth_file.exists() and status(None) == 401, timeout=120,
                 what="the Prefect server refusing a request without its auth string")
        assert oct(auth_file.stat().st_mode & 0o777) == "0o600"
        auth = auth_file.read_text().strip()
        assert status("wrong-" + auth) == 401 and status(auth) == 200
        src = image_folder(tmp_path / "in", 2, seed=13)
        client = child_env(PREFECT_API_URL=api, PREFECT_API_AUTH_STRING=auth)
        restora_cli("restore", "--input", str(src), "--output", str(tmp_path / "out"), "--task",
                    "box", "--prior", tiny_prior, "--steps", "2", env=client)
        without = restora_cli("restore", "--input", str(src), "--output", str(tmp_path / "out2"),
                              "--task", "box", "--prior", tiny_prior, "--steps", "2",
                              env=child_env(PREFECT_API_URL=api), check=False, timeout=120)
        assert without.returncode != 0 and not (tmp_path / "out2" / "summary.json").exists()
    finally:
        stop_process_group(server)
