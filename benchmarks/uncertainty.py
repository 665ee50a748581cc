"""Several samples per image: is their spread honest, and does it find the bad restorations?

    python -m benchmarks.uncertainty                          # both sections -> benchmarks/results/
    python -m benchmarks.uncertainty --sections calibration   # the Gaussian-prior section only
    python -m benchmarks.uncertainty --quick                  # small sizes -> benchmarks/results/quick/
    python -m benchmarks.uncertainty --sections eval --task random --images 64 --k-max 4

calibration: on a Gaussian prior over 8x8 gray images (exact velocity, exact posterior;
``tests/core/analytic.py``), K samples of every registry method against the exact posterior of
the unobserved pixels, per task. eval: on the shipped priors' evaluation sets, one sample vs the
mean of K samples vs the classical baseline, and how well the per-image uncertainty ranks the
actual error. Each section writes ``uncertainty_<section>.parquet`` and ``.md``; ``uncertainty.md``
joins the sections present.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from restora_core import restore
from restora_core.samplers import REGISTRY
from tests.core.analytic import (
    CALIBRATION_TASKS,
    GaussianImagePrior,
    calibration_problem,
    calibration_scores,
)

from .common import Context, context_from_args, write_section

SECTIONS = ("calibration", "eval")
# Longer runs of some methods: is a miscalibration the discretisation or the method?
FINER = {"box": [("restora_flow", {"steps": 256}), ("mask_ode", {"steps": 256}),
                 ("flower", {"steps": 400}), ("ot_ode", {"steps": 400})]}


def _calibration_runs(task: str) -> list[tuple[str, dict[str, Any]]]:
    runs = [(name, {}) for name, entry in REGISTRY.items() if task in entry.tasks]
    return runs + FINER.get(task, [])


def calibration(ctx: Context, samples: int, images: int) -> list[dict]:
    """Rows of calibration scores: every method (published task settings) and the exact
    posterior's own draws (the Monte Carlo floor of K samples), per task."""
    prior = GaussianImagePrior()
    rows = []
    for ti, task in enumerate(CALIBRATION_TASKS):
        truth, y, mask, noise = calibration_problem(prior, task, images, seed=100 + ti)
        observed = torch.ones_like(truth) if mask is None else mask
        post_mean, post_std = prior.posterior(y, observed, noise)
        scored = torch.ones_like(observed) if mask is None else 1 - observed
        draws = prior.posterior_draws(y, observed, noise, samples, torch.Generator().manual_seed(7))
        base = {"task": task, "images": images, "pixels_scored": int(scored.sum())}
        rows.append({**base, "method": "exact posterior draws", "params": "", "samples": samples,
                     "nfe": 0, "seconds": 0.0,
                     **calibration_scores(draws.mean(1), draws.std(1), post_mean, post_std,
                                          truth, scored)})
        for name, overrides in _calibration_runs(task):
            k = samples if REGISTRY[name].stochastic else 1
            noise_kw = {"sigma": noise} if mask is None else {"sigma_y": noise}
            start = time.perf_counter()
            result = restore(prior, y, mask, method=name, task=task, seed=11, samples=k,
                             **noise_kw, **overrides)
            seconds = time.perf_counter() - start
            rows.append({**base, "method": name,
                         "params": " ".join(f"{a}={b}" for a, b in overrides.items()),
                         "samples": k, "nfe": result.nfe, "seconds": round(seconds, 2),
                         **calibration_scores(result.mean, result.std, post_mean, post_std,
                                              truth, scored)})
    return rows


CALIBRATION_NOTES = [
    ("Prior: 8x8 gray images x ~ N(0, S), S = 0.3^2 exp(-d/2) + 0.01^2 I (d: pixel distance); the "
     "velocity is the exact one of the linear path (no network), so every gap to the exact "
     "posterior is the sampler's. Observations: y = m * (x + 0.01 n) (box: centred 4x4 hole; "
     "random: 70 % missing; superres: every second row and column kept); denoise: x + 0.2 n."),
    ("Scores over the unobserved pixels (all pixels for denoise). mean_err_z: |sample mean - exact "
     "mean| / exact std; std_ratio: sample std / exact std (1 = honest spread, < 1 over-confident); "
     "kl: per-pixel KL(exact || sampled Gaussian); mse_ratio: squared error of the sample mean to "
     "the truth over the exact posterior mean's (1 = Bayes-optimal); coverage90: truths inside "
     "mean +- 1.645 std (0.90 when honest)."),
    ("'exact posterior draws' is the same K from the exact posterior: its scores are the Monte "
     "Carlo floor, what a perfect sampler would show with this K and these images."),
    ("Methods run at their published per-task settings (restore(task=...)) unless params says "
     "otherwise; restora_flow_denoise is deterministic, so it runs once (std 0)."),
    ("The params rows (box, about 4x the steps) tell discretisation from method: where the "
     "std_ratio stays put with more steps, the narrow or wide spread belongs to the method."),
    ("pnp_flow averages `averages` draws per iteration; that plausibly explains its spread of "
     "about a third of the exact one (not tested separately)."),
]


def calibration_summary(rows: list[dict]) -> str:
    """Per task, the method closest to the exact posterior (lowest KL at published settings)."""
    lines = ["Closest to the exact posterior per task (lowest kl, published settings):", ""]
    for task in CALIBRATION_TASKS:
        ranked = sorted((r for r in rows if r["task"] == task and r["kl"] is not None
                         and r["method"] != "exact posterior draws" and not r["params"]),
                        key=lambda r: r["kl"])
        if ranked:
            best, floor = ranked[0], next(r for r in rows if r["task"] == task
                                          and r["method"] == "exact posterior draws")
            lines.append(f"- {task}: {best['method']} (kl {best['kl']:.3f}, mean_err_z "
                         f"{best['mean_err_z']:.3f} vs floor {floor['mean_err_z']:.3f}, std_ratio "
                         f"{best['std_ratio']:.2f}, coverage90 {best['coverage90']:.2f})")
    return "\n".join(lines)


def _join(out_dir: Path) -> None:
    # Every eval run (per task and image count) has its own file; the joined page shows them all.
    parts = [out_dir / "uncertainty_calibration.md", *sorted(out_dir.glob("uncertainty_eval*.md"))]
    body = ["# Several samples per image: uncertainty", "",
            "Sections written by `python -m benchmarks.uncertainty`; each keeps its own header.", ""]
    for part in parts:
        if part.exists():
            body += [part.read_text().replace("\n# ", "\n## ", 1).replace("# ", "## ", 1), ""]
    (out_dir / "uncertainty.md").write_text("\n".join(body))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen sections and write their tables."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.uncertainty",
                                description=__doc__.splitlines()[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list of " +
                   ", ".join(SECTIONS))
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results[/quick])")
    p.add_argument("--images", type=int, default=None,
                   help="eval: images per evaluation set (default 16 digits, 10 photos; <= 64)")
    p.add_argument("--k-max", type=int, default=None,
                   help="eval: samples per image (default 16; K in 1, 2, 4, ... up to it)")
    p.add_argument("--task", default="box", help="eval: box or random inpainting (default box)")
    p.add_argument("--sets", default="",
                   help="eval: only these sets, comma list (fills checkpoints, writes no tables)")
    args = p.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; expected some of {list(SECTIONS)}")
    ctx = context_from_args("benchmarks.uncertainty", argv, args)
    if "calibration" in chosen:
        samples, images = (64, 4) if args.quick else (512, 16)
        start = time.perf_counter()
        rows = calibration(ctx, samples, images)
        write_section(ctx, "uncertainty_calibration",
                      f"Calibration on a Gaussian prior (K = {samples} samples, {images} images "
                      "per task)", rows, notes=CALIBRATION_NOTES, body=calibration_summary(rows),
                      seconds=time.perf_counter() - start)
    if "eval" in chosen:
        from .uncertainty_eval import run_eval

        sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
        run_eval(ctx, args.images, args.k_max, args.task, sets)
        if sets:
            return 0
    _join(ctx.out_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
