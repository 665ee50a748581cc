"""Section 5: quality at equal cost on the shipped evaluation sets.

Box inpainting (centred hole of 1/4 of the side, 8x8 at 32x32) with measurement noise
sigma_y = 0.01, every method at its ``restore()`` defaults (never tuned on these images):
Restora-Flow (T=64, c=1), the same sampler without corrections (mask_ode), OT-ODE, PnP-Flow,
and scikit-image's biharmonic inpainting. Metrics: PSNR over the whole image and over the hole,
SSIM, and LPIPS (AlexNet; 32x32 images are upsampled bilinearly to 64x64 for LPIPS only, since
AlexNet needs at least 31 px), network evaluations and seconds per image.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from restora_core import restore
from restora_core.metrics import LPIPS, lpips_available, psnr, psnr_hole, ssim
from restora_core.observations import simulate_observation
from restora_core.restore import DEFAULT_STEPS, method_nfe

from .common import REPO_ROOT, Context, eval_images, prior_under_test, write_section

METHODS = ("restora_flow", "mask_ode", "ot_ode", "pnp_flow")
CLASSICAL = "biharmonic"
SIGMA_Y = 0.01
LPIPS_PATH = REPO_ROOT / ".cache" / "lpips_alexnet.safetensors"
LPIPS_SIDE = 64
QUICK_STEPS = 4  # --quick only: a smoke run, not a quality number


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
        hole = mi[0].numpy() < 0.5
        filled = inpaint_biharmonic(img, hole, channel_axis=-1)
        out.append(torch.from_numpy(filled).permute(2, 0, 1).float())
    return torch.stack(out).clamp(-1, 1)


def _metrics(x, ref, mask, lpips_net) -> dict[str, torch.Tensor]:
    m = {"psnr": psnr(x, ref), "psnr_hole": psnr_hole(x, ref, mask), "ssim": ssim(x, ref)}
    if lpips_net is not None:
        up = lambda z: F.interpolate(z, size=(LPIPS_SIDE, LPIPS_SIDE), mode="bilinear",
                                     align_corners=False)
        with torch.inference_mode():
            m["lpips"] = lpips_net(up(x), up(ref))
    return m


def _figure(path: Path, name: str, ref, y, mask, outputs: dict[str, torch.Tensor], count: int = 6,
            title: str | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, ref.shape[0])
    shown = y * mask + 0.0 * (1 - mask)  # the hole drawn mid-grey
    rows = [("reference", ref), ("input", shown), *outputs.items()]
    fig, axes = plt.subplots(len(rows), count, figsize=(1.3 * count + 1.2, 1.3 * len(rows)),
                             squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(count):
            ax = axes[r][c]
            img = ((imgs[c].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title or f"{name}: box inpainting (8x8 hole, sigma_y={SIGMA_Y})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(ctx: Context, name: str, indices: list[int], batch: int, lpips_net) -> tuple[list, list]:
    """(summary rows, per-image rows) for one evaluation set."""
    put = prior_under_test(name)
    prior = put.prior
    ref = eval_images(name, indices)
    side = ref.shape[-1]
    g = torch.Generator().manual_seed(20250101)
    obs = simulate_observation("box", ref, params={"box_size": side // 4}, generator=g,
                               sigma_y=SIGMA_Y)
    y, mask = obs.y, obs.mask
    outputs: dict[str, torch.Tensor] = {}
    summary, per_image = [], []
    methods = [CLASSICAL, *METHODS]
    for method in methods:
        start = time.perf_counter()
        if method == CLASSICAL:
            x, nfe, steps = biharmonic(y, mask), 0, None
        else:
            parts = []
            for i in range(0, ref.shape[0], batch):
                seeds = [int(indices[j]) for j in range(i, min(i + batch, ref.shape[0]))]
                res = restore(prior, y[i:i + batch], mask[i:i + batch], method=method,
                              seed=seeds, sigma_y=SIGMA_Y, steps=QUICK_STEPS if ctx.quick else None)
                parts.append(res.images)
            x, nfe, steps = torch.cat(parts), res.nfe, res.steps
        sec = time.perf_counter() - start
        outputs[method] = x
        m = _metrics(x, ref, mask, lpips_net)
        row = {"dataset": name, "method": method, "prior_weights": put.weights if method != CLASSICAL
               else "none", "images": ref.shape[0], "steps": steps,
               "nfe": nfe, "s_per_image": sec / ref.shape[0]}
        for k, v in m.items():
            v = v.double()
            finite = v[torch.isfinite(v)]
            row[k] = float(finite.mean()) if finite.numel() else math.nan
            row[f"{k}_sem"] = float(finite.std() / math.sqrt(finite.numel())) \
                if finite.numel() > 1 else math.nan
        summary.append(row)
        for j, idx in enumerate(indices):
            per_image.append({"dataset": name, "method": method, "index": int(idx),
                              **{k: float(v[j]) for k, v in m.items()}})
    _figure(ctx.out_dir / f"quality_{name}.png", f"{name} ({put.weights})", ref, y, mask, outputs)
    return summary, per_image


def run(ctx: Context) -> list[dict]:
    """Section 5 rows for digits32 and photo32; writes quality.{parquet,md}, figures, per-image."""
    started = time.perf_counter()
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    lpips_net = LPIPS(LPIPS_PATH) if lpips_available(LPIPS_PATH) else None
    counts = {"digits32": 32, "photo32": 20}
    batches = {"digits32": 32, "photo32": 20}
    summary, per_image = [], []
    for name in ("digits32", "photo32"):
        idx = subset(name, ctx.quick, counts)
        s, p = evaluate(ctx, name, idx, batches[name], lpips_net)
        summary += s
        per_image += p
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(per_image), ctx.out_dir / "quality_per_image.parquet")
    untrained = sorted({r["dataset"] for r in summary
                        if r["prior_weights"].startswith("random")})
    nfe_text = ", ".join(f"{m} {method_nfe(m, DEFAULT_STEPS[m])}" for m in METHODS)
    notes = [
        (f"Box inpainting: centred hole of 1/4 of the side (8x8 of 32x32), measurement noise "
        f"sigma_y={SIGMA_Y} on the known pixels; image i's noise seed is its index in the set."),
        ("Methods at their restore() defaults, never tuned on these images: restora_flow T=64 c=1, "
        f"mask_ode T=64 (c=0), ot_ode 100 steps from t0=0.2, pnp_flow 100 steps, alpha=0.5. NFE: "
        f"{nfe_text}; OT-ODE's evaluations each add a backward pass through the network. "
        "biharmonic: skimage.restoration.inpaint_biharmonic (0 NFE)."),
        ("Outputs are not pasted back onto the known pixels (paste_known=False) for the flow methods; "
        "biharmonic keeps the (noisy) observed pixels."),
        ("Subsets (evenly spaced, to fit the run on a 2-core CPU): digits32 every 2nd of 64 "
        "(32 images, all ten classes); photo32 the first 20 crops (4 of each of the five sporco "
        "images, both scales)."),
        ("Means over images; *_sem is the standard error of the mean. psnr_hole: PSNR over the "
        "hole pixels only. SSIM: 11x11 Gaussian window, data range 1."),
        (f"LPIPS: AlexNet v0.1 from {LPIPS_PATH.relative_to(REPO_ROOT)}; the 32x32 images are "
         f"upsampled bilinearly to {LPIPS_SIDE}x{LPIPS_SIDE} for LPIPS only (AlexNet needs >= 31 px)."
         if lpips_net is not None else
         "LPIPS skipped: .cache/lpips_alexnet.safetensors is absent (make weights)."),
        "seconds per image on one CPU thread, batched (digits32 32 per batch, photo32 20).",
        ("Figures: quality_digits32.png and quality_photo32.png (reference, input with the hole in "
        "grey, then each method)."),
    ]
    if untrained:
        notes.insert(0, f"**Random-weight stand-in priors for {', '.join(untrained)}: these flow "
                        "numbers are NOT quality results** (the trained priors were absent).")
    if ctx.quick:
        notes.append(f"Quick mode: 4 images per set and {QUICK_STEPS} steps for every flow method; "
                     "not the reported number.")
    cols = ["dataset", "method", "prior_weights", "images", "steps", "nfe", "s_per_image",
            "psnr", "psnr_sem", "psnr_hole", "psnr_hole_sem", "ssim", "ssim_sem"]
    if lpips_net is not None:
        cols += ["lpips", "lpips_sem"]
    write_section(ctx, "quality", "5. Quality at equal cost: box inpainting on the evaluation sets",
                  summary, notes=notes, columns=cols, seconds=time.perf_counter() - started,
                  body="![digits32](quality_digits32.png)\n\n![photo32](quality_photo32.png)")
    return summary
