"""Soak: many small images through the real pipeline at one network evaluation each, with the RSS
of the whole process tree sampled every few seconds; does memory level off?

One `restora restore` run in a fresh process (Prefect flow with its ephemeral server, a local Ray,
RestoreWorker actors, PNG decode/encode, Parquet manifests) on ``--images`` 32x32 gray PNGs with
the shipped digits32 prior, Restora-Flow at 1 step without corrections (1 NFE per image), so the
run measures the pipeline, not the network. Every ``--interval`` seconds: the images written so
far and the RSS of the flow process, the actors and everything else (Ray and Prefect services,
idle Ray workers). The slope of RSS against images done, in MiB per 1,000 images, is fitted on
the first and the second half of the run after a warm-up; a slope near zero in the second half
is what "levels off" means here. The run must end with every image committed exactly once.

``python -m benchmarks.soak --images 20000`` writes benchmarks/results/soak.{md,parquet,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from .common import REPO_ROOT, context_from_args, prior_under_test, write_section
from .pipeline import CPUS_PER_ACTOR, RssWatcher, _env, write_inputs

MIB = 2**20
WARM_UP = 0.1  # fraction of the images before the fits start (imports, caches, first shards)
KINDS = ("total", "flow", "actor", "other")


def count_files(folder: Path) -> int:
    """PNG files directly under ``folder`` (0 while it does not exist); not the run's
    images/metadata.parquet."""
    try:
        with os.scandir(folder) as it:
            return sum(1 for entry in it if entry.is_file() and entry.name.endswith(".png"))
    except FileNotFoundError:
        return 0


def slopes(series: list[dict[str, Any]], total_images: int) -> dict[str, float]:
    """RSS slope in MiB per 1,000 images, per kind, on each half of the run after the warm-up."""
    done = np.array([s["images_done"] for s in series], dtype=np.float64)
    keep = (done >= WARM_UP * total_images) & (done < total_images)
    out: dict[str, float] = {}
    if keep.sum() < 4:
        return out
    lo, hi = WARM_UP * total_images, float(total_images)
    mid = (lo + hi) / 2
    for half, sel in (("first", keep & (done < mid)), ("second", keep & (done >= mid))):
        x = done[sel] / 1000
        for kind in KINDS:
            y = np.array([s[f"{kind}_mib"] for s in series])[sel]
            if len(x) >= 2 and np.ptp(x) > 0:
                out[f"{kind}_mib_per_1000_{half}_half"] = float(np.polyfit(x, y, 1)[0])
    return out


def run_soak(work: Path, count: int, *, interval: float, batch: int, shard: int,
             timeout_s: float) -> dict[str, Any]:
    """One watched `restora restore` run over ``count`` images; the series, checks and slopes."""
    import pyarrow.parquet as pq

    images = write_inputs(work / "in", count)
    put = prior_under_test("digits32")
    prior_arg = "digits32" if put.weights.startswith("shipped") else put.prior.source
    out = work / "out"
    cmd = [sys.executable, "-m", "flows.cli", "restore", "--input", str(images), "--output",
           str(out), "--task", "box", "--param", "box_size=8", "--inputs", "observed", "--prior",
           prior_arg, "--method", "restora_flow", "--steps", "1", "--corrections", "0",
           "--batch-size", str(batch), "--shard-size", str(shard), "--num-actors", "1",
           "--cpus-per-actor", str(CPUS_PER_ACTOR)]
    series: list[dict[str, Any]] = []
    start = time.monotonic()

    def sample(rss: dict[str, int]) -> None:
        series.append({"t_s": time.monotonic() - start,
                       "images_done": count_files(out / "images"),
                       "processes": rss["processes"],
                       **{f"{k}_mib": rss[k] / MIB for k in ("flow", "actor", "other", "total")}})

    log = work / "soak.log"
    with open(log, "w") as fh:
        proc = psutil.Popen(cmd, cwd=REPO_ROOT, env=_env(work), stdout=fh,
                            stderr=subprocess.STDOUT)
        with RssWatcher(proc.pid, interval=interval, on_sample=sample) as watch:
            try:
                rc = proc.wait(timeout=timeout_s)
            except psutil.TimeoutExpired:
                proc.kill()
                rc = -9
    wall = time.monotonic() - start
    if rc != 0:
        raise RuntimeError(f"restora restore exited {rc}; log tail:\n{log.read_text()[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    table = pq.read_table(out / "manifests", columns=["id", "status"])
    ids = table["id"].to_pylist()
    checks = {"images": count, "ok": table["status"].to_pylist().count("ok"),
              "manifest_rows": len(ids), "unique_ids": len(set(ids)),
              "lost": count - len(set(ids)), "duplicated": len(ids) - len(set(ids)),
              "files_written": count_files(out / "images"),
              "summary_ok": summary["images"]["ok"], "shards": summary["shards"]["total"]}
    return {"series": series, "checks": checks, "slopes": slopes(series, count),
            "wall_s": wall, "flow_seconds": summary["seconds"], "peaks": watch.summary(),
            "prior_weights": put.weights, "command": shlex.join(cmd[1:])}


def _figure(path: Path, series: list[dict[str, Any]], count: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [s["images_done"] for s in series]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for kind, label in (("total", "whole tree"), ("other", "Ray + Prefect services"),
                        ("flow", "flow process"), ("actor", "actor")):
        ax.plot(done, [s[f"{kind}_mib"] for s in series], label=label, lw=1.2)
    ax.axvline(WARM_UP * count, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("images written")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(f"Soak: {count} images at 1 NFE", fontsize=9)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the soak and write soak.{md,parquet,png}."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak",
                                description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000, help="images to restore (default 20000)")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between RSS samples")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=500)
    p.add_argument("--timeout", type=float, default=5400, help="seconds before the run is killed")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    args = p.parse_args(argv)
    if args.images < 10:
        raise SystemExit("--images: at least 10")
    ctx = context_from_args("benchmarks.soak", argv, args)
    out_dir = ctx.out_dir
    work = Path(tempfile.mkdtemp(prefix="restora-soak-"))
    try:
        res = run_soak(work, args.images, interval=args.interval, batch=args.batch_size,
                       shard=args.shard_size, timeout_s=args.timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    _figure(out_dir / "soak.png", res["series"], args.images)
    series = res["series"]
    first = next((s for s in series if s["images_done"] >= WARM_UP * args.images), series[0])
    last = max((s for s in series if s["images_done"] < args.images), key=lambda s: s["t_s"],
               default=series[-1])
    row = {**res["checks"], "wall_s": res["wall_s"], "flow_seconds": res["flow_seconds"],
           "images_per_s": args.images / res["flow_seconds"], "samples": len(series),
           "rss_at_warm_up_mib": first["total_mib"], "rss_near_end_mib": last["total_mib"],
           "peak_rss_mib": res["peaks"]["tree_peak_rss_mib"], **res["slopes"]}
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(series), out_dir / "soak_series.parquet")
    notes = [
        (f"Run: `python {res['command']}` (paths are temporary), prior {res['prior_weights']}, "
        "one actor with one torch thread."),
        (f"RSS of the CLI's process tree sampled every {args.interval:g} s (psutil): flow = the CLI "
        "process; actor = the ray::RestoreWorker process; other = everything else (Ray GCS, "
        "raylet, dashboard agents, idle Ray workers, the Prefect server). images done = files "
        "under images/."),
        (f"Slopes: least squares of RSS against images done, MiB per 1,000 images, after the "
        f"first {WARM_UP:.0%} of the images, on each half of the rest; the series is in "
        "soak_series.parquet and drawn in soak.png."),
        "lost = input images with no manifest row; duplicated = rows beyond one per image.",
    ]
    rows = [{"measure": k, "value": float(v)} for k, v in row.items()]
    write_section(ctx, "soak", f"Soak: {args.images} images at 1 NFE", rows, notes=notes,
                  seconds=res["wall_s"], body="![RSS against images written](soak.png)")
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
