"""The before/after preview: per sample, degraded input | restored | reference (clean inputs).

The write stage saves a strip for the first few ok images of each shard's first batch under
``<out>/preview/<shard_id>/``; the flow stacks a few strips into the grid it publishes, so the
preview works the same for every input format and never re-reads or re-degrades an input.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PREVIEW_ROWS = 4  # strips per shard, and rows in the grid
TILE = 64
_GAP = 4


def _tile(image: np.ndarray) -> np.ndarray:
    """(C, H, W) float in [-1, 1] -> (TILE, TILE, 3) uint8, nearest-neighbour (pixels stay visible)."""
    arr = np.clip((np.asarray(image, dtype=np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    arr = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr[:3]
    pil = Image.fromarray(np.transpose(arr, (1, 2, 0)))
    return np.asarray(pil.resize((TILE, TILE), Image.Resampling.NEAREST))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _side_by_side(tiles: list[np.ndarray]) -> np.ndarray:
    gap = np.full((tiles[0].shape[0], _GAP, 3), 255, np.uint8)
    return np.concatenate([part for t in tiles for part in (t, gap)][:-1], axis=1)


def _stacked(rows: list[np.ndarray]) -> bytes | None:
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    gap = np.full((_GAP, width, 3), 255, np.uint8)
    return _png(np.concatenate([part for r in padded for part in (r, gap)][:-1], axis=0))


def preview_strip(degraded: np.ndarray, restored: np.ndarray,
                  reference: np.ndarray | None = None) -> bytes:
    """PNG of one sample's tiles side by side: degraded | restored (| reference)."""
    return _png(_side_by_side([_tile(x) for x in (degraded, restored, reference)
                               if x is not None]))


def preview_grid(strips: list[bytes]) -> bytes | None:
    """PNG of strips stacked top to bottom (padded to the widest); None for no strips."""
    return _stacked([np.asarray(Image.open(io.BytesIO(s)).convert("RGB")) for s in strips])


def tile_grid(rows: list[list[np.ndarray]]) -> bytes | None:
    """PNG of rows of (TILE, TILE, 3) uint8 tiles, laid out as the preview is; None for no rows."""
    return _stacked([_side_by_side(tiles) for tiles in rows])


def preview_dir(shard_id: str) -> str:
    """Folder of a shard's preview strips, relative to the output prefix."""
    return f"preview/{shard_id}"


def preview_relpath(shard_id: str, row: int) -> str:
    """Path of one preview strip (by its row in the shard's first batch), relative to the output."""
    return f"{preview_dir(shard_id)}/{row:02d}.png"
