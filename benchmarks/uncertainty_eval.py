"""The eval section of ``benchmarks.uncertainty``: on the shipped priors' evaluation sets, one
sample vs the mean of K samples vs biharmonic inpainting, and whether the per-image spread of
the samples finds the bad restorations.

One run of K_MAX samples per image gives every K: the estimate for K is the mean of samples
0..K-1 (sample 0 is the single-sample restoration). Box inpainting (centred hole of 1/4 of the
side) or random inpainting (70 % of the pixels missing), sigma_y 0.01, Restora-Flow at T=32, c=1
(94 network evaluations per sample) for both. Each finished set is saved under
``.cache/bench/uncertainty`` so a cut-off run, or one spread over processes with ``--sets``,
loses at most one set.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from scipy import stats

from restora_core import restore
from restora_core.metrics import LPIPS, lpips_available, psnr_hole, uncertainty_summary

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
from .quality import LPIPS_PATH, SIGMA_Y, _figure, _metrics, _observe, classical

K_MAX = 16
KS = (1, 2, 4, 8, 16)
STEPS = 32  # with c = 1: 94 NFE, the setting of issue 10's measurement
COUNTS = {"digits32": 16, "photo32": 10}  # images per evaluation set (CPU time)
QUICK = {"k_max": 4, "ks": (1, 2, 4), "steps": 4, "counts": {"digits32": 4, "photo32": 4}}
EVAL_TASKS = ("box", "random")  # inpainting tasks: each has a hole to score
PARTIAL_DIR = REPO_ROOT / ".cache" / "bench" / "uncertainty"  # finished (stem, set) checkpoints


def _indices(count: int) -> list[int]:
    step = 64 // count
    return list(range(0, step * count, step))[:count]


def _hole_rmse(x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    hole = (mask == 0).expand_as(x).double()
    return (((x - ref).double() ** 2 * hole).flatten(1).sum(1) / hole.flatten(1).sum(1)).sqrt()


def _flag_precision(unc: np.ndarray, err: np.ndarray, fit: np.ndarray,
                    test: np.ndarray) -> dict[str, float]:
    """Threshold = 75th percentile of uncertainty on the ``fit`` images; 'bad' = error above the
    75th percentile of the ``fit`` images' error. Precision/recall of the flag on ``test``."""
    threshold = float(np.percentile(unc[fit], 75))
    bad_level = float(np.percentile(err[fit], 75))
    flagged, bad = unc[test] > threshold, err[test] > bad_level
    return {"threshold": threshold, "test_images": int(test.sum()), "flagged": int(flagged.sum()),
            "bad": int(bad.sum()), "base_rate": float(bad.mean()),
            "precision": float(bad[flagged].mean()) if flagged.any() else math.nan,
            "recall": float(flagged[bad].mean()) if bad.any() else math.nan}


def evaluate(name: str, count: int, k_max: int, ks: tuple[int, ...], steps: int, lpips_net,
             device: str = "cpu", task: str = "box"
             ) -> tuple[list[dict], list[dict], list[dict], dict[str, torch.Tensor]]:
    """(rows per estimate, rows on the flag, rows per image, images for the figure) for one
    evaluation set and inpainting ``task``; the sampler runs on ``device``, the scoring on the
    CPU."""
    put = prior_under_test(name)
    prior = put.prior.to(device)
    indices = _indices(count)
    ref = eval_images(name, indices)
    y, mask, _ = _observe(task, ref)
    seeds = [int(i) for i in indices]
    common = {"method": "restora_flow", "task": task, "steps": steps, "seed": seeds,
              "sigma_y": SIGMA_Y, "max_batch": 64}
    start = time.perf_counter()
    single = restore(prior, y, mask, **common).images.float().cpu()
    one_s = time.perf_counter() - start
    start = time.perf_counter()
    many = restore(prior, y, mask, samples=k_max, return_samples=True, **common)
    many_s = time.perf_counter() - start
    stack = many.samples.float().cpu()
    if (stack[:, 0] - single).abs().max() > 1e-3:
        raise RuntimeError("sample 0 differs from the single-sample restoration")
    rows = []
    start = time.perf_counter()
    base = classical(task, y, mask)
    estimates = {"biharmonic": (base, 0, time.perf_counter() - start)}
    for k in ks:
        seconds = one_s if k == 1 else many_s * k / k_max
        # One sample is the single-sample restoration itself: sample 0 of the K-sample run
        # matches it only to float rounding (another batch shape), checked above.
        estimates[f"mean of {k}" if k > 1 else "one sample"] = (
            stack[:, :k].mean(1) if k > 1 else single, k * many.nfe, seconds)
    one = psnr_hole(single, ref, mask).double()
    for label, (x, nfe, seconds) in estimates.items():
        m = _metrics(x, ref, mask, lpips_net, "cpu")
        gain = m["psnr_hole"].double() - one  # paired, image by image
        rows.append({"dataset": name, "task": task, "weights": put.weights, "images": count,
                     "estimate": label,
                     "nfe_per_image": nfe, "s_per_image": seconds / count,
                     "psnr_hole": float(m["psnr_hole"].double().mean()),
                     "psnr_hole_sem": float(m["psnr_hole"].double().std() / math.sqrt(count)),
                     "gain_vs_one_sample_db": float(gain.mean()),
                     "gain_ci95_db": float(stats.t.ppf(0.975, count - 1) * gain.std()
                                           / math.sqrt(count)),
                     "lpips": float(m["lpips"].double().mean()) if "lpips" in m else None})
    mean = stack.mean(1)
    err = _hole_rmse(mean, ref, mask).numpy()
    err_one = _hole_rmse(stack[:, 0], ref, mask).numpy()
    flag_rows = []
    per_image = [{"dataset": name, "task": task, "index": i, "hole_rmse_mean": float(a),
                  "hole_rmse_one_sample": float(b)} for i, a, b in zip(indices, err, err_one)]
    for k in sorted({min(4, k_max), k_max}):
        sub = stack[:, :k]
        unc = uncertainty_summary(sub.std(1), mask)[0].numpy()
        for row, u in zip(per_image, unc):
            row[f"uncertainty_mean_k{k}"] = float(u)
        fit, test = np.arange(count) % 2 == 0, np.arange(count) % 2 == 1
        flag_rows.append({
            "dataset": name, "task": task, "images": count, "uncertainty_from_k": k,
            "spearman_vs_error_of_mean": float(stats.spearmanr(unc, err).statistic),
            "spearman_vs_error_of_one_sample": float(stats.spearmanr(unc, err_one).statistic),
            **_flag_precision(unc, err, fit, test)})
    std = stack.std(1)
    shown = {"input": torch.where(mask.bool(), y, torch.zeros_like(y)), "mean": mean,
             "std": std, "error": (mean - ref).abs(), "reference": ref}
    return rows, flag_rows, per_image, shown


def eval_notes(task: str) -> list[str]:
    """The notes under an eval section's tables, for ``task``."""
    observed = ("Box inpainting (centred 8x8 hole at 32x32)" if task == "box" else
                "Random inpainting (each pixel missing with probability 0.7)")
    return [
        (f"{observed}, sigma_y 0.01, Restora-Flow T=32 c=1 (94 NFE per sample). One run of K_max "
         "samples per image; 'mean of K' averages samples 0..K-1 and its seconds are the K_max "
         "run's scaled by K/K_max (the samples share batched passes). 'one sample' is a separate "
         "plain run (equal to sample 0). The classical row is biharmonic inpainting."),
        ("Images: evenly spaced from each 64-image evaluation set (counts in the table). "
         "gain_vs_one_sample_db: hole-PSNR difference to the single sample, image by image, with "
         "its 95% t-interval half-width; an interval that covers 0 is a tie."),
        ("Flag rows: uncertainty = mean per-pixel std over the missing pixels from the first K "
         "samples; spearman = rank correlation with the missing pixels' RMSE of the K_max mean "
         "(and of one sample). Threshold and 'bad' level are the 75th percentiles of uncertainty "
         "and error on the even-numbered images; precision and recall are measured on the "
         "odd-numbered ones. base_rate is the precision of flagging at random. With few test "
         "images these are indications, not estimates."),
        ("s_per_image is wall time on the machine above; the 'one sample' and K_max runs ran "
         "minutes apart, under whatever load the shared machine had: compare costs by "
         "nfe_per_image."),
    ]


def section_stem(task: str, images: int | None) -> str:
    """``uncertainty_eval`` plus ``_<task>`` (not for box) and ``_<images>`` (when given)."""
    return "uncertainty_eval" + ("" if task == "box" else f"_{task}") + \
        (f"_{images}" if images else "")


def _evaluate_saved(stem: str, name: str, count: int, cfg: dict, lpips_net, device: str,
                    task: str, quick: bool) -> tuple[list, list, list, dict]:
    """``evaluate`` for one set, reused from its checkpoint when one matches."""
    weights = prior_under_test(name).weights
    key = (name, task, count, cfg["k_max"], cfg["ks"], cfg["steps"], weights, quick,
           lpips_net is not None)
    path = checkpoint_path(PARTIAL_DIR, f"{stem}_{name}", key)
    saved = load_checkpoint(path)
    if saved is not None:
        print(f"uncertainty: {name} {task}: reused {path}", flush=True)
        return saved["rows"], saved["flags"], saved["per_image"], saved["shown"]
    start = time.perf_counter()
    rows, flags, per_image, shown = evaluate(name, count, cfg["k_max"], cfg["ks"], cfg["steps"],
                                             lpips_net, device, task)
    save_checkpoint(path, {"rows": rows, "flags": flags, "per_image": per_image, "shown": shown})
    print(f"uncertainty: {name} {task}: {time.perf_counter() - start:.0f} s, saved {path}",
          flush=True)
    return rows, flags, per_image, shown


def run_eval(ctx: Context, images: int | None = None, k_max: int | None = None,
             task: str = "box", sets: tuple[str, ...] = ()) -> None:
    """Write ``uncertainty_eval[_<task>][_<images>]`` (table, flag table, figure, per-image rows);
    ``images`` overrides the count per set (<= 64), ``k_max`` the number of samples per image,
    ``sets`` (when given) only fills those sets' checkpoints and writes no tables."""
    start = time.perf_counter()
    if task not in EVAL_TASKS:
        raise SystemExit(f"--task: one of {list(EVAL_TASKS)}, not {task!r}")
    cfg = QUICK if ctx.quick else {"k_max": K_MAX, "ks": KS, "steps": STEPS, "counts": COUNTS}
    if k_max is not None:
        if k_max < 2:
            raise SystemExit("--k-max: at least 2 (the spread needs two samples)")
        cfg = {**cfg, "k_max": k_max, "ks": tuple(k for k in KS if k <= k_max)}
    if images is not None and not 2 <= images <= 64:
        raise SystemExit(f"--images: from 2 to 64 per set, not {images}")
    unknown = [s for s in sets if s not in cfg["counts"]]
    if unknown:
        raise SystemExit(f"--sets: unknown {unknown}; expected some of {list(cfg['counts'])}")
    counts = {name: images for name in cfg["counts"]} if images else cfg["counts"]
    stem = section_stem(task, images)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lpips_net = LPIPS(str(LPIPS_PATH)) if lpips_available(str(LPIPS_PATH)) else None
    rows, flags, per_image, panels = [], [], [], []
    for name, count in counts.items():
        if sets and name not in sets:
            continue
        r, f, p, shown = _evaluate_saved(stem, name, count, cfg, lpips_net, device, task,
                                         ctx.quick)
        rows += r
        flags += f
        per_image += p
        panels.append((name, shown))
    if sets:
        print("uncertainty: part done; run again without --sets to write the tables")
        return
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(per_image), ctx.out_dir / f"{stem}_per_image.parquet")
    _figure(ctx.out_dir / f"{stem}.png", task, panels,
            labels=["input", "mean", "std", "error"], heat=("std", "error"),
            title=f"{task}: input, mean of {cfg['k_max']} samples, their std, |error of the mean|")
    write_section(ctx, stem,
                  f"Several samples on the shipped priors ({task}, K up to {cfg['k_max']})", rows,
                  extra_tables={"Does the spread find the bad restorations?": flags},
                  notes=eval_notes(task), body=f"![input, mean, std, error]({stem}.png)",
                  seconds=time.perf_counter() - start)
