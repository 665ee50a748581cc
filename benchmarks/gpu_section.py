"""Section 6: the GPU benchmark (``benchmarks/gpu.py``), here only in its ``--quick`` CPU form.

The real table comes from ``python -m benchmarks.gpu --out benchmarks/results`` on a GPU machine
and lands in ``gpu_128.md``; this section points to it, or says it is not yet measured, and runs
the script's quick CPU form so that it is known to work.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import Context, write_section


def run(ctx: Context) -> list[dict]:
    """Run gpu.py --quick on CPU (compile rows skipped); writes gpu.{parquet,md}."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # A process of its own: the script's budget watchdog ends the process it runs in.
        subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--quick", "--device", "cpu",
                        "--budget-s", "200", "--out", tmp], check=True, capture_output=True,
                       timeout=400)
        result = json.loads((Path(tmp) / "gpu_quick.json").read_text())
    gpu_md = ctx.out_dir.parent / "gpu_128.md" if ctx.quick else ctx.out_dir / "gpu_128.md"
    if gpu_md.exists():
        pointer = "GPU table: see gpu_128.md"
    else:
        pointer = ("GPU table: not yet measured (run `python -m benchmarks.gpu --out "
                   "benchmarks/results --budget-s 200` on a GPU machine; it writes gpu_128.md)")
    rows = list(result["rows"])
    psnr = {f"{r['model']} {r['setting']}": r["psnr_restored_mean_db"] for r in result["psnr"]}
    notes = [pointer,
             ("The rows below are the script's --quick CPU smoke form (a tiny UNet at 16x16, "
              "batches 1 and 2, 1- and 2-step samplers): they show the script runs, not GPU "
              "speed."),
             f"Restored-pixel PSNR against fp32 (quick form): {psnr} dB."]
    write_section(ctx, "gpu", "6. GPU", rows, notes=notes, seconds=time.perf_counter() - started,
                  body=f"**{pointer}**")
    return rows
