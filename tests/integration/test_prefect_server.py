"""Against a real `prefect server start` on 127.0.0.1: a cron-served deployment run once, and the
UI as users see it (headless Chromium renders the flow-run page)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .conftest import (
    REPO,
    child_env,
    gray_images,
    png,
    prefect_api,
    restora_cli,
    stop_process_group,
    wait_for,
)

pytestmark = [pytest.mark.integration]
ARTIFACTS = Path(os.environ.get("RESTORA_TEST_ARTIFACTS", REPO / "test-artifacts"))


def _small_input(root: Path, n: int = 6) -> Path:
    src = root / "in"
    src.mkdir()
    for i, img in enumerate(gray_images(n, seed=8)):
        (src / f"img{i}.png").write_bytes(png(img))
    return src


def _wait_flow_run(api: str, run_id: str, timeout: float) -> dict:
    def final():
        run = prefect_api(api, f"/flow_runs/{run_id}")
        return run if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return wait_for(final, timeout=timeout, what=f"flow run {run_id} to finish", interval=2)


@pytest.mark.timeout(300)
def test_served_deployment_has_a_cron_schedule_and_runs(prefect_server, tmp_path, tiny_prior):
    src = _small_input(tmp_path)
    env = child_env(PREFECT_HOME=str(tmp_path / "home"), PREFECT_RUNNER_POLL_FREQUENCY="2")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--prefect-api-url", prefect_server,
         "--cron", "0 3 * * *", "--name", "nightly-test", "--input", str(src), "--output",
         str(tmp_path / "out"), "--task", "box", "--prior", tiny_prior, "--steps", "4"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deployment = wait_for(
            lambda: next(iter(prefect_api(prefect_server, "/deployments/filter", {})), None),
            timeout=90, what="the served deployment")
        assert deployment["name"] == "nightly-test"
        crons = [s["schedule"].get("cron") for s in deployment["schedules"]]
        assert crons == ["0 3 * * *"]
        run = prefect_api(prefect_server, f"/deployments/{deployment['id']}/create_flow_run", {})
        finished = _wait_flow_run(prefect_server, run["id"], timeout=200)
        assert finished["state_type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-4000:]
    finally:
        stop_process_group(serve)
        log.close()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images"]["ok"] == 6 and summary["flow_run_id"] == run["id"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _render_until(url: str, needles: list[str], screenshot: Path) -> str:
    """Render ``url`` with a growing time budget until every needle shows (a loaded CI box can
    need longer than one budget for the UI's API calls); returns the last text."""
    text = ""
    for budget_ms in (15_000, 30_000, 60_000, 120_000):
        text = _render(url, screenshot=screenshot, budget_ms=budget_ms)
        if all(n in text for n in needles):
            break
    return text


def _render(url: str, screenshot: Path | None = None, budget_ms: int = 15_000) -> str:
    """Visible text of ``url`` after its scripts ran, from headless Chromium."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    args = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}", "--window-size=1400,900"]
    try:
        if screenshot is not None:
            subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True,
                           timeout=90, check=False)
        dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True,
                             timeout=90, check=False).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    dom = re.sub(r"(?s)<(script|style)[^>]*>.*?</\1>", " ", dom)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


@pytest.mark.timeout(600)
def test_prefect_ui_shows_the_completed_run_its_shards_and_summary(prefect_server, tmp_path,
                                                                     tiny_prior):
    if _chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run installs it)")
    src = _small_input(tmp_path)
    restora_cli("restore", "--prefect-api-url", prefect_server, "--input", str(src),
                "--output", str(tmp_path / "out"), "--task", "box", "--inputs", "clean",
                "--prior", tiny_prior, "--steps", "4", "--shard-size", "3",
                env=child_env(PREFECT_HOME=str(tmp_path / "home")), timeout=240)
    run_id = json.loads((tmp_path / "out" / "summary.json").read_text())["flow_run_id"]
    assert prefect_api(prefect_server, f"/flow_runs/{run_id}")["state_type"] == "COMPLETED"

    ui = prefect_server[: -len("/api")]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = f"{ui}/runs/flow-run/{run_id}"
    text = _render_until(page, ["2 Task runs", "restore shard-00001", "summary artifact"],
                         screenshot=ARTIFACTS / "prefect-flow-run.png")
    # The run page opens on its Logs tab (the UI resets ?tab= while the run loads); the summary
    # artifact's own page shows its table.
    artifact_text = _render_until(f"{ui}/artifacts/key/restora-summary", ["restore box -> "],
                                  screenshot=ARTIFACTS / "prefect-summary-artifact.png")
    (ARTIFACTS / "prefect-ui-text.txt").write_text(text + "\n\n" + artifact_text)

    assert (ARTIFACTS / "prefect-flow-run.png").stat().st_size > 10_000
    assert "Completed" in text and "restore-dataset" in text and "2 Task runs" in text
    assert "restore shard-00000" in text and "restore shard-00001" in text
    assert "summary artifact restora-summary: 6 ok, 0 error of 6 images" in text
    assert "Restora run summary" in artifact_text and "restore box -> " in artifact_text
