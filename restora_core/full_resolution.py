"""Restore one image of any size at its own resolution with a prior of ``T x T`` tiles.

The image is padded to at least ``T`` per side (``windows.pad_to_tile``), cut into the windows
that need the prior (``windows.plan_windows`` around the holes, or the whole image for tasks
that touch every pixel: denoising, super-resolution), and each window is restored by the
registry's method through a tiled velocity (``tiling.TiledVelocity``). Known pixels are copied
back from the observation, so they survive exactly; everything outside the windows is the
observation itself.

Cost is counted in evaluations of one prior-sized tile: a window of ``n`` tiles costs ``n``
times the method's NFE, so a small hole in a huge image costs what one tile costs.

Three steps, so that windows of one shape share network passes whatever image they come from:
``plan_full`` (per image: pad, windows, their seeds), ``restore_windows`` (equally shaped
windows of any images in one batched ``restore`` call) and ``assemble_full`` (per image: paste
the windows back, crop). Each window has its own seed, so grouping never changes a pixel.
``restore_full`` composes them for one image, ``restore_planned`` for several.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


@dataclass(frozen=True)
class FullPlan:
    """One image ready for restoration: ``padded: (1, C, H, W)`` (at least a tile per side),
    ``known: (1, 1, H, W)`` or None, the ``size`` to crop back to, the ``windows`` to restore
    and each window's seed. ``whole``: every pixel is restored (known pixels are not kept)."""

    padded: torch.Tensor
    known: torch.Tensor | None
    size: tuple[int, int]
    windows: list[Window]
    seeds: list[int]
    whole: bool
    tile: int
    overlap: int

    def crop(self, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(y, mask) of window ``k``: ``(1, C, h, w)`` and ``(1, 1, h, w)`` or None."""
        rows, cols = self.windows[k].slices()
        return (self.padded[..., rows, cols],
                None if self.known is None else self.known[..., rows, cols])

    def group_key(self, k: int) -> tuple[int, int, bool]:
        """Windows with equal keys can share one ``restore_windows`` call: (h, w, has a mask)."""
        window = self.windows[k]
        return window.height, window.width, self.known is not None


@dataclass(frozen=True)
class RestoredWindow:
    """One restored window: ``image: (1, C, h, w)``, its ``std`` (K > 1 samples) or None, its
    cost ``nfe`` in tile evaluations per sample, its ``tiles`` and the method's ``params``."""

    image: torch.Tensor
    std: torch.Tensor | None
    nfe: int
    tiles: int
    params: dict[str, Any]


def _split_prior(prior: Prior | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 tile: int | None) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], int]:
    if isinstance(prior, Prior):
        return prior.velocity, prior.resolution
    if tile is None:
        raise ValueError("tile: give the prior's side for a bare velocity callable")
    return prior, tile


def plan_full(y: torch.Tensor, mask: torch.Tensor | None = None, *, tile: int,
              whole: bool = False, tiling: Tiling = Tiling(), seed: int = 0) -> FullPlan:
    """Plan ``y: (1, C, H, W)`` in [-1, 1], ``mask: (1, 1, H, W)`` (1 = known) for a prior of
    ``tile`` x ``tile``: pad, pick the windows (all of it when ``whole`` or no mask), seed them."""
    if y.dim() != 4 or y.shape[0] != 1:
        raise ValueError(f"y must be one image (1, C, H, W), got {tuple(y.shape)}")
    overlap, margin = tiling.resolved(tile)
    padded, known, size = pad_to_tile(y, mask, tile)
    full = Window(0, 0, padded.shape[-2], padded.shape[-1])
    if whole or known is None:
        windows = [full]
    else:
        windows = plan_windows((known[0, 0] < 0.5).cpu().numpy(), tile, margin)
    seeds = [window_seed(seed, w, w == full) for w in windows]
    return FullPlan(padded, known, size, windows, seeds, whole, tile, overlap)


def window_groups(plans: Sequence[FullPlan]) -> list[list[tuple[int, int]]]:
    """The windows of ``plans`` that can be restored together, as (plan, window) index pairs,
    grouped by shape in order of first appearance."""
    groups: dict[tuple[int, int, bool], list[tuple[int, int]]] = {}
    for p, plan in enumerate(plans):
        for k in range(len(plan.windows)):
            groups.setdefault(plan.group_key(k), []).append((p, k))
    return list(groups.values())


def restore_windows(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    plans: Sequence[FullPlan], members: Sequence[tuple[int, int]], *,
                    max_batch: int | None = None, device: torch.device | str | None = None,
                    **restore_kwargs: Any) -> list[RestoredWindow]:
    """Restore the equally shaped windows ``members`` ((plan, window) pairs, one group of
    ``window_groups``) in one ``restore`` call, each with its own seed, at most ``max_batch``
    tiles per network pass, on ``device`` (None: where the plans are). ``velocity`` is the
    prior's tile velocity; ``restore_kwargs`` go to ``restore`` (``method``, ``task``,
    ``samples``, ``sigma``, parameters...)."""
    first = plans[members[0][0]]
    if len({plans[p].group_key(k) for p, k in members}) != 1:
        raise ValueError("restore_windows takes windows of one shape; group them first")
    crops = [plans[p].crop(k) for p, k in members]
    y = torch.cat([c[0] for c in crops]).to(device)
    mask = None if first.known is None else torch.cat([c[1] for c in crops]).to(device)
    layout = tile_layout(y.shape[-2], y.shape[-1], first.tile, first.overlap)
    per_pass = None if max_batch is None else max(1, max_batch // layout.count)
    result = restore(TiledVelocity(velocity, layout, max_batch), y, mask,
                     seed=[plans[p].seeds[k] for p, k in members], max_batch=per_pass,
                     **restore_kwargs)
    return [RestoredWindow(image=result.images[n:n + 1],
                           std=None if result.std is None else result.std[n:n + 1],
                           nfe=result.nfe * layout.count, tiles=layout.count, params=result.params)
            for n in range(len(members))]


def assemble_full(plan: FullPlan, restored: Sequence[RestoredWindow], samples: int = 1
                  ) -> FullResult:
    """Paste ``restored`` (one per window of ``plan``, in order) into the image, keep its known
    pixels exactly (unless ``whole``) and crop back; ``samples`` K > 1 gives a ``std`` map."""
    out = plan.padded.clone()
    std = torch.zeros_like(plan.padded) if samples > 1 else None
    for k, part in enumerate(restored):
        rows, cols = plan.windows[k].slices()
        y, part_mask = plan.crop(k)
        image = part.image.to(out.device, out.dtype)
        if part_mask is not None and not plan.whole:
            image = torch.where(part_mask > 0.5, y, image)
        out[..., rows, cols] = image
        if std is not None and part.std is not None:
            spread = part.std.to(std.device, std.dtype)
            if part_mask is not None and not plan.whole:  # known pixels are copied: no spread
                spread = torch.where(part_mask > 0.5, torch.zeros_like(spread), spread)
            std[..., rows, cols] = spread
    height, width = plan.size
    shown = [Window(w.top, w.left, min(w.bottom, height) - w.top, min(w.right, width) - w.left)
             for w in plan.windows]
    return FullResult(image=out[..., :height, :width],
                      std=None if std is None else std[..., :height, :width],
                      nfe=sum(part.nfe for part in restored), windows=shown,
                      tiles=max((part.tiles for part in restored), default=0),
                      params=restored[-1].params if restored else {})


def restore_planned(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    plans: Sequence[FullPlan], *, max_batch: int | None = None,
                    **restore_kwargs: Any) -> list[FullResult]:
    """Restore several planned images, windows of one shape sharing network passes (at most
    ``max_batch`` tiles per pass); pixels are those of restoring each image alone."""
    done: dict[tuple[int, int], RestoredWindow] = {}
    for members in window_groups(plans):
        parts = restore_windows(velocity, plans, members, max_batch=max_batch, **restore_kwargs)
        done.update(zip(members, parts))
    return [assemble_full(plan, [done[p, k] for k in range(len(plan.windows))],
                          restore_kwargs.get("samples", 1))
            for p, plan in enumerate(plans)]


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
    velocity, side = _split_prior(prior, tile)
    plan = plan_full(y, mask, tile=side, whole=whole, tiling=tiling, seed=seed)
    (full,) = restore_planned(velocity, [plan], max_batch=max_batch, **restore_kwargs)
    return full
