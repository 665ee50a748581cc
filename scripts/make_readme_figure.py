"""Draw README's before/after grid from the committed evaluation sets and the shipped priors.

    python scripts/make_readme_figure.py docs/restora_before_after.png

For each shipped prior (digits32, photo32), images spread evenly over its held-out evaluation
set (``restora_core/data/<name>_eval.npz``; the digits are sorted by label) are degraded as the benchmarks degrade them (a centred box
of 5/16 of the side, or 70 % of the pixels dropped; noise 0.01 on the known pixels) and restored
with Restora-Flow at its published settings for the task (``restora methods``). Rows, top to
bottom: original, box hole, restored, 70 % missing, restored. Seeds are fixed, so a rerun on the
same machine draws the same picture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from restora_core import load_prior, restore
from restora_core.datasets.eval_sets import load_eval_set
from restora_core.observations import simulate_observation

SETS = ("digits32", "photo32")
TASKS = ("box", "random")
GAP = 4  # white pixels between images and between the two panels


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_rgb(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def panel(name: str, count: int, seed: int) -> list[np.ndarray]:
    """Rows (each (N, H, W, 3) uint8) for one prior: original, then observed/restored per task."""
    prior = load_prior(name)
    images = load_eval_set(name)["images"]
    picks = np.linspace(0, len(images) - 1, count).round().astype(int)
    clean = to_unit(images[picks])
    rows = [to_rgb(clean)]
    for task in TASKS:
        gen = torch.Generator().manual_seed(seed)
        obs = simulate_observation(task, clean, generator=gen)
        result = restore(prior, obs.y, obs.mask, method="restora_flow", task=task, seed=seed)
        rows += [to_rgb(obs.y), to_rgb(result.images)]
    return rows


def tile(rows: list[np.ndarray], scale: int) -> np.ndarray:
    """Lay rows of images out as one uint8 image, ``GAP`` white pixels apart, upscaled."""
    n, h, w, _ = rows[0].shape
    grid = np.full((len(rows) * (h + GAP) - GAP, n * (w + GAP) - GAP, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            grid[r * (h + GAP):r * (h + GAP) + h, c * (w + GAP):c * (w + GAP) + w] = img
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--count", type=int, default=6, help="images per prior")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masks, noise and sampler")
    parser.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscale factor")
    args = parser.parse_args(argv)
    panels = [tile(panel(name, args.count, args.seed), args.scale) for name in SETS]
    gap = np.full((panels[0].shape[0], GAP * args.scale * 2, 3), 255, np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([panels[0], gap, panels[1]], axis=1)).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
