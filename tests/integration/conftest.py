"""Real parts for integration tests: moto's S3 server, a local Ray, Prefect's test harness.

The environment Ray and Prefect read at import is set here, before anything imports them.
Every server a fixture starts, that fixture stops.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_RUN_DIR = Path(tempfile.mkdtemp(prefix="rit-"))
# Ray keeps its default token authentication (tests/conftest.py gives this run its own token).
for _key, _value in {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": str(_RUN_DIR / "ray"),
    "PREFECT_HOME": str(_RUN_DIR / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ.setdefault(_key, _value)
Path(os.environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)

import logging

import numpy as np
import pytest

from .retry import call_with_retry

REPO = Path(__file__).resolve().parents[2]
PRIOR_CONFIG = {"input_channels": 1, "input_height": 16, "ch": 32, "ch_mult": (1, 2),
                "num_res_blocks": 1, "attn_resolutions": ()}
FAST = {"steps": 4, "corrections": 1, "batch_size": 4, "num_actors": 2}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: this one's plus the repo on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PREFECT_API_URL", None)
    env.update(extra)
    return env


def start_cli(*args: str, env: dict[str, str], **popen: Any) -> subprocess.Popen:
    """Start `python -m flows.cli ...` in its own process group (stop it with stop_process_group)."""
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env,
                            start_new_session=True, **popen)


def restora_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240,
                check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m flows.cli ...` in a fresh process (its own Ray, Prefect ephemeral)."""
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO,
                          env=env or child_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"restora {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def stop_process_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM a child's process group, then SIGKILL what is left."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def prefect_api(url: str, path: str, body: dict | None = None, deadline_s: float = 60.0) -> object:
    """GET (or POST ``body`` to) the Prefect REST API, retrying its transient answers."""
    data = None if body is None else json.dumps(body).encode()

    def call() -> object:
        req = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    return call_with_retry(call, what=f"Prefect API {path}", deadline_s=deadline_s)


def ray_token(env: dict[str, str]) -> str:
    """The Ray token a process with ``env`` sends: RAY_AUTH_TOKEN, else RAY_AUTH_TOKEN_PATH's."""
    return env.get("RAY_AUTH_TOKEN") or Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()


def dashboard_get(url: str, path: str, token: str | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET on a Ray dashboard, with ``token`` as the bearer when given."""
    import urllib.error

    req = urllib.request.Request(url + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def local_ray_head(tmp_path: Path, env: dict[str, str]) -> Iterator[str]:
    """`ray start --head --block` on 127.0.0.1 with ``env``; yields its job server's URL.

    Its token is the one ``env`` gives (a head started with a token source runs in token mode).
    """
    port, dash = free_port(), free_port()
    temp = Path("/tmp") / f"rth{tmp_path.name[-6:]}"
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
    token = ray_token(env)

    def healthy() -> bool:
        try:
            return dashboard_get(url, "/api/version", token)[0] == 200
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=90, what="the Ray head's job server")
        yield url
    finally:
        stop_process_group(proc, grace=20)


def submit_job(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`infra/ray/submit.sh ARGS` with ``env``, resubmitted while the job server is starting."""
    from .retry import TransientServiceError

    def once() -> subprocess.CompletedProcess:
        proc = subprocess.run(["bash", "infra/ray/submit.sh", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=280, check=False)
        text = proc.stdout + proc.stderr
        if proc.returncode != 0 and "submitted successfully" not in text and any(
                sign in text for sign in ("Connection refused", "503", "Failed to connect",
                                          "No available agent")):
            # The job server (or, right after the head starts, its job agent) was not ready and
            # the job never started: resubmit.
            raise TransientServiceError(text[-500:])
        return proc

    return call_with_retry(once, what="ray job submit", deadline_s=180)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start --host 127.0.0.1` with its own database; stopped with its group."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = child_env(PREFECT_HOME=str(home), PREFECT_UI_API_URL=api, PREFECT_SERVER_UI_API_URL=api)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                             "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        # Connection refused and 503 while it starts are retried up to the deadline.
        assert prefect_api(api, "/health", deadline_s=120) is True
        yield api
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory) -> str:
    """A random 16x16 gray UNet prior on disk (restoration quality is not under test here)."""
    import torch

    from restora_core import save_prior
    from restora_core.models import build_model

    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("prior") / "tiny16.safetensors")
    save_prior(build_model(PRIOR_CONFIG), {"architecture": PRIOR_CONFIG, "name": "tiny16"}, path)
    return path


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3-compatible server on 127.0.0.1 (a real HTTP server, in-process)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def s3(s3_endpoint, request):
    """(s3fs filesystem, storage_options, bucket) with a fresh bucket for this test."""
    import s3fs

    # Credentials come from the environment (AWS_ACCESS_KEY_ID above), as in production.
    options = {"endpoint_url": s3_endpoint}
    fs = s3fs.S3FileSystem(**options)
    bucket = "b-" + request.node.name.lower().replace("_", "-")[:50].strip("-")
    call_with_retry(lambda: fs.mkdir(bucket), what=f"create bucket {bucket} on moto")
    fs.invalidate_cache()
    return fs, options, bucket


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the in-process tests (fractional-CPU actors avoid the 2-CPU deadlock)."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: a temporary API server and database for this session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture()
def pipeline(ray_local, prefect_harness):
    """Ray and Prefect both up, for calling the flow in-process."""
    from flows.restore_dataset import restore_dataset

    return restore_dataset


def gray_images(n: int, size: int = 16, seed: int = 0) -> list[np.ndarray]:
    """``n`` smooth random gray uint8 images of ``size`` x ``size``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, 255, (4, 4)).astype(np.float32)
        img = np.kron(base, np.ones((size // 4, size // 4), np.float32))
        out.append(img.astype(np.uint8))
    return out


def image_folder(path: Path, n: int, seed: int = 0) -> Path:
    """A folder ``path`` of ``n`` gray PNGs ``img0.png``... (made here); returns it."""
    path.mkdir(parents=True)
    for i, img in enumerate(gray_images(n, seed=seed)):
        (path / f"img{i}.png").write_bytes(png(img))
    return path


def png(array: np.ndarray) -> bytes:
    """PNG bytes of an array."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
