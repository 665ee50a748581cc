"""The GPU stage: one time-boxed run on a lent GPU that (a) benchmarks the training loop against
the bare step and (b) trains the shipped priors in turn, each under a hard wall-clock limit,
writing everything flat into one folder.

    python -m priors.gpu_stage --out "$OUT" --budget-s 330            # on the GPU
    python -m priors.gpu_stage --out /tmp/stage --quick                # CPU smoke test

Per prior, ``<out>/`` gets ``<name>.safetensors`` (EMA weights, fp16, model card in the metadata:
steps, data, seconds, device, command), ``<name>_card.json``, ``<name>_samples.png`` (64 Euler
samples), ``<name>_train.log`` (JSON lines); plus ``training_gpu.md``/``.json`` (the benchmark),
``gpu_stage.log`` and ``gpu_stage_summary.json``.

Time: the whole stage stays within ``--budget-s`` (measured from its start, before torch loads):
each prior gets a share of what is left, scaled from ``--limits``, minus a reserve for building
the model, sampling and saving, and the loop itself stops at its ``max_seconds``. Resume:
checkpoints go to ``--ckpt-root`` (not ``--out``; on the device machine ``$OUT`` starts empty
each call while the working tree persists while the machine stays warm); a rerun continues each
prior until its cumulative training time reaches its limit, or just re-exports it when done.
Needs only torch, numpy, scipy, safetensors, fsspec and pillow, and the training sets in
``.cache/datasets`` (``scripts/build_datasets.py``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any

_STARTED = time.monotonic()  # the budget counts from here, before torch is imported
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PRIORS = ("photo32", "photo64", "mri64")
DEFAULT_LIMITS = (110.0, 130.0, 50.0)
BENCH_PRIORS = ("digits32", "photo32", "photo64", "mri64")
BENCH_SECONDS = 20.0         # timed windows of the benchmark in all (plus warm-ups)
BENCH_DEADLINE_S = 45.0      # no benchmark row starts after this many seconds of the stage
RESERVE_S = {"cuda": 8.0, "cpu": 30.0}   # per prior: model, data, sampling, export
FINAL_MARGIN_S = 5.0         # kept free at the end of the budget


class Stage:
    """Clock, log and summary of one stage run."""

    def __init__(self, out: Path, budget_s: float, command: str):
        self.out = out
        self.t0 = _STARTED
        self.budget_s = budget_s
        self.command = command
        self.summary: dict[str, Any] = {"command": command, "budget_s": budget_s,
                                        "priors": {}, "benchmark": None}
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        """Seconds since the stage started."""
        return time.monotonic() - self.t0

    def left(self) -> float:
        """Seconds left before the budget's final margin."""
        return self.budget_s - FINAL_MARGIN_S - self.elapsed()

    def log(self, event: str, **fields: Any) -> None:
        """One JSON line to the stage log and stdout."""
        line = json.dumps({"event": event, "t": round(self.elapsed(), 2), **fields},
                          default=str)
        print(line, flush=True)
        with open(self.out / "gpu_stage.log", "a") as f:
            f.write(line + "\n")

    def write_summary(self) -> None:
        """``gpu_stage_summary.json`` (rewritten after every part, so a kill leaves the last)."""
        self.summary["elapsed_s"] = round(self.elapsed(), 1)
        (self.out / "gpu_stage_summary.json").write_text(
            json.dumps(self.summary, indent=1, default=str) + "\n")


def run_benchmark(stage: Stage, device: str, quick: bool) -> None:
    """The training-loop benchmark into ``training_gpu.md``/``.json`` (``training_quick`` on a
    quick run), within ``BENCH_SECONDS``."""
    from benchmarks.training import measure, write_report

    warmup, steps = (1, 1) if quick else (30, 150)
    rows = measure(list(BENCH_PRIORS), device, warmup, steps,
                   on_row=lambda row: stage.log("benchmark-row", **row),
                   seconds_each=2 if quick else BENCH_SECONDS / len(BENCH_PRIORS) / 2,
                   batch_size=4 if quick else None,
                   deadline=stage.t0 + min(BENCH_DEADLINE_S, 0.2 * stage.budget_s))
    path = write_report(rows, device, stage.command + "  # benchmark part", stage.out,
                        "training_quick" if quick else "training_gpu")
    stage.summary["benchmark"] = {"file": path.name, "rows": rows}


def trained_seconds(checkpoint_dir: Path) -> float:
    """Training seconds already in the latest checkpoint under ``checkpoint_dir`` (0 if none)."""
    from restora_core.training import latest_checkpoint, load_checkpoint

    uri = latest_checkpoint(str(checkpoint_dir)) if checkpoint_dir.exists() else None
    return float(load_checkpoint(uri).get("seconds", 0.0)) if uri else 0.0


def prior_config(name: str, device: str, out: Path, ckpt_root: Path, quick: bool,
                 max_seconds: float, command: str, device_data: bool | None):
    """The shipped recipe of ``name`` for this stage (tiny on ``quick``)."""
    from restora_core.training import SHIPPED_RECIPES, TrainConfig

    fields = {**SHIPPED_RECIPES[name], "device": device, "bf16": device.startswith("cuda"),
              "output": str(out / f"{name}.safetensors"),
              "checkpoint_dir": str(ckpt_root / name), "max_seconds": max_seconds,
              "checkpoint_every": 1500, "command": command, "device_data": device_data}
    if quick:
        fields.update(batch_size=4, max_steps=3, log_every=1, checkpoint_every=2,
                      sample_count=4, sample_steps=2, warmup_steps=2)
    return TrainConfig.from_dict(fields)


def train_prior(stage: Stage, name: str, target_s: float, device: str, ckpt_root: Path,
                quick: bool) -> dict[str, Any]:
    """Train (or resume) ``name`` until ``target_s`` seconds of training in total, export it."""
    from restora_core.training import train
    from restora_core.training.sampling import grid_png, image_grid

    done_s = trained_seconds(ckpt_root / name)
    max_s = max(0.0, target_s - done_s)
    command = (f"{stage.command}  # prior {name}: SHIPPED_RECIPES['{name}'], device={device}, "
               f"bf16={device.startswith('cuda')}, {target_s:.0f} s of training in total")
    log_path = stage.out / f"{name}_train.log"
    attempts = [None, False]  # device batches when they fit; on failure, host batches
    for device_data in attempts:
        cfg = prior_config(name, device, stage.out, ckpt_root, quick, max_s, command,
                           device_data)
        stage.log("prior-start", prior=name, max_seconds=round(max_s, 1),
                  already_trained_s=round(done_s, 1), device_data=device_data)
        try:
            with open(log_path, "a") as logf:
                def on_event(event: dict[str, Any], logf=logf) -> None:
                    logf.write(json.dumps(event) + "\n")
                    logf.flush()

                result = train(cfg, callback=on_event)
            break
        except Exception as e:  # noqa: BLE001 - one prior's failure must not cost the others
            stage.log("prior-error", prior=name, error=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=6), device_data=device_data)
            if device_data is False or stage.left() < RESERVE_S.get(device, 8.0) + 10:
                return {"status": "error", "error": f"{type(e).__name__}: {e}"}
            max_s = min(max_s, stage.left() - RESERVE_S.get(device, 8.0))
    if result.samples is not None:
        (stage.out / f"{name}_samples.png").write_bytes(grid_png(image_grid(result.samples)))
    (stage.out / f"{name}_card.json").write_text(json.dumps(result.card, indent=1) + "\n")
    weights = stage.out / f"{name}.safetensors"
    info = {"status": "ok", "steps": result.step, "seconds": round(result.seconds, 1),
            "steps_per_s": round(result.steps_per_s, 2), "stopped_by": result.stopped_by,
            "final_loss": result.final_loss, "file_bytes": weights.stat().st_size,
            "sha256": result.prior_sha256, "resumed_from": result.resumed_from,
            "batches": result.card["training"].get("batches")}
    stage.log("prior-done", prior=name, **info)
    return info


def main(argv: list[str] | None = None) -> int:
    """Run the stage; exit status 0 when every part succeeded."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (flat)")
    ap.add_argument("--budget-s", type=float, default=330.0)
    ap.add_argument("--priors", default=",".join(DEFAULT_PRIORS))
    ap.add_argument("--limits", default=",".join(f"{v:g}" for v in DEFAULT_LIMITS),
                    help="training seconds per prior, scaled down to fit what is left")
    ap.add_argument("--ckpt-root", help="checkpoints (default .cache/checkpoints/gpu_stage)")
    ap.add_argument("--device", help="default: cuda when available, else cpu")
    ap.add_argument("--skip-benchmark", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny runs (a CPU smoke test)")
    args = ap.parse_args(argv)

    import torch

    from benchmarks.training import configure_device

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    names = [n for n in args.priors.split(",") if n]
    limits = [float(v) for v in args.limits.split(",")]
    if len(limits) != len(names):
        ap.error(f"--limits has {len(limits)} values for {len(names)} priors")
    out = Path(args.out)
    ckpt_root = Path(args.ckpt_root or ROOT / ".cache" / "checkpoints" /
                     ("gpu_stage_quick" if args.quick else "gpu_stage"))
    stage = Stage(out, args.budget_s, shlex.join(["python", "-m", "priors.gpu_stage", *argv]))
    configure_device(device)
    stage.log("start", device=device, name=(torch.cuda.get_device_name(0) if kind == "cuda"
                                             else "cpu"), torch=torch.__version__,
              priors=names, limits=limits, ckpt_root=str(ckpt_root))
    ok = True
    if not args.skip_benchmark:
        try:
            run_benchmark(stage, device, args.quick)
        except Exception as e:  # noqa: BLE001 - the priors still get trained
            ok = False
            stage.log("benchmark-error", error=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=6))
        stage.write_summary()
    reserve = RESERVE_S[kind]
    for i, name in enumerate(names):
        rest = limits[i:]
        room = stage.left() - reserve * len(rest)
        target = limits[i] * min(1.0, room / sum(rest)) if room > 0 else 0.0
        if target <= 0 and stage.left() < reserve:
            stage.log("prior-skipped", prior=name, reason="no time left")
            stage.summary["priors"][name] = {"status": "skipped"}
            ok = False
            continue
        info = train_prior(stage, name, target, device, ckpt_root, args.quick)
        stage.summary["priors"][name] = info
        ok &= info["status"] == "ok"
        stage.write_summary()
    stage.log("end", ok=ok, elapsed_s=round(stage.elapsed(), 1))
    stage.write_summary()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
