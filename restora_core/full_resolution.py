"""Restore one image of any size at its own resolution with a prior of ``T x T`` tiles.

The image is padded to at least ``T`` per side (``windows.pad_to_tile``), cut into the windows
that need the prior (``windows.plan_windows`` around the holes, or the whole image for tasks
that touch every pixel: denoising, super-resolution), and each window is restored by the
registry's method through a tiled velocity (``tiling.TiledVelocity``). Known pixels are copied
back from the observation, so they survive exactly; everything outside the windows is the
observation itself.

Cost is counted in evaluations of one prior-sized tile: a window of ``n`` tiles costs ``n``
times the method's NFE, so a small hole in a huge image costs what one tile costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .priors import Prior
from .restoration import restore
from .seeding import image_seed
from .tiling import TiledVelocity, tile_layout
from .windows import Window, pad_to_tile, plan_windows


@dataclass(frozen=True)
class Tiling:
    """How large images are tiled; None takes a quarter of the tile (8 px at 32 x 32)."""

    overlap: int | None = None  # pixels neighbouring tiles share
    margin: int | None = None  # context kept around a hole's box, per side

    def resolved(self, tile: int) -> tuple[int, int]:
        """(overlap, margin) in pixels for tiles of side ``tile``."""
        overlap = tile // 4 if self.overlap is None else self.overlap
        margin = tile // 4 if self.margin is None else self.margin
        if not 0 <= overlap < tile:
            raise ValueError(f"tile overlap must lie in [0, {tile}), got {overlap}")
        if margin < 0:
            raise ValueError(f"hole margin must be >= 0, got {margin}")
        return overlap, margin


@dataclass(frozen=True)
class FullResult:
    """One restored image ``image: (1, C, H, W)``, its per-pixel ``std`` (K > 1 samples, zero
    outside the windows and on known pixels kept exactly) and what it cost: ``nfe`` tile evaluations per sample, the
    ``windows`` restored (in the image's pixels) and the most ``tiles`` in one of them."""

    image: torch.Tensor
    std: torch.Tensor | None
    nfe: int
    windows: list[Window]
    tiles: int
    params: dict[str, Any]


def window_seed(seed: int, window: Window, whole: bool) -> int:
    """The seed of one window: the image's own seed when the window is the whole image, so an
    image of the prior's size restores exactly as without tiling."""
    if whole:
        return int(seed)
    return image_seed(seed, f"window:{window.top},{window.left},{window.height},{window.width}")


def restore_full(prior: Prior | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 y: torch.Tensor, mask: torch.Tensor | None = None, *, whole: bool = False,
                 tile: int | None = None, tiling: Tiling = Tiling(), seed: int = 0,
                 max_batch: int | None = None, **restore_kwargs: Any) -> FullResult:
    """Restore ``y: (1, C, H, W)`` in [-1, 1] of any size, ``mask: (1, 1, H, W)`` (1 = known).

    ``whole``: restore every pixel as one tiled window (denoising, super-resolution) instead of
    windows around the missing pixels. ``tile`` is the prior's side (read from a ``Prior``).
    ``seed`` is the image's seed; ``max_batch`` bounds tiles per network pass. Other keyword
    arguments go to ``restore`` (``method``, ``task``, ``samples``, ``sigma``, parameters...).
    """
    if y.dim() != 4 or y.shape[0] != 1:
        raise ValueError(f"y must be one image (1, C, H, W), got {tuple(y.shape)}")
    if isinstance(prior, Prior):
        velocity, side = prior.velocity, prior.resolution
    else:
        velocity, side = prior, tile
    if side is None:
        raise ValueError("tile: give the prior's side for a bare velocity callable")
    overlap, margin = tiling.resolved(side)
    padded, known, (height, width) = pad_to_tile(y, mask, side)
    full = Window(0, 0, padded.shape[-2], padded.shape[-1])
    if whole or known is None:
        windows = [full]
    else:
        windows = plan_windows((known[0, 0] < 0.5).cpu().numpy(), side, margin)
    out = padded.clone()
    std = torch.zeros_like(padded) if restore_kwargs.get("samples", 1) > 1 else None
    nfe, most, params = 0, 0, {}
    for window in windows:
        rows, cols = window.slices()
        layout = tile_layout(window.height, window.width, side, overlap)
        tiled = TiledVelocity(velocity, layout, max_batch)
        part_mask = None if known is None else known[..., rows, cols]
        per_pass = None if max_batch is None else max(1, max_batch // layout.count)
        result = restore(tiled, padded[..., rows, cols], part_mask,
                         seed=[window_seed(seed, window, window == full)], max_batch=per_pass,
                         **restore_kwargs)
        restored = result.images.to(out.dtype)
        if part_mask is not None and not whole:
            restored = torch.where(part_mask > 0.5, padded[..., rows, cols], restored)
        out[..., rows, cols] = restored
        if std is not None and result.std is not None:
            spread = result.std.to(std.dtype)
            if part_mask is not None and not whole:  # known pixels are copied: no spread
                spread = torch.where(part_mask > 0.5, torch.zeros_like(spread), spread)
            std[..., rows, cols] = spread
        nfe += result.nfe * layout.count
        most = max(most, layout.count)
        params = result.params
    shown = [Window(w.top, w.left, min(w.bottom, height) - w.top, min(w.right, width) - w.left)
             for w in windows]
    return FullResult(image=out[..., :height, :width],
                      std=None if std is None else std[..., :height, :width], nfe=nfe,
                      windows=shown, tiles=most, params=params)
