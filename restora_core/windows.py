"""Where an image needs the prior: windows around its holes, and padding for small images.

Only damaged pixels need restoring. ``plan_windows`` puts one window around each connected
group of missing pixels: a single ``T x T`` tile centred on the group when the group and a
context margin fit in one tile (clamped to the image), else the group's box plus the margin,
which ``restora_core.tiling`` covers with overlapping tiles. A tile centred on a hole matters for
priors of centred objects (a digit prior never saw a shifted digit). Windows that overlap or
touch are merged, so each pixel is restored by at most one window, and pixels far from every
hole cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Window:
    """A rectangle of an image, in pixels: rows ``top:top+height``, columns ``left:left+width``."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        """One past the last row."""
        return self.top + self.height

    @property
    def right(self) -> int:
        """One past the last column."""
        return self.left + self.width

    def slices(self) -> tuple[slice, slice]:
        """(rows, columns) slices that cut this window out of an (..., H, W) array."""
        return slice(self.top, self.bottom), slice(self.left, self.right)


def _grown(lo: int, hi: int, length: int, tile: int) -> tuple[int, int]:
    """[lo, hi) grown symmetrically to at least ``tile`` and clamped into [0, length)."""
    if hi - lo < tile:
        lo = (lo + hi) // 2 - tile // 2
        hi = lo + tile
    shift = max(0, -lo) - max(0, hi - length)
    return max(0, lo + shift), min(length, hi + shift)


def _window_for(box: tuple[int, int, int, int], height: int, width: int, tile: int,
                margin: int) -> Window:
    """The window that restores the missing pixels in ``box`` (top, left, bottom, right)."""
    top, left, bottom, right = box
    top, left = max(0, top - margin), max(0, left - margin)
    bottom, right = min(height, bottom + margin), min(width, right + margin)
    top, bottom = _grown(top, bottom, height, tile)
    left, right = _grown(left, right, width, tile)
    return Window(top, left, bottom - top, right - left)


def plan_windows(missing: np.ndarray, tile: int, margin: int) -> list[Window]:
    """Windows that restore every missing pixel of an (H, W) boolean map, H and W >= ``tile``.

    Each connected group of missing pixels (8-neighbours) gets a window: one ``tile`` x ``tile``
    square centred on the group when the group's box plus ``margin`` fits in a tile, else that
    box plus the margin (at least a tile per side). Overlapping or touching windows merge into
    the window of their groups' union, repeatedly, so windows never share a pixel. Sorted by
    position; empty when nothing is missing.
    """
    from scipy import ndimage

    height, width = missing.shape
    if height < tile or width < tile:
        raise ValueError(f"image {height}x{width} is smaller than the tile {tile}: pad it first")
    labels, _ = ndimage.label(missing, structure=np.ones((3, 3), dtype=bool))
    boxes = [(s[0].start, s[1].start, s[0].stop, s[1].stop)
             for s in ndimage.find_objects(labels) if s is not None]
    while True:
        windows = [_window_for(b, height, width, tile, margin) for b in boxes]
        painted = np.zeros((height, width), dtype=bool)
        for w in windows:
            painted[w.slices()] = True
        groups, n = ndimage.label(painted)  # 4-neighbours: touching windows join
        if n == len(windows):
            return sorted(windows, key=lambda w: (w.top, w.left))
        merged: dict[int, tuple[int, int, int, int]] = {}
        for box, w in zip(boxes, windows):
            g = int(groups[w.top, w.left])
            old = merged.get(g, box)
            merged[g] = (min(old[0], box[0]), min(old[1], box[1]),
                         max(old[2], box[2]), max(old[3], box[3]))
        boxes = list(merged.values())


def _pad_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Pad the end of axis ``dim`` (-2 rows, -1 columns) to ``size`` by reflection; reflection
    cannot reach past the axis's own length, so it repeats, and a 1-pixel axis is replicated."""
    while x.shape[dim] < size:
        have = x.shape[dim]
        grow = size - have if have == 1 else min(size - have, have - 1)
        pads = (0, grow, 0, 0) if dim == -1 else (0, 0, 0, grow)
        x = F.pad(x, pads, mode="replicate" if have == 1 else "reflect")
    return x


def pad_to_tile(image: torch.Tensor, mask: torch.Tensor | None, tile: int
                ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
    """Reflect-pad ``image: (B, C, H, W)`` at the bottom/right to at least ``tile`` per side; the
    padding is marked known in ``mask: (B, 1, H, W)``. Returns (image, mask, (H, W) to crop to)."""
    height, width = image.shape[-2:]
    out = _pad_axis(_pad_axis(image, tile, -2), tile, -1)
    if mask is None or out.shape == image.shape:
        return out, mask, (height, width)
    known = torch.ones(mask.shape[0], 1, *out.shape[-2:], dtype=mask.dtype, device=mask.device)
    known[..., :height, :width] = mask
    return out, known, (height, width)
