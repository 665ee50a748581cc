"""Quality of the shipped priors on their own held-out sets (issue 11's bar): an irregular,
non-box hole of 15-25% of the pixels, Restora-Flow (one sample) against scikit-image's
biharmonic inpainting, plus the other flow methods; hole PSNR, PSNR, SSIM and LPIPS.

    python -m benchmarks.prior_quality                           # the weights in restora_core
    python -m benchmarks.prior_quality --weights-dir DIR         # e.g. the GPU stage's output
    python -m benchmarks.prior_quality --quick                   # 3 images, 4 steps: a smoke run

Writes ``prior_quality.md`` / ``.parquet`` and ``prior_quality_<name>.png`` to
``benchmarks/results/`` (or ``--out``). A prior whose weights are absent is skipped and said so:
there are no random-weight stand-ins in this table.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from restora_core import load_prior, restore
from restora_core.datasets import load_eval_set
from restora_core.metrics import LPIPS, lpips_available
from restora_core.observations import simulate_observation
from restora_core.priors import shipped_prior_path
from restora_core.samplers import methods_for_task

from .common import REPO_ROOT, Context, write_section
from .quality import CLASSICAL as CLASSICAL_PER_TASK
from .quality import LPIPS_PATH, QUICK_STEPS, SIGMA_Y, _figure, _metrics
from .quality import biharmonic as biharmonic_fill

CLASSICAL = CLASSICAL_PER_TASK["box"]  # biharmonic inpainting
METHODS = tuple(methods_for_task("inpaint"))

HOLE_RANGE = (0.15, 0.25)
MASK_SEED = 20261128
# images per set (evenly spaced) on a 2-core CPU, and whether strokes start on the foreground
# (the brain, the digit) rather than anywhere: a hole in the black background is free for all
COUNTS = {"digits32": 32, "photo32": 20, "photo64": 10, "mri64": 18}
FOREGROUND = {"digits32", "mri64"}


def irregular_mask(image: np.ndarray, rng: np.random.Generator, *, foreground: bool,
                   hole_range: tuple[float, float] = HOLE_RANGE) -> np.ndarray:
    """A free-form hole: thick random-walk brush strokes until the hole covers a fraction drawn
    uniformly in ``hole_range``. ``image: (H, W, C)`` uint8 (for the foreground only) ->
    ``(H, W)`` float32 mask, 1 = known, 0 = hole."""
    h, w = image.shape[:2]
    side = min(h, w)
    target = rng.uniform(*hole_range)
    fg = image.max(axis=-1) > 0.1 * max(int(image.max()), 1)
    starts = np.argwhere(fg) if foreground and fg.any() else np.argwhere(np.ones((h, w), bool))
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(100):
        hole = np.zeros((h, w), bool)
        while hole.mean() < target:
            y, x = starts[rng.integers(len(starts))].astype(float)
            radius = rng.uniform(side / 20, side / 10)
            angle = rng.uniform(0, 2 * np.pi)
            for _ in range(int(rng.integers(2, 6))):
                angle += rng.uniform(-np.pi / 2, np.pi / 2)
                length = rng.uniform(side / 8, side / 3)
                for s in np.linspace(0, 1, max(2, int(length))):
                    cy, cx = y + s * length * np.sin(angle), x + s * length * np.cos(angle)
                    hole |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
                y = np.clip(y + length * np.sin(angle), 0, h - 1)
                x = np.clip(x + length * np.cos(angle), 0, w - 1)
                if hole.mean() >= target:
                    break
        if hole.mean() <= hole_range[1]:
            return (~hole).astype(np.float32)
    raise RuntimeError("could not draw a hole inside the requested range")


def find_weights(name: str, weights_dir: Path | None) -> Path | None:
    """``<weights_dir>/<name>.safetensors`` if given and present, else the shipped file."""
    for p in ([weights_dir / f"{name}.safetensors"] if weights_dir else []) + [
            shipped_prior_path(name)]:
        if p.exists():
            return p
    return None


def evaluate(ctx: Context, name: str, weights: Path, count: int, lpips_net) -> list[dict]:
    """Summary rows (one per method) for one held-out set."""
    prior = load_prior(str(weights))
    images = load_eval_set(name)["images"]
    idx = np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)
    images = images[idx]
    ref = torch.from_numpy(images.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
    masks = np.stack([irregular_mask(im, np.random.default_rng([MASK_SEED, int(i)]),
                                     foreground=name in FOREGROUND) for im, i in zip(images, idx)])
    mask = torch.from_numpy(masks)[:, None]
    obs = simulate_observation("inpaint", ref, mask=mask, sigma_y=SIGMA_Y,
                               generator=torch.Generator().manual_seed(MASK_SEED))
    y = obs.y
    card = prior.card.get("training", {})
    trained = f"{card.get('steps', '?')} steps, {card.get('device', '?')}"
    rows, outputs = [], {}
    for method in (CLASSICAL, *METHODS):
        start = time.perf_counter()
        if method == CLASSICAL:
            x, nfe = biharmonic_fill(y, mask), 0
        else:
            res = restore(prior, y, mask, method=method, seed=[int(i) for i in idx],
                          sigma_y=SIGMA_Y, steps=QUICK_STEPS if ctx.quick else None)
            x, nfe = res.images, res.nfe
        sec = time.perf_counter() - start
        outputs[method] = x
        row = {"dataset": name, "method": method, "prior": trained if method != CLASSICAL
               else "none", "images": len(idx), "hole_fraction": float(1 - masks.mean()),
               "nfe": nfe, "s_per_image": sec / len(idx)}
        for k, v in _metrics(x, ref, mask, lpips_net, "cpu").items():
            v = v.double()
            row[k] = float(v.mean())
            row[f"{k}_sem"] = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else math.nan
        rows.append(row)
    panels = [(f"{name} ({trained})", {"reference": ref, "input": y * mask, **outputs})]
    _figure(ctx.out_dir / f"prior_quality_{name}.png",
            f"{name}, irregular hole of {HOLE_RANGE[0]:.0%}-{HOLE_RANGE[1]:.0%}, "
            f"sigma_y={SIGMA_Y}", panels, count=6)
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """One line per set: does Restora-Flow beat biharmonic on hole PSNR and on LPIPS?"""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        by = {r["method"]: r for r in rows if r["dataset"] == name}
        rf, bh = by["restora_flow"], by[CLASSICAL]
        psnr_win = rf["psnr_hole"] > bh["psnr_hole"]
        line = (f"{name}: hole PSNR restora_flow {rf['psnr_hole']:.2f} vs biharmonic "
                f"{bh['psnr_hole']:.2f} dB ({'win' if psnr_win else 'loss'})")
        if "lpips" in rf:
            lp_win = rf["lpips"] < bh["lpips"]
            line += (f"; LPIPS {rf['lpips']:.4f} vs {bh['lpips']:.4f} "
                     f"({'win' if lp_win else 'loss'})")
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    """Evaluate every prior whose weights exist and write the section."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--priors", default="photo32,photo64,mri64,digits32")
    ap.add_argument("--weights-dir", type=Path)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ctx = Context(out_dir=args.out, quick=args.quick, threads=args.threads,
                  command=shlex.join(["python", "-m", "benchmarks.prior_quality", *argv]))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    lpips_net = LPIPS(LPIPS_PATH) if lpips_available(LPIPS_PATH) else None
    started = time.perf_counter()
    rows, missing = [], []
    for name in args.priors.split(","):
        weights = find_weights(name, args.weights_dir)
        if weights is None:
            missing.append(name)
            continue
        rows += evaluate(ctx, name, weights, 3 if args.quick else COUNTS[name], lpips_net)
    notes = [*verdicts(rows),
             (f"Hole: thick random-walk brush strokes (radius 1/20-1/10 of the side) until "
              f"{HOLE_RANGE[0]:.0%}-{HOLE_RANGE[1]:.0%} of the pixels are missing (the fraction "
              f"drawn per image; seed ({MASK_SEED}, index)); for "
              f"{', '.join(sorted(FOREGROUND))} strokes start on the foreground. Measurement "
              f"noise sigma_y={SIGMA_Y} on the known pixels."),
             ("Restora-Flow: one sample per image at its defaults (T=64, c=1); other flow "
              "methods at theirs; none tuned on these images. biharmonic: "
              "skimage.restoration.inpaint_biharmonic."),
             f"Images per set (evenly spaced over the held-out set): {COUNTS}.",
             ("Means over images; *_sem: standard error of the mean; psnr_hole: PSNR over the "
             "hole only."),
             ("LPIPS: AlexNet, images upsampled to 64x64 when smaller." if lpips_net else
              "LPIPS skipped: .cache/lpips_alexnet.safetensors is absent (make weights).")]
    if missing:
        notes.append(f"Not evaluated (no weights found): {', '.join(missing)}.")
    if args.quick:
        notes.append(f"Quick mode: 3 images and {QUICK_STEPS} steps: not a quality number.")
    body = "\n\n".join(f"![{r}](prior_quality_{r}.png)"
                       for r in dict.fromkeys(r["dataset"] for r in rows))
    write_section(ctx, "prior_quality", "Shipped priors vs biharmonic: irregular holes on the "
                  "held-out sets", rows, notes=notes, seconds=time.perf_counter() - started,
                  body=body)
    print("\n".join(verdicts(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
