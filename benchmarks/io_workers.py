"""Memory of Ray's I/O workers (the processes that read, write and commit) in a real run.

One `restora restore` run per row, in a fresh process, on ``--images`` 32x32 gray PNGs with the
shipped digits32 prior at 1 NFE per image (the soak's settings: the run is I/O, not network).
Every ``--interval`` seconds each process of the run's tree is sorted into flow (the CLI
process), actor (``ray::RestoreWorker``), I/O worker (every other ``ray::`` worker: ``IDLE``,
``load_batch``, ``write_batch``, ``commit_shard``) or other (GCS, raylet, dashboard, Prefect
server); per process the peak RSS is kept, and whether libtorch is mapped into it.

``--code DIR`` (repeatable, with a label: ``--code before=/tmp/old``) runs the CLI of another
checkout of this repository, so a change is measured against the code before it, runs
alternating in one session. ``python -m benchmarks.io_workers --code before=DIR --code after=.``
writes benchmarks/results/io_workers.{md,parquet}.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from .common import REPO_ROOT, context_from_args, git_commit, write_section
from .pipeline import CPUS_PER_ACTOR, RssWatcher, _env, write_inputs
from .soak import count_files

MIB = 2**20


def _has_torch(proc: psutil.Process) -> bool | None:
    try:
        return any("libtorch" in m.path for m in proc.memory_maps(grouped=True))
    except psutil.Error:
        return None


class _IoWatch(RssWatcher):
    """RssWatcher with Ray's I/O workers as a kind of their own ("io": every ``ray::`` worker but
    the actor), the peak of their summed RSS, and whether libtorch is mapped into each."""

    def __init__(self, pid: int, interval: float):
        super().__init__(pid, interval, on_sample=self._sample)
        self.torch: dict[int, bool | None] = {}
        self.io_sum_peak = 0

    def kind_of(self, title: str) -> str:
        kind = super().kind_of(title)
        return "io" if kind == "other" and title.startswith("ray::") else kind

    def observed(self, proc: psutil.Process, kind: str) -> None:
        if kind == "io":
            # libtorch appears once the worker has imported it; keep the latest answer.
            seen = _has_torch(proc)
            if seen is not None:
                self.torch[proc.pid] = seen or self.torch.get(proc.pid, False)

    def _sample(self, rss: dict[str, int]) -> None:
        self.io_sum_peak = max(self.io_sum_peak, rss.get("io", 0))


def run_once(label: str, code: Path, images: Path, work: Path, count: int, interval: float
             ) -> dict[str, Any]:
    """One watched run of ``code``'s CLI; a row of the table."""
    import pyarrow.parquet as pq

    out = work / f"out_{label}_{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "flows.cli", "restore", "--input", str(images), "--output",
           str(out), "--task", "box", "--param", "box_size=8", "--inputs", "observed", "--prior",
           "digits32", "--method", "restora_flow", "--steps", "1", "--corrections", "0",
           "--batch-size", "16", "--shard-size", "64", "--num-actors", "1",
           "--cpus-per-actor", str(CPUS_PER_ACTOR)]
    env = _env(work)
    env["PYTHONPATH"] = str(code)  # the Ray workers inherit it: they import this checkout
    start = time.monotonic()
    log = work / f"log_{label}.txt"
    with open(log, "w") as fh:
        proc = psutil.Popen(cmd, cwd=code, env=env, stdout=fh, stderr=subprocess.STDOUT)
        with _IoWatch(proc.pid, interval) as watch:
            rc = proc.wait(timeout=1800)
    if rc != 0:
        raise RuntimeError(f"{label}: restora restore exited {rc}; {log.read_text()[-3000:]}")
    status = pq.read_table(out / "manifests", columns=["status"])["status"].to_pylist()
    io = [watch.peaks[p] / MIB for p, k in watch.kinds.items() if k == "io"]
    with_torch = sum(1 for p, k in watch.kinds.items() if k == "io" and watch.torch.get(p))
    actor = [watch.peaks[p] / MIB for p, k in watch.kinds.items() if k == "actor"]
    flow = [watch.peaks[p] / MIB for p, k in watch.kinds.items() if k == "flow"]
    return {"code": label, "git_commit": git_commit(code), "images": count,
            "ok": status.count("ok"), "files_written": count_files(out / "images"),
            "wall_s": round(time.monotonic() - start, 1),
            "io_workers": len(io), "io_workers_with_libtorch": with_torch,
            "io_worker_rss_median_mib": statistics.median(io) if io else None,
            "io_worker_rss_max_mib": max(io) if io else None,
            "io_workers_rss_sum_peak_mib": watch.io_sum_peak / MIB,
            "actor_rss_peak_mib": max(actor) if actor else None,
            "flow_rss_peak_mib": flow[0] if flow else None}


NOTES = [
    ("Each row is one `restora restore` run in a fresh process (its own local Ray and Prefect "
     "ephemeral server), 1 actor at 0.75 CPU, batches of 16, shards of 64; the rows alternate "
     "between the checkouts, in one session on the machine above."),
    ("io_workers: Ray worker processes other than the actor seen during the run (Ray keeps a "
     "pool of them and starts more while tasks queue). io_worker_rss_*: their peak RSS each; "
     "io_workers_rss_sum_peak_mib: the largest sum over them at one poll. "
     "io_workers_with_libtorch: how many had libtorch mapped (/proc/PID/maps)."),
    "RSS counts shared pages in every process that maps them, so sums overstate the total.",
]


def main(argv: list[str] | None = None) -> int:
    """Run each checkout ``--repeats`` times, alternating, and write the table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.io_workers",
                                description=__doc__.splitlines()[0])
    p.add_argument("--code", action="append", default=[], metavar="LABEL=DIR",
                   help="a checkout to run (repeat; default: this one, labelled 'this')")
    p.add_argument("--images", type=int, default=512, help="images per run (default 512)")
    p.add_argument("--repeats", type=int, default=2, help="runs per checkout (default 2)")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between polls")
    p.add_argument("--quick", action="store_true", help="64 images, one run each")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results[/quick])")
    args = p.parse_args(argv)
    codes = [(c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.code] \
        or [("this", REPO_ROOT)]
    for label, code in codes:
        if not (code / "flows" / "cli.py").exists():
            raise SystemExit(f"--code {label}={code}: not a checkout of this repository")
    count, repeats = (64, 1) if args.quick else (args.images, args.repeats)
    ctx = context_from_args("benchmarks.io_workers", argv, args)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="rio_", dir="/tmp") as tmp:
        work = Path(tmp)
        images = write_inputs(work / "in", count)
        for _ in range(repeats):
            for label, code in codes:
                rows.append(run_once(label, code, images, work, count, args.interval))
                print(f"io_workers: {rows[-1]}", flush=True)
    write_section(ctx, "io_workers", "Memory of Ray's I/O workers in a real run", rows,
                  notes=NOTES, seconds=time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
