"""Tiling benchmark (issue 19): restoring images larger than the prior, at their own size.

Quality: the shipped ``photo32`` prior on crops of sporco's five photographs (never trained on;
block-averaged by 2 like the prior's evaluation crops) at 128x128 and 256x256 with two scratches
and two blocks each, and the shipped ``digits32`` prior on 128x128 mosaics of 16 held-out digits
with a hole in the middle of four of them. Methods, every one given the same observation and
the known pixels copied back:
- tiled Restora-Flow (``restore_full``, box settings: 190 NFE per tile), one sample and the
  mean of 4;
- biharmonic inpainting (scikit-image) and OpenCV's Telea and Navier-Stokes inpainting at full
  resolution (radius 3), what a user would otherwise reach for;
- ``--size-policy resize``: the image area-downsampled to the prior's 32x32, restored there,
  upsampled bicubically.
Scores: PSNR over the missing pixels, SSIM and LPIPS over the image; paired per-image differences
against one tiled sample with 95% t-intervals.

Cost: network evaluations (in prior-sized tiles) and seconds of one tiled sample against image
size at a fixed hole (one 10x10 block), which should be flat, and against the number of such
holes in a 512x512 image, which should be linear.

Each finished image is saved under ``.cache/bench/tiling`` so a cut-off run loses at most one.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats

from restora_core import restore
from restora_core.full_resolution import restore_full
from restora_core.metrics import LPIPS, lpips_available, psnr_hole, ssim

from .common import (
    REPO_ROOT,
    Context,
    checkpoint_path,
    context_from_args,
    eval_images,
    load_checkpoint,
    prior_under_test,
    save_checkpoint,
    write_section,
)
from .quality import LPIPS_PATH, biharmonic

PARTIAL_DIR = REPO_ROOT / ".cache" / "bench" / "tiling"
SIZES = (128, 256)
COUNTS = {128: 5, 256: 3, "digits": 4}  # images per set (CPU time)
QUICK = {"counts": {128: 1, 256: 1, "digits": 1}, "steps": 4, "cost_sizes": (64, 128),
         "cost_holes": (1, 2)}
COST_SIZES = (64, 128, 256, 512, 1024)
COST_HOLES = (1, 2, 4, 8)
SAMPLES = 4
METHODS = ("tiled", f"tiled_mean{SAMPLES}", "biharmonic", "telea", "navier_stokes", "resize")


def photo_crops(size: int, count: int) -> torch.Tensor:
    """``count`` crops of ``size`` x ``size`` from sporco's photographs at half resolution,
    (N, 3, S, S) in [-1, 1], one per photograph in turn, offsets fixed per index."""
    import sporco
    from PIL import Image

    from restora_core.datasets import block_mean

    root = Path(sporco.__file__).parent / "data"
    names = ("barbara", "kodim23", "monarch", "sail", "tulips")
    crops = []
    for i in range(count):
        img = np.asarray(Image.open(root / f"{names[i % 5]}.png").convert("RGB"))
        small = block_mean(img, 2)
        h, w = small.shape[:2]
        rng = np.random.default_rng(1000 * size + i)
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        crops.append(small[top:top + size, left:left + size])
    x = torch.from_numpy(np.stack(crops).astype(np.float32) / 127.5 - 1.0)
    return x.permute(0, 3, 1, 2).contiguous()


def scratches_and_blocks(size: int, seed: int) -> torch.Tensor:
    """(1, 1, S, S) mask, 1 = known: two straight scratches 2 px wide and size/5 to size/3
    long, and two square blocks of size/16 to size/10 per side, at seeded places."""
    rng = np.random.default_rng(seed)
    mask = np.ones((size, size), dtype=np.float32)
    rows, cols = np.mgrid[0:size, 0:size]
    for _ in range(2):
        length = rng.uniform(size / 5, size / 3)
        angle = rng.uniform(0, math.pi)
        cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
        dy, dx = math.sin(angle), math.cos(angle)
        along = (rows - cy) * dy + (cols - cx) * dx
        across = np.abs(-(rows - cy) * dx + (cols - cx) * dy)
        mask[(np.abs(along) <= length / 2) & (across <= 1.0)] = 0.0
    for _ in range(2):
        side = int(rng.integers(size // 16, size // 10 + 1))
        top, left = rng.integers(0, size - side, 2)
        mask[top:top + side, left:left + side] = 0.0
    return torch.from_numpy(mask)[None, None]


def digits_mosaic(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 128x128 mosaic of 16 held-out digits and its mask: an 8x8 hole in the middle of four
    of them (cells chosen by ``index``)."""
    digits = eval_images("digits32", list(range(16 * index, 16 * index + 16)))
    mosaic = digits.view(4, 4, 1, 32, 32).permute(2, 0, 3, 1, 4).reshape(1, 1, 128, 128)
    mask = torch.ones(1, 1, 128, 128)
    rng = np.random.default_rng(77 + index)
    for cell in rng.choice(16, size=4, replace=False):
        r, c = divmod(int(cell), 4)
        mask[..., 32 * r + 12:32 * r + 20, 32 * c + 12:32 * c + 20] = 0.0
    return mosaic, mask


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return np.round(((x[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()).astype(np.uint8)


def opencv_fill(y: torch.Tensor, mask: torch.Tensor, flag: str) -> torch.Tensor:
    """OpenCV's Telea or Navier-Stokes inpainting (radius 3) on 8-bit pixels, in [-1, 1]."""
    import cv2

    img = _to_uint8(y)
    holes = (mask[0, 0].numpy() < 0.5).astype(np.uint8) * 255
    method = cv2.INPAINT_TELEA if flag == "telea" else cv2.INPAINT_NS
    out = cv2.inpaint(img if img.shape[-1] == 3 else img[..., 0], holes, 3, method)
    out = out[..., None] if out.ndim == 2 else out
    return torch.from_numpy(out.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]


def resize_policy(prior, y: torch.Tensor, mask: torch.Tensor, seed: int, steps: int | None
                  ) -> torch.Tensor:
    """Restore at the prior's size and upsample: what ``--size-policy resize`` gives back."""
    side = prior.resolution
    small = F.interpolate(y, size=(side, side), mode="area")
    small_mask = (F.interpolate(mask, size=(side, side), mode="area") > 0.999).float()
    out = restore(prior, small * small_mask, small_mask, task="box", seed=[seed],
                  **({"steps": steps} if steps else {})).images
    return F.interpolate(out, size=y.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1)


def restore_all(prior, ref: torch.Tensor, mask: torch.Tensor, seed: int, steps: int | None
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every method's restoration of ``ref`` observed through ``mask``, and the tiled cost."""
    y = ref * mask
    kwargs = {"task": "box", **({"steps": steps} if steps else {})}
    start = time.perf_counter()
    one = restore_full(prior, y, mask, seed=seed, **kwargs)
    seconds = time.perf_counter() - start
    many = restore_full(prior, y, mask, seed=seed, samples=SAMPLES, **kwargs)
    outs = {"tiled": one.image, f"tiled_mean{SAMPLES}": many.image,
            "biharmonic": biharmonic(y, mask), "telea": opencv_fill(y, mask, "telea"),
            "navier_stokes": opencv_fill(y, mask, "ns"),
            "resize": resize_policy(prior, y, mask, seed, steps)}
    known = mask.expand_as(ref) > 0.5
    outs = {k: torch.where(known, y, v.float()) for k, v in outs.items()}
    cost = {"nfe": one.nfe, "windows": len(one.windows), "tiles": one.tiles,
            "seconds": seconds, "window_boxes": one.windows}
    return outs, cost


def _scores(x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor, lpips_net) -> dict[str, float]:
    row = {"psnr_hole": float(psnr_hole(x, ref, mask)[0]), "ssim": float(ssim(x, ref)[0])}
    if lpips_net is not None:
        with torch.inference_mode():
            row["lpips"] = float(lpips_net(x, ref)[0])
    return row


def quality_rows(ctx: Context, counts: dict, steps: int | None, lpips_net,
                 partial=PARTIAL_DIR) -> tuple[list[dict], dict[str, Any]]:
    """Per-image scores of every method on every set, and the figure's panels (first 256 photo)."""
    rows, figure = [], {}
    sets: list[tuple[str, Any, int]] = [("photo32", size, counts[size]) for size in SIZES]
    sets.append(("digits32", "digits", counts["digits"]))
    for prior_name, size, count in sets:
        prior = prior_under_test(prior_name).prior
        photos = photo_crops(size, count) if prior_name == "photo32" else None
        for i in range(count):
            key = (prior_name, size, i, steps, ctx.quick, 2)
            path = checkpoint_path(partial, "tiling", key)
            saved = load_checkpoint(path)
            if photos is not None:
                ref, mask = photos[i:i + 1], scratches_and_blocks(size, 31 * i + size)
            else:
                ref, mask = digits_mosaic(i)
            if saved is None:
                outs, cost = restore_all(prior, ref, mask, seed=1000 + i, steps=steps)
                scores = {m: _scores(outs[m], ref, mask, lpips_net) for m in outs}
                saved = {"scores": scores, "cost": {k: v for k, v in cost.items()
                                                    if k != "window_boxes"},
                         "windows": [tuple(vars(w).values()) for w in cost["window_boxes"]],
                         "tiled": outs["tiled"], "observed": ref * mask}
                save_checkpoint(path, saved)
            label = f"{prior_name}@{size if photos is not None else 128}"
            for method, score in saved["scores"].items():
                rows.append({"set": label, "index": i, "method": method, **score,
                             **({f"tiled_{k}": v for k, v in saved["cost"].items()}
                                if method == "tiled" else {})})
            if size == 256 and i == 0:
                figure = {"reference": ref, "observed": saved["observed"],
                          "restored": saved["tiled"], "windows": saved["windows"]}
            print(f"  {label} #{i}: tiled psnr_hole {saved['scores']['tiled']['psnr_hole']:.2f}",
                  file=sys.stderr, flush=True)
    return rows, figure


def paired(rows: list[dict]) -> list[dict]:
    """Each method minus one tiled sample, image by image, with 95% t half-widths."""
    import pandas as pd

    df = pd.DataFrame(rows)
    out = []
    for label, group in df.groupby("set", sort=False):
        base = group[group.method == "tiled"].set_index("index")
        for method, other in group.groupby("method", sort=False):
            if method == "tiled":
                continue
            other = other.set_index("index")
            row: dict[str, Any] = {"set": label, "method": method, "images": len(other)}
            for metric in ("psnr_hole", "ssim", "lpips"):
                if metric not in other:
                    continue
                diff = (other[metric] - base[metric]).dropna()
                row[f"d_{metric}"] = float(diff.mean())
                row[f"d_{metric}_ci95"] = (float(stats.t.ppf(0.975, len(diff) - 1)
                                                 * diff.std(ddof=1) / math.sqrt(len(diff)))
                                           if len(diff) > 1 else math.nan)
            out.append(row)
    return out


def cost_rows(sizes: tuple[int, ...], holes: tuple[int, ...], steps: int | None) -> list[dict]:
    """NFE and seconds of one tiled sample: against image size with one 10x10 hole, and
    against the number of such holes in the largest image up to 512 (holes on a grid, apart)."""
    prior = prior_under_test("photo32").prior
    kwargs = {"task": "box", **({"steps": steps} if steps else {})}
    rows = []

    def run(kind: str, size: int, count: int) -> None:
        y = photo_crops(min(size, 256), 1)
        y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False)
        mask = torch.ones(1, 1, size, size)
        grid = math.ceil(math.sqrt(count))
        step = size // (grid + 1)
        for k in range(count):
            r, c = divmod(k, grid)
            top, left = step * (r + 1) - 5, step * (c + 1) - 5
            mask[..., top:top + 10, left:left + 10] = 0.0
        start = time.perf_counter()
        out = restore_full(prior, y * mask, mask, seed=5, **kwargs)
        rows.append({"sweep": kind, "size": size, "holes": count, "hole_pixels": int(
            (mask == 0).sum()), "nfe": out.nfe, "windows": len(out.windows), "tiles": out.tiles,
            "seconds": time.perf_counter() - start})
        print(f"  cost {kind} {size} {count}: nfe {out.nfe} {rows[-1]['seconds']:.1f} s",
              file=sys.stderr, flush=True)

    for size in sizes:
        run("image size", size, 1)
    for count in holes:
        run("hole count", min(max(sizes), 512), count)
    return rows


def figure(path, panels: dict[str, Any]) -> None:
    """Before/after of one large photo with the restored windows outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
    for ax, key in zip(axes, ("observed", "restored", "reference")):
        ax.imshow(((panels[key][0].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy())
        ax.set_title({"observed": "damaged (windows outlined)", "restored": "tiled Restora-Flow",
                      "reference": "original"}[key])
        ax.axis("off")
    for top, left, h, w in panels["windows"]:
        axes[0].add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, ec="cyan", lw=1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the quality and cost sweeps and write tiling.md/.parquet and tiling.png."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.tiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and steps (a smoke run)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results[/quick])")
    p.add_argument("--images", default="", metavar="128=N,256=N,digits=N",
                   help=f"images per set (default {COUNTS}); finished images are reused")
    p.add_argument("--partial", default=str(PARTIAL_DIR),
                   help="folder of the finished images' checkpoints (default %(default)s)")
    args = p.parse_args(argv)
    ctx = context_from_args("benchmarks.tiling", argv, args)
    counts = dict(QUICK["counts"] if ctx.quick else COUNTS)
    for item in filter(None, args.images.split(",")):
        name, _, n = item.partition("=")
        counts[int(name) if name.isdigit() else name] = int(n)
    steps = QUICK["steps"] if ctx.quick else None
    lpips_net = LPIPS(str(LPIPS_PATH)) if lpips_available(str(LPIPS_PATH)) else None
    start = time.perf_counter()
    rows, panels = quality_rows(ctx, counts, steps, lpips_net, Path(args.partial))
    costs = cost_rows(QUICK["cost_sizes"] if ctx.quick else COST_SIZES,
                      QUICK["cost_holes"] if ctx.quick else COST_HOLES, steps)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), ctx.out_dir / "tiling_per_image.parquet")
    pq.write_table(pa.Table.from_pylist(costs), ctx.out_dir / "tiling_cost.parquet")
    if panels:
        figure(ctx.out_dir / "tiling.png", panels)
    means = []
    import pandas as pd

    df = pd.DataFrame(rows)
    for (label, method), group in df.groupby(["set", "method"], sort=False):
        means.append({"set": label, "method": method, "images": len(group),
                      **{m: float(group[m].mean()) for m in ("psnr_hole", "ssim", "lpips")
                         if m in group}})
    notes = [
        ("Every method gets the same observation and has the known pixels copied back; "
        "psnr_hole is over the missing pixels, ssim and lpips over the whole image."),
        (f"tiled = restore_full with Restora-Flow at the published box settings "
        f"({'steps ' + str(steps) if steps else '190 NFE per tile'}), tile overlap and hole "
        "margin 8 px; resize = restore at 32x32 and upsample (bicubic)."),
        ("Paired table: method minus one tiled sample, mean over images with a 95% t "
        "half-width; an interval containing 0 is a tie."),
    ]
    write_section(ctx, "tiling", "Tiling: images larger than the prior, restored at their size",
                  means, extra_tables={"Paired differences against one tiled sample":
                                       paired(rows), "Cost of one tiled sample": costs},
                  notes=notes, seconds=time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
