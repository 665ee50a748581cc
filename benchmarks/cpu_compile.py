"""torch.compile (inductor's C++ backend) against eager on the CPU, side by side in one run.

For each model: the eager forward time per network evaluation (repeated, so the spread shows
the noise of a shared machine), the first compiled call (compile time), the compiled forward
time, and the largest output difference. Writes ``cpu_compile.{md,json}`` to ``--out``.

    python -m benchmarks.cpu_compile --out benchmarks/results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from restora_core import load_prior
from restora_core.models import build_model
from restora_core.runtime import RuntimeConfig, prepare_velocity

SMALL_CELEBA_LIKE = {"input_channels": 3, "input_height": 64, "ch": 32, "ch_mult": (1, 2, 2),
                     "num_res_blocks": 1, "attn_resolutions": (16,)}


def _model(name: str) -> torch.nn.Module:
    if name == "digits32":
        return load_prior("digits32").velocity
    torch.manual_seed(0)
    return build_model(SMALL_CELEBA_LIKE).eval()


def _times(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(name: str, batch: int, repeats: int) -> dict:
    """Eager vs compiled forward of model ``name`` at ``batch`` on the CPU."""
    net = _model(name)
    res, ch = net.input_height, net.input_channels
    x = torch.randn(batch, ch, res, res, generator=torch.Generator().manual_seed(0))
    t = torch.full((batch,), 0.5)
    eager = prepare_velocity(net, "cpu", RuntimeConfig("fp32", compile="off"))
    compiled = prepare_velocity(net, "cpu", RuntimeConfig("fp32", compile="default"))
    with torch.inference_mode():
        ref = eager(x, t)
        eager_s = _times(lambda: eager(x, t), repeats)
        start = time.perf_counter()
        out = compiled(x, t)
        compile_s = time.perf_counter() - start
        compiled_s = _times(lambda: compiled(x, t), repeats)
        eager_again = _times(lambda: eager(x, t), repeats)  # noise check: eager before and after
    e_med, c_med = statistics.median(eager_s + eager_again), statistics.median(compiled_s)
    return {"model": name, "batch": batch, "repeats": repeats,
            "eager_ms_median": round(e_med * 1e3, 1),
            "eager_ms_min_max": f"{min(eager_s + eager_again) * 1e3:.1f} / "
                                f"{max(eager_s + eager_again) * 1e3:.1f}",
            "eager_ms_first_vs_last_pass": f"{statistics.median(eager_s) * 1e3:.1f} / "
                                           f"{statistics.median(eager_again) * 1e3:.1f}",
            "compile_s": round(compile_s, 1),
            "compiled_ms_median": round(c_med * 1e3, 1),
            "compiled_ms_min_max": f"{min(compiled_s) * 1e3:.1f} / {max(compiled_s) * 1e3:.1f}",
            "speedup": round(e_med / c_med, 2),
            "max_abs_diff": float((out - ref).abs().max()),
            "nfe_to_repay_compile": (round(compile_s / (e_med - c_med)) if e_med > c_med
                                     else "never")}


def write(out: Path, info: dict, rows: list[dict]) -> None:
    """Write cpu_compile.json and cpu_compile.md."""
    (out / "cpu_compile.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    cols = list(rows[0])
    lines = ["# torch.compile (inductor C++) vs eager on the CPU", "",
             *(f"- {k}: {v}" for k, v in info.items()), "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
             *("| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows), ""]
    (out / "cpu_compile.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="digits32,celeba_like64")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (an actor's CPUs)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.cpu_compile " + " ".join(sys.argv[1:] if argv is None else argv)
    info = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
                       f"torch thread(s)", "torch": torch.__version__,
            "python": platform.python_version(), "command": command}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for name in args.models.split(","):  # tables rewritten after each model: a kill loses nothing
        rows.append(measure(name, args.batch, args.repeats))
        write(out, info, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
