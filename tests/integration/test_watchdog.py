"""The watchdog the CLI forks: a killed driver's services die with it, nobody else's do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from .conftest import REPO, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

# A stand-in driver: arms the watchdog, then starts a "service" in its own session (as Ray
# does with its workers, so a process group would miss it) and a grandchild under it.
_DRIVER = textwrap.dedent("""
    import subprocess, sys, time
    from flows import watchdog
    watchdog.start()
    service = subprocess.Popen([sys.executable, "-c",
        "import subprocess, sys, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"],
        start_new_session=True)
    print(service.pid, flush=True)
    time.sleep(300)
""")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_drivers_services_die_with_it_and_others_live_on():
    bystander = subprocess.Popen(["sleep", "300"])  # not the driver's: must survive
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER], cwd=REPO, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, text=True)
    try:
        service = psutil.Process(int(driver.stdout.readline()))
        wait_for(lambda: service.children(), timeout=20, what="the service's child")
        started = [service, *service.children(recursive=True)]
        wait_for(lambda: len(psutil.Process(driver.pid).children()) == 2, timeout=20,
                 what="the watchdog and the service")
        import time

        time.sleep(1.5)  # the watchdog refreshes what it knows every 0.5 s
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        wait_for(lambda: not any(_alive(p) for p in started), timeout=15,
                 what="the killed driver's services to die")
        assert bystander.poll() is None
    finally:
        bystander.kill()
        for proc in psutil.Process().children(recursive=True):
            proc.kill()
