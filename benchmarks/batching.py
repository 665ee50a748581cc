"""Section 2: batching against the per-image loop of the published code.

The published Restora-Flow code restores one image at a time; ``restore()`` takes a batch. For
each batch size the sampler runs once on that many images; images/s are reported per network
evaluation and extrapolated to the full 190-evaluation sampler (the sampler's time is NFE x the
forward time, section 1), then as a ratio to batch 1.
"""

from __future__ import annotations

import time

import torch

from restora_core import method_nfe, restore
from restora_core.observations import simulate_observation

from .common import Context, PriorUnderTest, prior_under_test, write_section

FULL_NFE = method_nfe("restora_flow", 64, 1)


def measure(put: PriorUnderTest, batch: int, steps: int) -> dict:
    """One row: one restore() of ``batch`` images with ``steps``; images/s at 190 NFE."""
    p = put.prior
    g = torch.Generator().manual_seed(batch)
    clean = torch.rand(batch, p.channels, p.resolution, p.resolution, generator=g) * 2 - 1
    obs = simulate_observation("box", clean, params={"box_size": p.resolution // 4}, generator=g)
    restore(p, obs.y[:1], obs.mask[:1], method="restora_flow", steps=1, corrections=1)  # warm-up
    start = time.perf_counter()
    result = restore(p, obs.y, obs.mask, method="restora_flow", steps=steps, corrections=1, seed=0)
    sec = time.perf_counter() - start
    per_nfe = sec / result.nfe
    return {"model": put.name, "weights": put.weights, "batch": batch, "steps_T": steps,
            "nfe_measured": result.nfe, "seconds": sec, "ms_per_nfe": per_nfe * 1e3,
            "ms_per_image_nfe": per_nfe / batch * 1e3,
            "images_per_s_at_190nfe": batch / (per_nfe * FULL_NFE),
            "extrapolated": result.nfe != FULL_NFE}


def run(ctx: Context) -> list[dict]:
    """Section 2 rows for digits32 and celeba128; writes batching.{parquet,md}."""
    started = time.perf_counter()
    plans = []
    if "digits32" in ctx.models:
        plans.append(("digits32", [1, 4] if ctx.quick else [1, 4, 16, 64], 2 if ctx.quick else 16))
    if "celeba128" in ctx.models:
        plans.append(("celeba128", [1, 2] if ctx.quick else [1, 4, 16, 64], 2))
    rows = []
    for name, batches, steps in plans:
        put = prior_under_test(name)
        model_rows = [measure(put, b, steps) for b in batches]
        base = model_rows[0]["images_per_s_at_190nfe"]
        for r in model_rows:
            r["ratio_to_batch1"] = r["images_per_s_at_190nfe"] / base
        rows += model_rows
    notes = [
        (f"images_per_s_at_190nfe = batch / (seconds / nfe_measured x {FULL_NFE}): each run uses "
        "fewer steps than the full T=64 sampler and is extrapolated per network evaluation "
        "(digits32 T=16, 46 NFE; celeba128 T=2, 4 NFE, because one celeba128 forward at 128^2 "
        "takes ~0.5 s per image on this CPU). Section 1 shows sampler time = NFE x forward time."),
        ("ratio_to_batch1: images/s over the batch-1 images/s of the same model, i.e. the gain over "
        "the published code's one-image-at-a-time loop on this machine."),
        ("One CPU thread (see torch_threads): CPU convolutions are already efficient at batch 1, so "
        "batching gains little here; the GPU table (section 6) is where batching matters."),
        "celeba128 has random weights; digits32 uses the shipped prior if present (weights column).",
    ]
    if ctx.quick:
        notes.append("Quick mode: batches and steps cut down; not the reported number.")
    write_section(ctx, "batching", "2. Batching: images/s against batch size", rows,
                  notes=notes, seconds=time.perf_counter() - started)
    return rows
