"""Training-loop benchmark: steps/s of the real loop (``restora_core.training.train``: batches
drawn on the device, OT pairing, AdamW, grad clipping, EMA, logging) against the bare step
(forward + backward + AdamW on one fixed batch already on the device), same model, same batch
size, same precision, side by side in one process.

    python -m benchmarks.training                       # CPU, few steps -> benchmarks/results/
    python -m benchmarks.training --device cuda --out DIR

Goal (issue 11): loop / bare >= 0.85 on every device; digits32 at batch 128 >= 150 steps/s on
an H100-class GPU. Needs the training sets in ``.cache/datasets`` (scripts/build_datasets.py).
Imports only torch, numpy, scipy and restora_core (runs on a bare GPU box).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from restora_core.models import build_model
from restora_core.training import SHIPPED_RECIPES, TrainConfig, train
from restora_core.training.device_batches import DeviceBatches
from restora_core.training.flow_matching import cfm_loss
from restora_core.training.loop import load_training_set

ROOT = Path(__file__).resolve().parent.parent
GOAL_RATIO = 0.85
GOAL_DIGITS_GPU = 150.0
# (warmup, timed) steps per device type: the GPU windows last about a second each
STEPS = {"cpu": (1, 4), "cuda": (30, 150)}


def configure_device(device: str) -> None:
    """TF32 matmuls and cuDNN autotuning on CUDA (what the training CLI sets)."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def recipe_config(name: str, device: str, **overrides: Any) -> TrainConfig:
    """The shipped recipe ``name`` on ``device`` (bf16 on CUDA), with nothing written to disk."""
    fields = {**SHIPPED_RECIPES[name], "device": device, "bf16": device.startswith("cuda"),
              "checkpoint_dir": None, "output": None, "sample_count": 0, "resume": False}
    fields.update(overrides)
    return TrainConfig.from_dict(fields)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_rate(cfg: TrainConfig, dataset, warmup: int, steps: int,
              seconds: float | None = None) -> tuple[float, int]:
    """Steps/s of forward + backward + AdamW on one fixed batch on the device, and the number
    of steps timed: ``steps``, or fewer (a multiple of ``warmup``) when ``seconds`` would be
    exceeded at the rate of a calibration window of ``warmup`` steps."""
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.architecture()).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                            fused=device.type == "cuda")
    batches = DeviceBatches(dataset, device, cfg.seed)
    batch = batches.finish(batches.draw(0, cfg.batch_size, cfg.ot_coupling))
    batches.close()

    def one() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = model(batch.x_t, batch.t)
        loss = cfm_loss(pred, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        one()
    _sync(device)
    if seconds is not None:
        t0 = time.perf_counter()
        for _ in range(warmup):
            one()
        _sync(device)
        rate = warmup / (time.perf_counter() - t0)
        steps = max(warmup, min(steps, int(rate * seconds) // warmup * warmup))
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    _sync(device)
    return steps / (time.perf_counter() - t0), steps


def loop_rate(cfg: TrainConfig, dataset, data_info, warmup: int, steps: int) -> float:
    """Steps/s of the training loop over ``steps`` steps after ``warmup`` (from its log)."""
    run = TrainConfig.from_dict({**cfg.to_dict(), "max_steps": warmup + steps,
                                 "log_every": warmup, "max_seconds": None})
    if steps % warmup:
        raise ValueError("timed steps must be a multiple of the warmup steps")
    result = train(run, dataset=dataset, data_info=data_info)
    marks = {h["step"]: h["elapsed_s"] for h in result.history}
    return steps / (marks[warmup + steps] - marks[warmup])


def _print_row(row: dict[str, Any]) -> None:
    print(json.dumps({"event": "training-benchmark", **row}), flush=True)


def measure(names: list[str], device: str, warmup: int, steps: int, on_row=_print_row,
            seconds_each: float | None = None, batch_size: int | None = None,
            deadline: float | None = None) -> list[dict[str, Any]]:
    """One row per recipe: bare and loop steps/s and their ratio (``seconds_each``: cap on each
    timed window, by fewer steps; ``batch_size``: instead of the recipe's; ``deadline``: a
    ``time.monotonic()`` after which the remaining recipes are left out)."""
    configure_device(device)
    rows = []
    for spec in names:
        if deadline is not None and time.monotonic() > deadline:
            break
        name, _, own_batch = spec.partition(":")  # "photo64:32" = photo64 at batch 32
        batch = int(own_batch) if own_batch else batch_size
        cfg = recipe_config(name, device, **({"batch_size": batch} if batch else {}))
        dataset, info = load_training_set(cfg)
        n_params = sum(p.numel() for p in build_model(cfg.architecture()).parameters())
        bare, timed = bare_rate(cfg, dataset, warmup, steps, seconds_each)
        loop = loop_rate(cfg, dataset, info, warmup, timed)
        row = {"prior": name, "params_M": round(n_params / 1e6, 2),
               "resolution": cfg.resolution, "batch": cfg.batch_size,
               "precision": "bf16 autocast" if cfg.bf16 else "fp32", "ot": cfg.ot_coupling,
               "timed_steps": timed, "bare_steps_per_s": round(bare, 3),
               "loop_steps_per_s": round(loop, 3), "ratio": round(loop / bare, 3),
               "ratio_goal_met": loop / bare >= GOAL_RATIO}
        rows.append(row)
        on_row(row)
    return rows


def device_name(device: str) -> str:
    """A readable name of the device measured."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def write_report(rows: list[dict[str, Any]], device: str, command: str, out_dir: Path,
                 stem: str) -> Path:
    """``<stem>.md`` (header, table, verdict) and ``<stem>.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": device_name(device), "device": device, "command": command,
              "python": platform.python_version(), "torch": torch.__version__,
              "numpy": np.__version__}
    (out_dir / f"{stem}.json").write_text(json.dumps({**header, "rows": rows}, indent=1) + "\n")
    cols = list(rows[0]) if rows else []
    lines = [f"# Training loop vs bare step ({device})", "",
             *(f"- {k}: `{v}`" if k == "command" else f"- {k}: {v}" for k, v in header.items()),
             "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    lines += ["", f"Bare step: forward + backward + AdamW on one fixed batch on the device. "
              f"Loop: `restora_core.training.train` (batches drawn on the device, OT pairing, "
              f"grad clipping, EMA, logging). Goal: ratio >= {GOAL_RATIO}"
              + (f"; digits32 at batch 128 >= {GOAL_DIGITS_GPU:.0f} steps/s on an H100-class "
                 "GPU." if device.startswith("cuda") else ".")]
    for r in rows:
        verdict = "met" if r["ratio_goal_met"] else "missed"
        lines.append(f"- {r['prior']}: ratio {r['ratio']} ({verdict})")
        if device.startswith("cuda") and r["prior"] == "digits32":
            ok = r["loop_steps_per_s"] >= GOAL_DIGITS_GPU
            lines.append(f"- digits32 loop {r['loop_steps_per_s']} steps/s: "
                         f"{'met' if ok else 'missed'} (goal {GOAL_DIGITS_GPU:.0f})")
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Measure and write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--priors", default="digits32,photo32,photo64,mri64",
                    help="recipes, each optionally NAME:BATCH (e.g. photo64:32)")
    ap.add_argument("--warmup", type=int, help="warm-up steps (default per device)")
    ap.add_argument("--steps", type=int, help="timed steps, a multiple of --warmup")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--seconds-each", type=float, help="cap on each timed window")
    ap.add_argument("--batch-size", type=int, help="instead of each recipe's (128)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--stem", help="file name stem (default training / training_gpu)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    warmup = args.warmup or STEPS[kind][0]
    steps = args.steps or STEPS[kind][1]
    rows = measure(args.priors.split(","), args.device, warmup, steps,
                   seconds_each=args.seconds_each, batch_size=args.batch_size)
    command = shlex.join(["python", "-m", "benchmarks.training", *argv])
    path = write_report(rows, args.device, command, Path(args.out),
                        args.stem or ("training" if kind == "cpu" else "training_gpu"))
    print(json.dumps({"event": "report", "path": str(path)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
