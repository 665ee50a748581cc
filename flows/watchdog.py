"""Whoever starts a service owns its death: a watchdog that outlives a killed driver.

`restora restore` starts services as its descendants: Prefect's ephemeral API server (a uvicorn
subprocess, when no PREFECT_API_URL is set) and a local Ray (gcs_server, raylet, agents,
workers, when no cluster address is given). Ray arms a parent-death signal on gcs_server and
raylet only; its agents and workers (each in its own process group) and Prefect's server
outlive a `kill -9` of the driver by minutes, and a process group would miss the workers.

So the CLI starts this script as a child in its own session (``start``). It remembers every
descendant of the driver, refreshed each ``INTERVAL_S``, and when the driver is gone (the pipe
it holds closes, or this process is re-parented) terminates those still alive, with their own
descendants, SIGKILLing what ignores SIGTERM within ``GRACE_S``. Services the user pointed at
(a Ray cluster, a Prefect server) are never the driver's descendants, so they are never touched.
This file runs as a plain script: it imports only the standard library and psutil.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import subprocess
import sys

INTERVAL_S = 0.5
GRACE_S = 3.0


def start() -> subprocess.Popen:
    """Start the watchdog of this process; it stays armed until this process exits."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            start_new_session=True)
    # Close our end only at exit, after Prefect's own atexit stopped its server (atexit runs
    # last-registered first): leftovers then are orphans. A killed driver closes it at once.
    atexit.register(proc.stdin.close)
    return proc


def _descendants(root, own_pid: int) -> dict:
    """pid -> psutil.Process of every live descendant of ``root`` except this watchdog."""
    import psutil

    try:
        return {p.pid: p for p in root.children(recursive=True) if p.pid != own_pid}
    except psutil.NoSuchProcess:
        return {}


def reap(procs: list) -> list[int]:
    """SIGTERM ``procs`` still alive (psutil checks the pid was not reused) and their current
    descendants, SIGKILL those left after ``GRACE_S``; returns the pids signalled."""
    import psutil

    targets: dict[int, psutil.Process] = {}
    for proc in procs:
        try:
            if proc.is_running():
                targets[proc.pid] = proc
                targets.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    for proc in targets.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(targets.values()), timeout=GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=GRACE_S)
    return sorted(targets)


def watch(driver_pid: int) -> list[int]:
    """Track the driver's descendants until it is gone, then reap them; returns reaped pids."""
    import psutil

    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return []
    known: dict = {}
    while True:
        ready, _, _ = select.select([sys.stdin.fileno()], [], [], INTERVAL_S)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break  # the driver's end closed: it exited or was killed
        if os.getppid() != driver_pid:
            break  # re-parented: the driver is gone even if a forked child kept the pipe
        known.update(_descendants(driver, os.getpid()))
    return reap(list(known.values()))


def main() -> None:
    """Script entry: ``watchdog.py DRIVER_PID``, stdin a pipe the driver holds open."""
    # The terminal's Ctrl-C or a SIGTERM to the group is for the driver; this process must
    # stay to clean up after it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    watch(int(sys.argv[1]))


if __name__ == "__main__":
    main()
