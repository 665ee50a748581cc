"""Section 6: the GPU benchmark (``benchmarks/gpu.py``), here only in its ``--quick`` CPU form.

The real table comes from ``python -m benchmarks.gpu --out benchmarks/results`` on a GPU machine
and lands in ``gpu_128.md``; this section points to it, or says it is not yet measured, and runs
the script's quick CPU form so that it is known to work.
"""

from __future__ import annotations

import argparse
import time

from . import gpu
from .common import Context, write_section


def run(ctx: Context) -> list[dict]:
    """Run gpu.py --quick on CPU; writes gpu.{parquet,md}."""
    started = time.perf_counter()
    args = argparse.Namespace(device="cpu", resolution=128, quick=True, iters=1, sampler_batch=4,
                              budget_s=120.0, trained_prior="", skip_compile=True)
    args.command = ("python -m benchmarks.gpu --quick --device cpu --iters 1 --skip-compile "
                    "--out <dir>")
    result = gpu.run(args)
    gpu_md = ctx.out_dir.parent / "gpu_128.md" if ctx.quick else ctx.out_dir / "gpu_128.md"
    if gpu_md.exists():
        pointer = "GPU table: see gpu_128.md"
    else:
        pointer = ("GPU table: not yet measured (run `python -m benchmarks.gpu --out "
                   "benchmarks/results` on a GPU machine; it writes gpu_128.md)")
    rows = [{k: v for k, v in r.items()} for r in result["rows"]]
    notes = [pointer,
             ("The rows below are the script's --quick CPU smoke form (a tiny UNet at 128^2, "
             "batches 1 and 4, 8-step sampler): they show the script runs, not GPU speed."),
             (f"PSNR bf16 vs fp32 (random weights, quick form): "
             f"{result['info'].get('psnr_bf16_vs_fp32_random_weights_db')} dB.")]
    write_section(ctx, "gpu", "6. GPU", rows, notes=notes, seconds=time.perf_counter() - started,
                  body=f"**{pointer}**")
    return rows
