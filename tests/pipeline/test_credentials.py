"""Credentials never ride in a job spec or a recorded command line; Ray keeps its token."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tasks.spec import JobSpecError, parse_spec

BASE = {"input_uri": "/in", "output_uri": "/out", "task": "box"}
REPO = Path(__file__).resolve().parents[2]


def sentinel() -> str:
    """A unique string no code path could produce by chance."""
    return f"sentinel-{uuid.uuid4().hex}"


def test_credentials_in_storage_options_are_refused_by_name_without_their_value():
    secret = sentinel()
    options = {"key": "AKIA" + secret, "secret": secret, "endpoint_url": "http://127.0.0.1:9000",
               "client_kwargs": {"aws_session_token": secret}}
    with pytest.raises(JobSpecError) as err:
        parse_spec({**BASE, "storage_options": options})
    message = str(err.value)
    assert "key, secret, client_kwargs.aws_session_token" in message
    assert "AWS_SECRET_ACCESS_KEY" in message and "docs/security.md" in message
    assert secret not in message and secret not in repr(err.value.__cause__)


def test_storage_options_that_carry_no_secret_are_kept():
    options = {"endpoint_url": "http://127.0.0.1:9000", "anon": True, "profile": "restora",
               "token": "anon", "client_kwargs": {"region_name": "eu-west-1"}}
    assert parse_spec({**BASE, "storage_options": options}).storage_options == options


def test_a_secret_given_as_flag_or_in_a_spec_file_stops_restore_before_any_run(tmp_path, capsys):
    from flows.cli import main

    secret = sentinel()
    flags = ["restore", "--input", "/in", "--output", "/out", "--task", "box"]
    assert main([*flags, "--storage-option", f"secret={secret}"]) == 2
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({**BASE, "storage_options": {"token": secret}}))
    assert main(["restore", "--spec", str(spec)]) == 2
    assert main(["inspect", str(tmp_path), "--storage-option", f"password={secret}"]) == 2
    err = capsys.readouterr().err
    assert err.count("AWS_ACCESS_KEY_ID") == 3 and secret not in err


def test_training_refuses_credentials_in_its_storage_options(tmp_path, capsys):
    from flows.train_prior import main

    secret = sentinel()
    argv = ["--data", str(tmp_path / "set.npz"), "--output", str(tmp_path / "p.safetensors"),
            "--set", "storage_options=" + json.dumps({"secret": secret})]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "storage_options holds credentials (secret)" in err and secret not in err


def test_submit_script_refuses_a_credential_flag_before_the_job_is_recorded():
    secret = sentinel()
    proc = subprocess.run(
        ["bash", "infra/ray/submit.sh", "--input", "/in", "--storage-option", f"key={secret}"],
        cwd=REPO, env={**os.environ, "RAY_ADDRESS": "http://127.0.0.1:9"}, capture_output=True,
        text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "AWS_ACCESS_KEY_ID" in proc.stderr and secret not in proc.stdout + proc.stderr
    assert "ray job submit" not in proc.stdout + proc.stderr


def test_submit_script_refuses_a_training_secret_before_the_job_is_recorded():
    secret = sentinel()
    proc = subprocess.run(
        ["bash", "infra/ray/submit.sh", "train", "--data", "s3://b/imgs", "--set",
         "storage_options=" + json.dumps({"client_kwargs": {"aws_secret_access_key": secret}})],
        cwd=REPO, env={**os.environ, "RAY_ADDRESS": "http://127.0.0.1:9"}, capture_output=True,
        text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "client_kwargs.aws_secret_access_key" in proc.stderr
    assert secret not in proc.stdout + proc.stderr


def test_submit_script_forwards_no_secret_into_the_runtime_env():
    text = (REPO / "infra" / "ray" / "submit.sh").read_text()
    forwarded = next(line for line in text.splitlines() if line.startswith("for var in"))
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
                 "RAY_AUTH_TOKEN", "PREFECT_API_AUTH_STRING"):
        assert name not in forwarded


def test_a_local_ray_keeps_its_token_and_a_given_token_turns_token_mode_on(monkeypatch):
    from flows.cli import prepare_environment

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    prepare_environment()
    assert "RAY_AUTH_MODE" not in os.environ  # Ray's own default: a token for a local cluster
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/run/secrets/ray-token")
    prepare_environment(ray_address="10.0.0.5:6379")
    assert os.environ["RAY_AUTH_MODE"] == "token"
