"""Training at scale (issue 20): steps/s and samples/s of the training loop on 1 and 2 CPU
workers, where a step's time goes, and what 8 GPUs would give on paper.

    python -m benchmarks.training_scale                 # about 6 minutes on 2 cores
    python -m benchmarks.training_scale --quick         # smoke run, a few seconds, no Ray

Tables (``benchmarks/results/training_scale.md`` and ``.parquet``), measured side by side in one
run on the same models (digits32's and photo32's UNets, random weights, fp32, 1 torch thread):
- rows ``A``: one process. The bare step (forward + backward + AdamW on one fixed, pre-built
  batch) and the loop (``restora_core.training.train`` with its real input path, ``KeyedImages``
  over random uint8 images: keyed crops, flips, noise, times, OT pairing), alternated, several
  repeats; the loop's ``input_fraction`` (time waiting for batches / wall time) per step.
- rows ``B``: ``torch.distributed.all_reduce`` of one tensor the size of each model's gradient
  (fp32) between 2 gloo processes on this machine.
- rows ``R``: the loop under Ray Train (``tasks.ray_training.train_on_ray``) on 1 and 2 CPU
  workers with the same global batch; the scaling efficiency and where the 2-worker step goes.
- rows ``P``: 8 GPUs with DDP over NCCL on paper, from photo32's gradient size and assumed bus
  bandwidths, against photo32's step measured on an H100.
Timings are wall-clock on a shared machine: read differences inside the spread as ties.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from restora_core.models import build_model
from restora_core.training import SHIPPED_RECIPES, TrainConfig, train
from restora_core.training.flow_matching import cfm_loss
from restora_core.training.keyed import KeyedImages, SampleRule

from .common import Context, context_from_args, load_average, write_section

STEM = "training_scale"
MODELS = ("digits32", "photo32")
# (global batch, repeats, timed steps per repeat) per model: one step of photo32 at batch 64 takes
# about 8 s on one core of this box, digits32 about 2 s
FULL = {"digits32": (64, 3, 3), "photo32": (64, 3, 2)}
QUICK = {"digits32": (4, 1, 1)}
RAY_STEPS = {"full": (1, 4), "quick": (1, 1)}  # (warm-up, timed) steps per Ray run
ALLREDUCE_REPS = {"full": 10, "quick": 2}
N_IMAGES, IMAGE_SIDE = 256, 40  # the training set: random uint8 images, cropped to 32
WARMUP = 1
INPUT_BOUND_LIMIT = 0.10  # the loop counts as input-bound above this input_fraction

# photo32's shipped training run: restora_core/weights/photo32_train.log (step-100 windows after
# the first: 7.95-8.24 steps/s; the whole run 1,268 steps in 165 s = 7.68 steps/s), NVIDIA H100
# 80GB HBM3, batch 128, bf16 autocast, data on the device (model card of photo32.safetensors).
H100_PHOTO32_STEPS_PER_S = 8.0
H100_PHOTO32_BATCH = 128
# Assumed NCCL all-reduce bus bandwidths (nccl-tests "busbw"), GB/s; assumptions, not
# measurements. 450: an 8x H100 SXM NVSwitch node at large messages (NVLink 4, 450 GB/s per
# direction); 100: the same node at a ~25 MB message, where NCCL runs well below its peak;
# 40: 8x H100 PCIe without NVLink.
BUS_BW_GBPS = ((450.0, "H100 SXM, NVSwitch, large messages"),
               (100.0, "H100 SXM, NVSwitch, ~25 MB messages (pessimistic)"),
               (40.0, "H100 PCIe, no NVLink"))
BACKWARD_SHARE = 2 / 3  # backward's share of a step (about 2x the forward)


def recipe_config(name: str, batch: int, steps: int, **overrides: Any) -> TrainConfig:
    """``name``'s shipped recipe on the CPU in fp32, batch ``batch``, ``steps`` steps, one log
    record per step, nothing written."""
    fields = {**SHIPPED_RECIPES[name], "device": "cpu", "bf16": False, "batch_size": batch,
              "max_steps": steps, "max_seconds": None, "log_every": 1, "checkpoint_dir": None,
              "output": None, "sample_count": 0, "resume": False, "warmup_steps": 1}
    return TrainConfig.from_dict({**fields, **overrides})


def training_images(channels: int, seed: int = 0) -> list[np.ndarray]:
    """``N_IMAGES`` random uint8 images ``(IMAGE_SIDE, IMAGE_SIDE, channels)``."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, channels), dtype=np.uint8)
            for _ in range(N_IMAGES)]


def keyed_source(cfg: TrainConfig, rank: int = 0, world_size: int = 1) -> KeyedImages:
    """The loop's in-memory keyed input path over :func:`training_images` (crops, flips, OT)."""
    rule = SampleRule(cfg.resolution, cfg.channels, mode="crop", hflip=True)
    return KeyedImages(training_images(cfg.channels), rule, cfg.seed,
                       batch_size=cfg.batch_size, rank=rank, world_size=world_size,
                       ot=cfg.ot_coupling)


DATA_INFO = {"source": f"{N_IMAGES} random uint8 images {IMAGE_SIDE}x{IMAGE_SIDE}",
             "kind": "KeyedImages", "count": N_IMAGES}


def n_parameters(cfg: TrainConfig) -> int:
    """Parameters of ``cfg``'s model (= fp32 gradient elements)."""
    return sum(p.numel() for p in build_model(cfg.architecture()).parameters())


class BareStep:
    """Forward + backward + AdamW of ``cfg``'s model on one fixed batch built by the loop's own
    input path (what the loop would cost with free input, no clipping, no EMA)."""

    def __init__(self, cfg: TrainConfig):
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.architecture()).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.batch = keyed_source(cfg).batch(0)

    def step_seconds(self) -> float:
        """Wall seconds of one step."""
        t0 = time.perf_counter()
        loss = cfm_loss(self.model(self.batch.x_t, self.batch.t), self.batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0


def loop_steps(history: list[dict[str, Any]], warmup: int) -> list[dict[str, float]]:
    """Per-step seconds and input seconds from a ``log_every=1`` history, warm-up left out."""
    out = []
    for rec in history[warmup:]:
        seconds = 1.0 / rec["steps_per_s"]
        out.append({"seconds": seconds, "input_s": rec["input_fraction"] * seconds})
    return out


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def streamed_source(cfg: TrainConfig, folder: Path, plan_dir: Path):
    """A factory of the loop's streaming input path over the PNG ``folder`` (shards read and
    decoded in background threads, ``tasks.training_stream``), for :func:`single_process`."""
    from tasks.training_data import open_training_source, plan_training_data

    streamed = dataclasses.replace(cfg, data=str(folder), data_mode="crop", hflip=True,
                                   scales=None, stream=True)
    data = plan_training_data(streamed, str(plan_dir))

    def make(_cfg: TrainConfig):
        return open_training_source(streamed, data)[0]

    return make


def single_process(name: str, batch: int, repeats: int, steps: int,
                   source=None) -> dict[str, Any]:
    """Bare step and loop, alternated ``repeats`` times, ``steps`` timed steps each; also the
    bare step at half the batch (what each of 2 workers computes). ``source``: a factory of the
    loop's batch source (default: the in-memory keyed path)."""
    cfg = recipe_config(name, batch, WARMUP + steps)
    source = source or keyed_source
    bare, half = BareStep(cfg), BareStep(recipe_config(name, batch // 2, 1))
    for _ in range(WARMUP):
        bare.step_seconds()
        half.step_seconds()
    bare_rates, half_rates, loop_rates, ratios, fractions, input_ms = [], [], [], [], [], []
    for _ in range(repeats):
        half_rates.append(steps / sum(half.step_seconds() for _ in range(steps)))
        b = sum(bare.step_seconds() for _ in range(steps))
        result = train(cfg, source=source(cfg), data_info=dict(DATA_INFO))
        timed = loop_steps(result.history, WARMUP)
        loop = sum(s["seconds"] for s in timed)
        bare_rates.append(steps / b)
        loop_rates.append(len(timed) / loop)
        ratios.append(loop_rates[-1] / bare_rates[-1])
        fractions.append(sum(s["input_s"] for s in timed) / loop)
        input_ms.append(1000 * sum(s["input_s"] for s in timed) / len(timed))
    return {"model": name, "params": n_parameters(cfg), "batch": batch, "repeats": repeats,
            "steps_each": steps, "bare": spread(bare_rates), "bare_half": spread(half_rates),
            "loop": spread(loop_rates),
            "ratio": spread(ratios), "input_fraction": spread(fractions),
            "input_ms": spread(input_ms)}


def _allreduce_worker(rank: int, world: int, init: str, sizes: list[int], reps: int,
                      out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    times: dict[str, list[float]] = {}
    for n in sizes:
        grad = torch.ones(n)
        for _ in range(2):
            dist.all_reduce(grad)
        times[str(n)] = []
        for _ in range(reps):
            dist.barrier()  # both ranks start together: time the collective, not the wait
            t0 = time.perf_counter()
            dist.all_reduce(grad)
            times[str(n)].append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def allreduce_seconds(sizes: list[int], reps: int, world: int = 2) -> dict[int, list[float]]:
    """Seconds of ``reps`` gloo all-reduces of ``n`` float32 per size, ``world`` local processes
    (rank 0's clock)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.json")
        mp.spawn(_allreduce_worker, args=(world, f"file://{tmp}/store", sizes, reps, out),
                 nprocs=world, join=True)
        return {int(k): v for k, v in json.loads(Path(out).read_text()).items()}


def ring_allreduce_seconds(grad_bytes: float, gpus: int, bus_gbps: float) -> float:
    """Ring all-reduce time: each GPU moves 2(N-1)/N x the gradient at the bus bandwidth
    (nccl-tests' definition: busbw = algbw x 2(N-1)/N)."""
    return 2 * (gpus - 1) / gpus * grad_bytes / (bus_gbps * 1e9)


def paper_rows(grad_params: int, gpus: int = 8) -> list[dict[str, Any]]:
    """8-GPU DDP estimate for photo32: per-GPU batch as measured on one H100 (weak scaling)."""
    step = 1.0 / H100_PHOTO32_STEPS_PER_S
    grad_bytes = 4.0 * grad_params
    rows = []
    for i, (bw, what) in enumerate(BUS_BW_GBPS, start=1):
        ar = ring_allreduce_seconds(grad_bytes, gpus, bw)
        # full overlap: DDP's buckets reduce during backward; only what outlasts it shows
        hidden = min(ar, BACKWARD_SHARE * step)
        no_overlap, full_overlap = step / (step + ar), step / (step + ar - hidden)
        rows.append({"row": f"P{i}", "interconnect (assumed)": what, "bus_GBps": bw,
                     "moved_per_gpu_MB": round(2 * (gpus - 1) / gpus * grad_bytes / 1e6, 1),
                     "allreduce_ms": ar * 1e3, "step_ms_1gpu": step * 1e3,
                     "efficiency_no_overlap": no_overlap, "efficiency_full_overlap": full_overlap,
                     "samples_per_s_8gpu": f"{gpus * H100_PHOTO32_BATCH * no_overlap / step:.0f}-"
                                           f"{gpus * H100_PHOTO32_BATCH * full_overlap / step:.0f}"})
    return rows


def ray_available() -> str | None:
    """None when ``tasks.ray_training.train_on_ray`` can be imported, else why not."""
    try:
        from tasks.ray_training import ScaleConfig, train_on_ray  # noqa: F401
    except ImportError as e:
        return f"not measured: tasks.ray_training.train_on_ray is not on this commit ({e})"
    return None


def ray_run(name: str, batch: int, workers: int, warmup: int, steps: int, data_dir: Path,
            run_dir: Path) -> dict[str, Any]:
    """The loop under Ray Train (Ray connected) on ``workers`` CPU workers with 1 CPU each,
    global batch ``batch``, over the PNG folder ``data_dir``: rank 0's per-step records after
    ``warmup``."""
    from tasks.ray_training import ScaleConfig, train_on_ray
    from tasks.training_data import plan_training_data

    cfg = recipe_config(name, batch, warmup + steps, data=str(data_dir), data_mode="crop",
                        hflip=True, scales=None, checkpoint_dir=str(run_dir),
                        checkpoint_every=0, keep_checkpoints=1)
    data = plan_training_data(cfg, str(run_dir / "data-plan"))
    t0 = time.perf_counter()
    summary = train_on_ray(cfg, data, ScaleConfig(workers=workers, cpus_per_worker=1,
                                                  gpus_per_worker=0, max_failures=0))
    wall = time.perf_counter() - t0
    timed = loop_steps(summary["history"], warmup)
    seconds = [s["seconds"] for s in timed]
    total = sum(seconds)
    return {"steps": len(timed), "rates": [1.0 / s for s in seconds],
            "steps_per_s": len(timed) / total,
            "input_fraction": sum(s["input_s"] for s in timed) / total, "wall_s": wall,
            "workers_in_card": summary["card"]["training"].get("workers")}


def write_png_folder(folder: Path, channels: int) -> Path:
    """:func:`training_images` as PNG files in ``folder`` (what Ray workers read)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(training_images(channels)):
        Image.fromarray(img[..., 0] if channels == 1 else img).save(folder / f"{i:04d}.png")
    return folder


def _row_rate(row: str, model: str, setup: str, batch: int, workers: int, repeats: int | None,
              steps: int, rates: tuple[float, float, float], input_fraction: float | None
              ) -> dict[str, Any]:
    return {"row": row, "model": model, "setup": setup, "workers": workers,
            "global_batch": batch, "per_worker_batch": batch // workers, "repeats": repeats,
            "steps_timed": steps, "steps_per_s": rates[0], "steps_per_s_min": rates[1],
            "steps_per_s_max": rates[2], "samples_per_s": rates[0] * batch,
            "input_fraction": input_fraction}


def _relative_half_range(values: tuple[float, float, float]) -> float:
    return (values[2] - values[1]) / (2 * values[0])


def ratio_verdict(single: dict[str, Any]) -> str:
    """Tie, or which of loop and bare step is faster beyond the noise (the repeats' spread)."""
    med, lo, hi = single["ratio"]
    if single["repeats"] < 2:
        return "one repeat, so no spread to judge it by"
    noise = max(_relative_half_range(single["bare"]), _relative_half_range(single["loop"]))
    if lo <= 1.0 <= hi or abs(med - 1.0) <= noise:
        return f"a tie (within the repeats' spread, +-{noise:.0%})"
    return (f"the loop is {'slower' if med < 1 else 'faster'} beyond the repeats' spread "
            f"(+-{noise:.0%})")


def _fmt_range(values: tuple[float, float, float], digits: int = 3) -> str:
    return f"{values[0]:.{digits}g} ({values[1]:.{digits}g}-{values[2]:.{digits}g})"


def run(ctx: Context, models: tuple[str, ...], sections: set[str], stem: str = STEM) -> Path:
    """Measure the chosen sections and write ``training_scale.md`` / ``.parquet``."""
    plan = QUICK if ctx.quick else FULL
    mode = "quick" if ctx.quick else "full"
    rows: list[dict[str, Any]] = []
    ratio_rows, ar_rows, scale_rows, notes = [], [], [], []
    singles: dict[str, dict[str, Any]] = {}
    params = {m: n_parameters(recipe_config(m, 8, 1)) for m in models}
    row_of: dict[tuple[str, str], str] = {}

    def emit(**event: Any) -> None:
        print(json.dumps({"event": "training-scale", **event}, default=str), flush=True)

    if "stream" in sections:
        name = models[0]
        batch, repeats, steps = plan.get(name, plan[next(iter(plan))])
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_png_folder(Path(tmp) / "pngs", recipe_config(name, 8, 1).channels)
            make = streamed_source(recipe_config(name, batch, 1), folder, Path(tmp) / "plan")
            s = single_process(name, batch, repeats, steps, source=make)
        emit(section="stream", **{k: v for k, v in s.items()})
        rows.append(_row_rate("S1", name, "bare step, 1 process", batch, 1, repeats, steps,
                              s["bare"], None))
        rows.append(_row_rate("S2", name, "loop (StreamingImages over a PNG folder), 1 process",
                              batch, 1, repeats, steps, s["loop"], s["input_fraction"][0]))
        bound = s["input_fraction"][0] > INPUT_BOUND_LIMIT
        ratio_rows.append({"rows": "S2 / S1", "model": name, "batch": batch,
                           "loop_over_bare": _fmt_range(s["ratio"]),
                           "input_fraction": _fmt_range(s["input_fraction"], 2),
                           "input_ms_per_step": _fmt_range(s["input_ms"], 3),
                           "not_input_bound": "missed" if bound else "met",
                           "_verdict": ratio_verdict(s)})
    if "single" in sections:
        for i, name in enumerate(models):
            batch, repeats, steps = plan.get(name, plan[next(iter(plan))])
            s = singles[name] = single_process(name, batch, repeats, steps)
            emit(section="single", **{k: v for k, v in s.items()})
            ids = (f"A{3 * i + 1}", f"A{3 * i + 2}", f"A{3 * i + 3}")
            row_of[(name, "bare")], row_of[(name, "loop")], row_of[(name, "half")] = ids
            rows.append(_row_rate(ids[0], name, "bare step, 1 process", batch, 1, repeats,
                                  steps, s["bare"], None))
            rows.append(_row_rate(ids[1], name, "loop (KeyedImages), 1 process", batch, 1,
                                  repeats, steps, s["loop"], s["input_fraction"][0]))
            rows.append(_row_rate(ids[2], name, "bare step at half the batch, 1 process",
                                  batch // 2, 1, repeats, steps, s["bare_half"], None))
            bound = s["input_fraction"][0] > INPUT_BOUND_LIMIT
            ratio_rows.append({"rows": f"{ids[1]} / {ids[0]}", "model": name, "batch": batch,
                               "loop_over_bare": _fmt_range(s["ratio"]),
                               "input_fraction": _fmt_range(s["input_fraction"], 2),
                               "input_ms_per_step": _fmt_range(s["input_ms"], 3),
                               "not_input_bound": "missed" if bound else "met",
                               "_verdict": ratio_verdict(s)})
    allreduce: dict[str, tuple[float, float, float]] = {}
    if "allreduce" in sections:
        sizes = sorted(set(params.values()))
        times = allreduce_seconds(sizes, ALLREDUCE_REPS[mode])
        for i, name in enumerate(models, start=1):
            allreduce[name] = spread(times[params[name]])
            emit(section="allreduce", model=name, seconds=times[params[name]])
            bare_half = None
            if name in singles:  # the bare step at half the batch: one of 2 workers' compute
                bare_half = 1.0 / singles[name]["bare_half"][0]
            ar_rows.append({"row": f"B{i}", "model": name, "grad_MB": 4 * params[name] / 1e6,
                            "allreduce_ms": _fmt_range(tuple(1e3 * v for v in allreduce[name])),
                            "half_batch_step_ms": None if bare_half is None else 1e3 * bare_half,
                            "allreduce_over_half_batch_step": None if bare_half is None
                            else allreduce[name][0] / bare_half})
    if "ray" in sections:
        why = ray_available()
        if why:
            notes.append(f"Rows R: {why}.")
            for name in models:
                scale_rows.append({"rows": "R", "model": name, "efficiency": why})
        else:
            warmup, steps = RAY_STEPS[mode]
            from flows.ray_runtime import ray_connection

            with tempfile.TemporaryDirectory() as tmp, ray_connection(num_cpus=2):
                k = 0
                for name in models:
                    batch = plan.get(name, plan[next(iter(plan))])[0]
                    cfg = recipe_config(name, batch, 1)
                    folder = write_png_folder(Path(tmp) / name, cfg.channels)
                    got = {}
                    for workers in (1, 2):
                        k += 1
                        got[workers] = r = ray_run(name, batch, workers, warmup, steps, folder,
                                                   Path(tmp) / f"run-{name}-{workers}")
                        emit(section="ray", model=name, workers=workers, **r)
                        row_of[(name, f"ray{workers}")] = f"R{k}"
                        rows.append(_row_rate(f"R{k}", name, f"Ray Train, {workers} CPU worker"
                                              + ("s" if workers > 1 else ""), batch, workers,
                                              None, r["steps"], spread(r["rates"]),
                                              r["input_fraction"]))
                    half = singles.get(name, {}).get("bare_half")
                    scale_rows.append(_scale_row(name, batch, got, allreduce.get(name),
                                                 half and 1.0 / half[0], row_of))
    paper = paper_rows(params.get("photo32") or n_parameters(recipe_config("photo32", 8, 1))) \
        if "paper" in sections else []
    notes += _claims(ratio_rows, ar_rows, scale_rows, paper)
    notes += _ray_overhead_claims(rows, models, row_of)
    notes.append(f"Load average (1, 5, 15 min) when the run ended: {load_average()} (at the "
                 "start: the header); this box's 2 cores are shared with other sessions.")
    seconds = time.perf_counter() - ctx.started
    path = write_section(
        ctx, stem, "Training input: the streamed loop against the bare step"
        if sections == {"stream"} else
        "Training at scale: 1 and 2 CPU workers, and 8 GPUs on paper", rows,
        extra_tables={"Loop vs bare step (one process; is the loop input-bound?)":
                      [{k: v for k, v in r.items() if not k.startswith("_")} for r in ratio_rows],
                      "All-reduce of one gradient, 2 gloo processes on this machine": ar_rows,
                      "Scaling efficiency and where the 2-worker step goes": scale_rows,
                      "8 GPUs on paper (photo32, DDP over NCCL, ring all-reduce)": paper},
        notes=notes, seconds=seconds, body="" if sections == {"stream"} else BODY)
    emit(section="report", path=str(path))
    return path


def _scale_row(name: str, batch: int, got: dict[int, dict[str, Any]],
               allreduce: tuple[float, float, float] | None, half_step: float | None,
               row_of: dict[tuple[str, str], str]) -> dict[str, Any]:
    """Efficiency of 2 workers over 1 at the same global batch, and the 2-worker step split into
    input (the loop's input_fraction), all-reduce (rows B), compute (the bare step at half the
    batch, alone in one process: rows A) and the rest (both cores busy at once, Ray's processes,
    DDP's hooks, clipping, EMA, the per-step log all-reduce)."""
    one, two = got[1], got[2]
    eff = two["steps_per_s"] / (2 * one["steps_per_s"])
    lo = min(two["rates"]) / (2 * max(one["rates"]))
    hi = max(two["rates"]) / (2 * min(one["rates"]))
    step = 1.0 / two["steps_per_s"]
    parts = {"input": two["input_fraction"] * step,
             "allreduce": allreduce[0] if allreduce else None, "compute": half_step}
    rest = step - sum(v for v in parts.values() if v is not None)
    row = {"rows": f"{row_of[(name, 'ray2')]} vs {row_of[(name, 'ray1')]}", "model": name,
           "global_batch": batch, "efficiency": f"{eff:.2f} ({lo:.2f}-{hi:.2f})",
           "step_ms_2w": 1e3 * step}
    for key, value in {**parts, "rest": rest}.items():
        row[f"{key}_ms"] = None if value is None else 1e3 * value
    for key, value in {**parts, "rest": rest}.items():
        row[f"{key}_share"] = None if value is None else value / step
    return row


def _ray_overhead_claims(rows: list[dict[str, Any]], models: tuple[str, ...],
                         row_of: dict[tuple[str, str], str]) -> list[str]:
    """One Ray Train worker against the same loop in this process (rows R against rows A)."""
    by_id = {r["row"]: r for r in rows}
    out = []
    for name in models:
        ray_id, loop_id = row_of.get((name, "ray1")), row_of.get((name, "loop"))
        if not ray_id or not loop_id:
            continue
        ray, loop = by_id[ray_id], by_id[loop_id]
        overlap = (ray["steps_per_s_min"] <= loop["steps_per_s_max"]
                   and loop["steps_per_s_min"] <= ray["steps_per_s_max"])
        faster = "slower" if ray["steps_per_s"] < loop["steps_per_s"] else "faster"
        verdict = ("a tie (their ranges overlap)" if overlap else
                   f"Ray Train's worker is {faster} (the ranges do not overlap)")
        out.append(f"{name}, one Ray Train worker against the loop in this process (rows {ray_id} "
                   f"vs {loop_id}): {ray['steps_per_s']:.3g} vs {loop['steps_per_s']:.3g} "
                   f"steps/s, {verdict}.")
    return out


def _claims(ratio_rows: list[dict], ar_rows: list[dict], scale_rows: list[dict],
            paper: list[dict]) -> list[str]:
    """The run's findings, each naming the rows it comes from."""
    out = []
    for r in ratio_rows:
        out.append(f"{r['model']} (rows {r['rows']}): loop / bare step = {r['loop_over_bare']}, "
                   f"{r['_verdict']}; the loop waits for input {r['input_fraction']} of its "
                   f"time ({r['input_ms_per_step']} ms a step): not input-bound "
                   f"(input_fraction <= {INPUT_BOUND_LIMIT}): {r['not_input_bound']}.")
    for r in ar_rows:
        if r["allreduce_over_half_batch_step"] is not None:
            out.append(f"{r['model']} (row {r['row']}): one all-reduce of {r['grad_MB']:.1f} MB "
                       f"takes {r['allreduce_ms']} ms, {r['allreduce_over_half_batch_step']:.1%}"
                       f" of the bare step at half the batch ({r['half_batch_step_ms']:.0f} ms, "
                       "one of 2 workers' compute).")
    for r in scale_rows:
        if "step_ms_2w" in r:
            out.append(f"{r['model']} (rows {r['rows']}): efficiency (samples/s at 2) / "
                       f"(2 x samples/s at 1) = {r['efficiency']}; the 2-worker step "
                       f"({r['step_ms_2w']:.0f} ms) is {r['input_share']:.1%} input, "
                       + ("" if r["allreduce_share"] is None
                          else f"{r['allreduce_share']:.1%} all-reduce (row B), ")
                       + ("" if r["compute_share"] is None
                          else f"{r['compute_share']:.1%} compute (the bare step at half the "
                               "batch, rows A), ")
                       + f"{r['rest_share']:.1%} the rest.")
    if paper:
        effs = [p["efficiency_no_overlap"] for p in paper]
        out.append(f"8 GPUs on paper (rows {paper[0]['row']}-{paper[-1]['row']}): efficiency "
                   f"{min(effs):.3f}-{max(effs):.4f} with no overlap, "
                   f"{min(p['efficiency_full_overlap'] for p in paper):.2f} with full overlap; the all-reduce ({paper[0]['allreduce_ms']:.2f}-"
                   f"{paper[-1]['allreduce_ms']:.2f} ms) against a {paper[0]['step_ms_1gpu']:.0f} "
                   "ms step. An estimate from assumed bandwidths, not a measurement.")
    return out


BODY = f"""### How to read it

- Machine: 2 cores shared with other sessions (see the load average above); every measured
  process ran 1 torch thread, and a Ray worker got 1 CPU, so the 2-worker runs use both cores
  while Ray's own processes (GCS, raylet, the driver) and other users share them too.
- Models: digits32's and photo32's UNets (restora_core/training/config.py SHIPPED_RECIPES)
  with random weights, fp32, OT pairing on, AdamW. Data: {N_IMAGES} random uint8 images of
  {IMAGE_SIDE}x{IMAGE_SIDE}, cropped to 32 with flips by the keyed input path (in memory).
- Table 1, rows A: steps/s as median (min-max) over repeats (each loop run: {WARMUP} warm-up
  step, then the timed steps); bare and loop alternate so drift hits both. Rows R: median (min-max)
  over the timed steps of one run (rank 0's log records, one per step).
- samples/s = steps/s x global batch. Efficiency = (samples/s at 2 workers) / (2 x samples/s at
  1 worker), same global batch (each of 2 workers trains half of it).
- Where the 2-worker step goes: input = the loop's input_fraction x step; all-reduce = row B's
  median (DDP reduces during backward, so on paper part of it overlaps the compute; on 1 core
  per worker the gloo thread and the backward share that core); compute = the bare step at half
  the global batch, measured alone in one process (rows A, "half the batch"); the rest = what
  is left: both cores busy at once (plus Ray's own processes), DDP's hooks, clipping, EMA and
  the per-step log all-reduce of 2 numbers.

### 8 GPUs on paper

- Step time on one GPU: photo32's shipped training run, batch {H100_PHOTO32_BATCH}, bf16
  autocast, data on the device, NVIDIA H100 80GB HBM3: `restora_core/weights/photo32_train.log`
  (7.95-8.24 steps/s in each 100-step window after the first; 1,268 steps in 165 s = 7.68
  steps/s overall) and the model card of `photo32.safetensors`; taken as
  {H100_PHOTO32_STEPS_PER_S:.0f} steps/s.
- Weak scaling: each GPU keeps batch {H100_PHOTO32_BATCH} (global {8 * H100_PHOTO32_BATCH}),
  so its compute per step stays at 1/{H100_PHOTO32_STEPS_PER_S:.0f} s and the only addition is
  the gradient all-reduce. Splitting batch {H100_PHOTO32_BATCH} over 8 GPUs (16 each) is not
  estimated: a 16-sample step on an H100 is bound by kernel launches rather than by its share of
  the FLOPs, and no such step was measured.
- Ring all-reduce: each GPU sends (and receives) 2(N-1)/N x S bytes, S = 4 bytes x parameters
  (fp32 gradients under bf16 autocast), N = 8: 1.75 x 25.9 MB = 45.3 MB. Time = 2(N-1)/N x S /
  busbw, with busbw NCCL's bus bandwidth as nccl-tests reports it (its definition: busbw =
  algbw x 2(N-1)/N). The bandwidths in rows P are assumptions, not measurements: about 450 GB/s
  for 8x H100 SXM on NVSwitch at large messages (NVLink 4: 450 GB/s per direction; public
  nccl-tests all_reduce_perf results for such nodes are in this range), 100 GB/s for the same
  node at a 25 MB message (below the peak; pessimistic), and 40 GB/s for H100 PCIe without NVLink.
- No overlap: efficiency = t_step / (t_step + t_allreduce). Full overlap: DDP reduces its
  25 MB buckets while the backward (taken as {BACKWARD_SHARE:.2f} of the step) still runs, so
  only the part of the all-reduce longer than the backward shows:
  t_step / (t_step + max(0, t_allreduce - t_backward)). Per-call latency (tens of
  microseconds for 2 buckets) is left out.
"""


def main(argv: list[str] | None = None) -> int:
    """Measure and write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.training_scale",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run of a few seconds (digits32 at batch 4, no Ray)")
    ap.add_argument("--out", default=None,
                    help="output folder (default benchmarks/results, or benchmarks/results/quick)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--stem", default=STEM, help=f"file name stem (default {STEM})")
    ap.add_argument("--models", default=None,
                    help="comma list (default digits32,photo32; quick: digits32)")
    ap.add_argument("--sections", default=None,
                    help="comma list of single,stream,allreduce,ray,paper (default: all but "
                         "stream; quick: no ray)")
    args = ap.parse_args(argv)
    ctx = context_from_args("benchmarks.training_scale", argv, args)
    models = tuple(m for m in (args.models or ",".join(
        QUICK if args.quick else MODELS)).split(",") if m)
    unknown = [m for m in models if m not in SHIPPED_RECIPES]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; expected some of {sorted(SHIPPED_RECIPES)}")
    sections = set((args.sections or ("single,allreduce,paper" if args.quick else
                                      "single,allreduce,ray,paper")).split(","))
    bad = sections - {"single", "stream", "allreduce", "ray", "paper"}
    if bad:
        raise SystemExit(f"unknown sections {sorted(bad)}")
    run(ctx, models, sections, args.stem)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
