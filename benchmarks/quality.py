"""Section 5: quality per task on the shipped evaluation sets, at published settings and at
matched budgets.

Tasks: box inpainting (centred hole of 1/4 of the side, 8x8 at 32x32), random inpainting (70% of
pixels missing), x2 super-resolution (decimation) and denoising (sigma 0.2); measurement noise
sigma_y = 0.01 on the known pixels of the first three. Every method that does the task runs at its
published settings for the task (the method registry, ``restora methods --task T``) and again at
matched budgets of about 64 and 190 network evaluations (its ``steps`` chosen so the cost is
nearest the budget, every other parameter as published; mask_ode at 190 is the equal-cost ablation
of Restora-Flow's corrections). A classical baseline per task: biharmonic inpainting, bicubic
interpolation through the samples, wavelet shrinkage (BayesShrink). Metrics: PSNR, PSNR over the
unknown pixels, SSIM, LPIPS (AlexNet on 64x64 bilinear upsamples), seconds per image; paired
per-image differences against Restora-Flow at its published settings with 95% t-intervals.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from restora_core import restore
from restora_core.metrics import LPIPS, lpips_available, psnr, psnr_hole, ssim
from restora_core.observations import simulate_observation
from restora_core.samplers import get_method, methods_for_task

from .common import (
    REPO_ROOT,
    Context,
    checkpoint_path,
    eval_images,
    load_checkpoint,
    prior_under_test,
    save_checkpoint,
    write_section,
)

SIGMA_Y = 0.01
TASKS: dict[str, dict[str, Any]] = {  # task -> its parameters (box size is set per image size)
    "box": {}, "random": {"p": 0.7}, "superres": {"factor": 2}, "denoise": {"sigma": 0.2}}
CLASSICAL = {"box": "biharmonic", "random": "biharmonic", "superres": "bicubic",
             "denoise": "wavelet"}
REFERENCE = {"denoise": "restora_flow_denoise"}  # the Restora-Flow method per task (else restora_flow)
BUDGETS = (64, 190)
QUICK_BUDGETS = (6, 12)
QUICK_STEPS = 4  # --quick only: a smoke run, not a quality number
LPIPS_PATH = REPO_ROOT / ".cache" / "lpips_alexnet.safetensors"
LPIPS_SIDE = 64
PARTIAL_DIR = REPO_ROOT / ".cache" / "bench" / "quality"  # finished (set, task) checkpoints
DEFAULT_COUNTS = {"digits32": 32, "photo32": 20}


def subset(name: str, quick: bool, full_count: dict[str, int]) -> list[int]:
    """Evenly spaced indices into the 64-image evaluation set (all digits / all five photos)."""
    n = 4 if quick else full_count.get(name, 64)
    step = 64 // n
    return list(range(0, step * n, step))[:n]


def biharmonic(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """scikit-image's biharmonic fill of the unknown pixels (mask == 0), per image, in [-1, 1]."""
    from skimage.restoration import inpaint_biharmonic

    out = []
    for yi, mi in zip(y, mask):
        img = yi.permute(1, 2, 0).numpy().astype(np.float64)
        filled = inpaint_biharmonic(img, mi[0].numpy() < 0.5, channel_axis=-1)
        out.append(torch.from_numpy(filled).permute(2, 0, 1).float())
    return torch.stack(out).clamp(-1, 1)


def bicubic(y: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic interpolation through the samples on the top-left pixel of each factor x factor block."""
    low = y[..., ::factor, ::factor]
    n_h, n_w = low.shape[-2:]
    # align_corners=True on (n-1)*factor+1 points puts sample i exactly on pixel i*factor.
    up = F.interpolate(low, size=((n_h - 1) * factor + 1, (n_w - 1) * factor + 1),
                       mode="bicubic", align_corners=True)
    up = F.pad(up, (0, factor - 1, 0, factor - 1), mode="replicate")
    return up.clamp(-1, 1)


def wavelet(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """scikit-image's wavelet shrinkage (BayesShrink, soft thresholds) with the known noise level."""
    from skimage.restoration import denoise_wavelet

    out = []
    for yi in y:
        img = yi.permute(1, 2, 0).numpy().astype(np.float64)
        den = denoise_wavelet(img, sigma=sigma, channel_axis=-1, method="BayesShrink",
                              mode="soft", rescale_sigma=True)
        out.append(torch.from_numpy(den).permute(2, 0, 1).float())
    return torch.stack(out).clamp(-1, 1)


def classical(task: str, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The task's classical baseline on a batch."""
    if task == "superres":
        return bicubic(y, TASKS["superres"]["factor"])
    if task == "denoise":
        return wavelet(y, TASKS["denoise"]["sigma"])
    return biharmonic(y, mask)


def matched_steps(method: str, task: str, budget: int) -> int:
    """``steps`` whose cost, every other parameter at the task's published value, is nearest ``budget``.

    Ties go to fewer steps. The search runs far enough for the denoising path, which spends only
    a fraction sigma of its grid.
    """
    entry = get_method(method)
    costs = {}
    for steps in range(1, 10 * budget + 10):
        try:
            costs[steps] = entry.cost(task, {"steps": steps})
        except ValueError:  # below the method's minimum number of steps
            continue
    return min(costs, key=lambda s: (abs(costs[s] - budget), s))


def runs_for(task: str, quick: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, setting, parameter overrides) for every flow run of ``task``."""
    runs = []
    for method in methods_for_task(task):
        published = {"steps": QUICK_STEPS} if quick else {}
        runs.append((method, "published", published))
        steps = published.get("steps", get_method(method).defaults(task)["steps"])
        for budget in QUICK_BUDGETS if quick else BUDGETS:
            matched = matched_steps(method, task, budget)
            if matched != steps:  # else the published row is this budget's row too
                runs.append((method, f"~{budget} NFE", {"steps": matched}))
    return runs


def _metrics(x, ref, mask, lpips_net, device: str) -> dict[str, torch.Tensor]:
    m = {"psnr": psnr(x, ref), "ssim": ssim(x, ref),
         "psnr_hole": psnr_hole(x, ref, mask) if mask is not None
         else torch.full((x.shape[0],), math.nan)}
    if lpips_net is not None:
        def up(z):
            return F.interpolate(z, size=(LPIPS_SIDE, LPIPS_SIDE), mode="bilinear",
                                 align_corners=False).to(device)

        with torch.inference_mode():
            m["lpips"] = lpips_net(up(x), up(ref)).cpu()
    return m


def _observe(task: str, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    params = dict(TASKS[task])
    if task == "box":
        params["box_size"] = ref.shape[-1] // 4
    # One generator per image, seeded by task and image position: the same degraded inputs for
    # every method.
    gens = [torch.Generator().manual_seed(20250101 + 1000 * list(TASKS).index(task) + i)
            for i in range(ref.shape[0])]
    obs = simulate_observation(task, ref, params=params, generator=gens, sigma_y=SIGMA_Y)
    return obs.y, obs.mask, obs.sigma


def _figure(path: Path, task: str, panels: list[tuple[str, dict[str, torch.Tensor]]],
            count: int = 4, *, labels: list[str] | None = None, heat: tuple[str, ...] = (),
            title: str | None = None) -> None:
    """Rows ``labels`` (default: every key) by up to ``count`` images per panel; rows in ``heat``
    are drawn as channel-mean heat maps on a scale of their own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or list(panels[0][1])
    cols = sum(min(count, imgs["reference"].shape[0]) for _, imgs in panels)
    fig, axes = plt.subplots(len(labels), cols, figsize=(1.1 * cols + 1.6, 1.1 * len(labels)),
                             squeeze=False)
    c0 = 0
    for name, imgs in panels:
        n = min(count, imgs["reference"].shape[0])
        for r, label in enumerate(labels):
            for c in range(n):
                ax = axes[r][c0 + c]
                if label in heat:
                    ax.imshow(imgs[label][c].mean(0).numpy(), cmap="magma", vmin=0,
                              vmax=float(imgs[label][:n].mean(1).max()))
                else:
                    img = ((imgs[label][c].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
                    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0,
                              vmax=1, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0 and c == 0:
                    ax.set_title(name, fontsize=7, loc="left")
                if c0 + c == 0:
                    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
        c0 += n
    fig.suptitle(title or f"{task}: each method at its published settings", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _partial_path(ctx: Context, name: str, task: str, indices: list[int], weights: str) -> Path:
    """Checkpoint file of one (set, task): keyed by everything that changes its numbers."""
    return checkpoint_path(PARTIAL_DIR, f"{name}_{task}",
                           (name, task, indices, weights, ctx.quick, runs_for(task, ctx.quick)))


def evaluate(ctx: Context, name: str, indices: list[int], batch: int, lpips_net,
             device: str, tasks: tuple[str, ...] = tuple(TASKS)
             ) -> tuple[list, list, dict[str, dict[str, torch.Tensor]]]:
    """(summary rows, per-image rows, images per task for the figures) for one evaluation set.

    Each finished task is saved under ``PARTIAL_DIR`` and reused by a later run with the same
    images, weights and runs, so a run cut off after hours loses at most one task.
    """
    put = prior_under_test(name)
    prior = put.prior.to(device)
    ref = eval_images(name, indices)
    summary, per_image, shown = [], [], {}
    for task in tasks:
        partial = _partial_path(ctx, name, task, indices, put.weights)
        saved = load_checkpoint(partial)
        if saved is not None:
            summary += saved["summary"]
            per_image += saved["per_image"]
            shown[task] = saved["shown"]
            print(f"quality: {name} {task}: reused {partial}", flush=True)
            continue
        task_summary, task_per_image = [], []
        y, mask, sigma = _observe(task, ref)
        shown[task] = {"reference": ref, "input": y if mask is None else y * mask}
        rows = [(CLASSICAL[task], "classical", None), *runs_for(task, ctx.quick)]
        for method, setting, overrides in rows:
            start = time.perf_counter()
            if overrides is None:
                x, nfe, params = classical(task, y, mask), 0, {}
            else:
                parts = []
                for i in range(0, ref.shape[0], batch):
                    j = min(i + batch, ref.shape[0])
                    res = restore(prior, y[i:j], None if mask is None else mask[i:j],
                                  method=method, task=task, seed=[int(k) for k in indices[i:j]],
                                  sigma=sigma, sigma_y=SIGMA_Y, **overrides)
                    parts.append(res.images.float().cpu())
                x, nfe, params = torch.cat(parts), res.nfe, res.params
            sec = time.perf_counter() - start
            if setting in ("classical", "published"):
                shown[task][method] = x
            m = _metrics(x, ref, mask, lpips_net, device)
            row = {"dataset": name, "task": task, "method": method, "setting": setting,
                   "params": " ".join(f"{k}={v}" for k, v in params.items()), "nfe": nfe,
                   "images": ref.shape[0], "s_per_image": sec / ref.shape[0], "device": device,
                   "prior_weights": put.weights if overrides is not None else "none"}
            for k, v in m.items():
                v = v.double()
                finite = v[torch.isfinite(v)]
                row[k] = float(finite.mean()) if finite.numel() else math.nan
                row[f"{k}_sem"] = float(finite.std() / math.sqrt(finite.numel())) \
                    if finite.numel() > 1 else math.nan
            task_summary.append(row)
            print(f"quality: {name} {task} {method} {setting}: {sec:.0f} s, "
                  f"psnr {row['psnr']:.2f}", flush=True)
            for j, idx in enumerate(indices):
                task_per_image.append({"dataset": name, "task": task, "method": method,
                                  "setting": setting, "index": int(idx),
                                  **{k: float(v[j]) for k, v in m.items()}})
        save_checkpoint(partial, {"summary": task_summary, "per_image": task_per_image,
                                  "shown": shown[task]})
        summary += task_summary
        per_image += task_per_image
    return summary, per_image, shown


def _paired(other, base, *, wins: bool) -> dict[str, Any]:
    """Mean per-image difference ``other - base`` and its 95% t half-width per metric (both
    indexed by image); with ``wins``, also on how many images ``other`` is better."""
    row: dict[str, Any] = {}
    for metric in ("psnr", "psnr_hole", "lpips"):
        if metric not in other:
            continue
        diff = (other[metric] - base[metric]).dropna()
        if len(diff) < 2:
            continue
        row[f"d_{metric}"] = float(diff.mean())
        row[f"d_{metric}_ci95"] = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1)
                                        / math.sqrt(len(diff)))
        if wins:
            better = diff < 0 if metric == "lpips" else diff > 0
            row[f"{metric}_better_on"] = f"{int(better.sum())}/{len(diff)}"
    return row


def paired_differences(per_image: list[dict]) -> list[dict]:
    """Each run minus Restora-Flow at its published settings, image by image, with 95% t-intervals."""
    import pandas as pd

    df = pd.DataFrame(per_image)
    out = []
    for (dataset, task), group in df.groupby(["dataset", "task"], sort=False):
        ref_method = REFERENCE.get(task, "restora_flow")
        base = group[(group.method == ref_method) & (group.setting == "published")].set_index("index")
        for (method, setting), other in group.groupby(["method", "setting"], sort=False):
            if method == ref_method and setting == "published":
                continue
            other = other.set_index("index")
            row = {"dataset": dataset, "task": task, "method": method, "setting": setting,
                   "against": f"{ref_method} published"}
            row.update(_paired(other, base, wins=True))
            out.append(row)
    return out


def paired_at_budgets(per_image: list[dict], summary: list[dict]) -> list[dict]:
    """Each method minus Restora-Flow at the same budget (~64, ~190 NFE), image by image.

    Restora-Flow's row at a budget is its matched row, or its published row when that already
    costs about the budget (box: 64 steps with corrections = 190 NFE)."""
    import pandas as pd

    df = pd.DataFrame(per_image)
    nfe = {(r["dataset"], r["task"], r["method"], r["setting"]): r["nfe"] for r in summary}
    out = []
    for (dataset, task), group in df.groupby(["dataset", "task"], sort=False):
        ref_method = REFERENCE.get(task, "restora_flow")
        for budget in BUDGETS:
            label = f"~{budget} NFE"
            ref_setting = next((s for s in (label, "published")
                                if abs(nfe.get((dataset, task, ref_method, s), -99) - budget) <= 5),
                               None)
            if ref_setting is None:
                continue
            base = group[(group.method == ref_method) & (group.setting == ref_setting)]
            base = base.set_index("index")
            for (method, setting), other in group.groupby(["method", "setting"], sort=False):
                cost = nfe.get((dataset, task, method, setting), -99)
                if method == ref_method or abs(cost - budget) > 5:
                    continue
                other = other.set_index("index")
                row = {"dataset": dataset, "task": task, "budget": label, "method": method,
                       "setting": setting, "nfe": cost,
                       "against": f"{ref_method} {ref_setting} "
                                  f"({nfe[(dataset, task, ref_method, ref_setting)]} NFE)"}
                row.update(_paired(other, base, wins=False))
                out.append(row)
    return out


def run(ctx: Context, counts: dict[str, int] | None = None) -> list[dict]:
    """Section 5 rows for digits32 and photo32; writes quality.{parquet,md}, figures, per-image."""
    started = time.perf_counter()
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lpips_net = LPIPS(LPIPS_PATH).to(device) if lpips_available(LPIPS_PATH) else None
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    batches = dict(counts)
    summary, per_image, panels = [], [], []
    for name in ("digits32", "photo32"):
        idx = subset(name, ctx.quick, counts)
        s, p, shown = evaluate(ctx, name, idx, batches[name], lpips_net, device)
        summary += s
        per_image += p
        panels.append((name, shown))
    for task in TASKS:
        _figure(ctx.out_dir / f"quality_{task}.png", task,
                [(name, shown[task]) for name, shown in panels])
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(per_image), ctx.out_dir / "quality_per_image.parquet")
    paired = paired_differences(per_image)
    pq.write_table(pa.Table.from_pylist(paired), ctx.out_dir / "quality_paired.parquet")
    untrained = sorted({r["dataset"] for r in summary if r["prior_weights"].startswith("random")})
    notes = [
        ("Tasks: box = centred hole of 1/4 of the side (8x8 of 32x32); random = 70% of pixels "
         f"missing; superres = x2 decimation (top-left pixel of each 2x2 block); denoise = "
         f"Gaussian noise sigma 0.2 on the [-1, 1] scale. sigma_y={SIGMA_Y} on the known pixels "
         "of the first three. The degraded inputs are the same for every method."),
        ("setting 'published': the method's published settings for the task from the registry "
         "(`restora methods --task T`; params column); '~64 NFE' / '~190 NFE': the same with "
         "steps chosen so the cost (nfe column) is nearest the budget. OT-ODE's evaluations each "
         "add a backward pass. Nothing was tuned on these images."),
        ("Classical baselines: biharmonic = skimage.restoration.inpaint_biharmonic; bicubic = "
         "bicubic interpolation through the samples (align_corners on the sample grid, last row "
         "and column replicated); wavelet = skimage.restoration.denoise_wavelet, BayesShrink, "
         "soft, sigma 0.2 given."),
        ("Outputs are not pasted back onto the known pixels. psnr_hole: PSNR over the unknown "
         "pixels (the unsampled ones for superres; none for denoise)."),
        ("Subsets of the 64-image evaluation sets, evenly spaced: " + "; ".join(
            f"{name} indices {subset(name, ctx.quick, counts)}" for name in DEFAULT_COUNTS)
         + ". Image i's sampler seed is its index in the set."),
        ("Means over images; *_sem is the standard error of the mean. Paired table: per-image "
         "difference of each run minus Restora-Flow at its published settings (restora_flow; "
         "restora_flow_denoise for denoise), mean and half-width of the 95% t-interval, and on "
         "how many images the run is better; an interval that contains 0 is a tie."),
        (f"LPIPS: AlexNet v0.1 from {LPIPS_PATH.relative_to(REPO_ROOT)}, images upsampled "
         f"bilinearly to {LPIPS_SIDE}x{LPIPS_SIDE}." if lpips_net is not None else
         "LPIPS skipped: .cache/lpips_alexnet.safetensors is absent (make weights)."),
        (f"Seconds per image on device {device} with {ctx.threads} CPU thread(s), one batch per "
         "set and run; wall-clock on a shared machine (compare within one table only)."),
        f"Figures: {', '.join(f'quality_{t}.png' for t in TASKS)}.",
    ]
    if untrained:
        notes.insert(0, f"**Random-weight stand-in priors for {', '.join(untrained)}: these flow "
                        "numbers are NOT quality results** (the trained priors were absent).")
    if ctx.quick:
        notes.append(f"Quick mode: 4 images per set, {QUICK_STEPS} steps for 'published' and "
                     f"budgets {QUICK_BUDGETS}; not the reported numbers.")
    cols = ["dataset", "task", "method", "setting", "params", "nfe", "s_per_image", "psnr",
            "psnr_sem", "psnr_hole", "psnr_hole_sem", "ssim", "ssim_sem"]
    if lpips_net is not None:
        cols += ["lpips", "lpips_sem"]
    write_section(ctx, "quality", "5. Quality per task at published settings and matched budgets",
                  summary, notes=notes, columns=cols, seconds=time.perf_counter() - started,
                  extra_tables={"Paired differences against Restora-Flow (published settings)":
                                paired,
                                "At equal cost: paired differences against Restora-Flow at the "
                                "same budget": paired_at_budgets(per_image, summary)},
                  body="\n\n".join(f"![{t}](quality_{t}.png)" for t in TASKS))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the quality study alone (resumable: finished tasks are reused from .cache/bench).

    ``--sets`` / ``--tasks`` fill the checkpoints of a part only (to spread the study over
    processes); a run without them reuses every finished part and writes the tables."""
    import argparse
    import sys

    from .common import context_from_args

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality",
                                description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 images, 4 steps (a smoke run)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results[/quick])")
    p.add_argument("--images", default="",
                   help="images per set, e.g. digits32=16,photo32=12 (default 32 and 20; <= 64)")
    p.add_argument("--sets", default="", help="only these sets (checkpoints only, no tables)")
    p.add_argument("--tasks", default="", help="only these tasks (checkpoints only, no tables)")
    args = p.parse_args(argv)
    sets = tuple(x for x in args.sets.split(",") if x) or tuple(DEFAULT_COUNTS)
    tasks = tuple(x for x in args.tasks.split(",") if x) or tuple(TASKS)
    if set(sets) - set(DEFAULT_COUNTS) or set(tasks) - set(TASKS):
        raise SystemExit(f"--sets from {sorted(DEFAULT_COUNTS)}, --tasks from {list(TASKS)}")
    counts = {}
    for part in filter(None, (x.strip() for x in args.images.split(","))):
        name, _, value = part.partition("=")
        if name not in DEFAULT_COUNTS or not value.isdigit() or not 2 <= int(value) <= 64:
            raise SystemExit(f"--images {part!r}: expected NAME=N with NAME in "
                             f"{sorted(DEFAULT_COUNTS)} and 2 <= N <= 64")
        counts[name] = int(value)
    ctx = context_from_args("benchmarks.quality", argv, args)
    if args.sets or args.tasks:
        fill_checkpoints(ctx, counts, sets, tasks)
        print("quality: part done; run again without --sets/--tasks to write the tables")
        return 0
    run(ctx, counts)
    return 0


def fill_checkpoints(ctx: Context, counts: dict[str, int], sets: tuple[str, ...],
                     tasks: tuple[str, ...]) -> None:
    """Compute (or reuse) the checkpoints of ``sets`` x ``tasks``; write no tables."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lpips_net = LPIPS(LPIPS_PATH).to(device) if lpips_available(LPIPS_PATH) else None
    counts = {**DEFAULT_COUNTS, **counts}
    for name in sets:
        evaluate(ctx, name, subset(name, ctx.quick, counts), counts[name], lpips_net, device,
                 tasks)


if __name__ == "__main__":
    raise SystemExit(main())
