"""Run Restora's CPU benchmarks and write each section as Parquet plus a markdown table.

    python -m benchmarks.run_all                    # full run -> benchmarks/results/
    python -m benchmarks.run_all --quick            # a few minutes -> benchmarks/results/quick/
    python -m benchmarks.run_all --sections 1,2,5   # some sections only

Sections: 1 sampler efficiency, 2 batching, 3 pipeline vs bare sampler, 4 how cost grows,
5 quality per task at published settings and matched budgets, 6 GPU (benchmarks/gpu.py; here only its --quick CPU form, the GPU table
comes from a run on a GPU machine). Every table's header carries the date, machine, versions and
the command that reproduces it. Timings are not pass/fail: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from .common import context_from_args, markdown_table

SECTIONS = {1: "efficiency", 2: "batching", 3: "pipeline", 4: "scaling", 5: "quality", 6: "gpu"}


def _section_module(number: int):
    if number == 1:
        from . import efficiency as mod
    elif number == 2:
        from . import batching as mod
    elif number in (3, 4):
        from . import pipeline as mod
    elif number == 5:
        from . import quality as mod
    else:
        from . import gpu_section as mod
    return mod


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all",
                                description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few-minute version (smaller sizes)")
    p.add_argument("--sections", default="1,2,3,4,5,6", help="comma list of 1..6")
    p.add_argument("--out", default=None,
                   help="output folder (default benchmarks/results, or benchmarks/results/quick)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for the in-process measurements (default 1)")
    p.add_argument("--models", default="digits32,celeba128",
                   help="models for sections 1-2 (default digits32,celeba128)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections; a failing section is reported and the others still run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # The pipeline sections (3, 4) run last: they are the slowest and the likeliest to fail.
    sections = sorted({int(s) for s in args.sections.split(",") if s.strip()},
                      key=lambda s: (s in (3, 4), s))
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; expected some of {sorted(SECTIONS)}")
    ctx = context_from_args("benchmarks.run_all", argv, args,
                            models=tuple(m.strip() for m in args.models.split(",") if m.strip()))
    out = ctx.out_dir
    status = []
    done_pipeline = False
    for number in sections:
        if number in (3, 4) and done_pipeline:
            continue
        started = time.perf_counter()
        mod = _section_module(number)
        try:
            if number in (3, 4):
                mod.run(ctx, sections=[s for s in sections if s in (3, 4)])
                done_pipeline = True
            else:
                mod.run(ctx)
            state = "ok"
        except Exception as exc:  # noqa: BLE001 - one section's failure must not hide the rest
            traceback.print_exc()
            state = f"failed: {type(exc).__name__}: {exc}"
        status.append({"section": number, "name": SECTIONS[number], "status": state,
                       "seconds": round(time.perf_counter() - started, 1)})
        print(f"section {number} ({SECTIONS[number]}): {state} in {status[-1]['seconds']} s",
              flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_status.md").write_text(
        f"# Benchmark run\n\n- command: `{ctx.command}`\n\n" + markdown_table(status))
    return 0 if all(s["status"] == "ok" for s in status) else 1


if __name__ == "__main__":
    raise SystemExit(main())
