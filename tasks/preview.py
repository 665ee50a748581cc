"""The before/after preview: per sample, degraded input | restored | reference (clean inputs).

Each picture is scaled to ``TILE`` pixels on its longer side (a large image shrinks, keeping
its aspect ratio); an image restored in windows (size policy ``tile``) has them outlined on the
restored picture.

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
_OUTLINE = (255, 64, 0)  # window outlines on the restored picture

Box = tuple[int, int, int, int]  # (top, left, height, width) in the image's pixels


def _tile(image: np.ndarray, windows: list[Box] | None = None) -> np.ndarray:
    """(C, H, W) float in [-1, 1] -> (h, w, 3) uint8 with TILE on the longer side: enlarged
    nearest-neighbour (pixels stay visible), shrunk by area; ``windows`` outlined."""
    arr = np.clip((np.asarray(image, dtype=np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    arr = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr[:3]
    height, width = arr.shape[-2:]
    scale = TILE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX
    out = np.array(Image.fromarray(np.transpose(arr, (1, 2, 0))).resize(size, method))
    for top, left, h, w in windows or ():
        t, b = round(top * scale), max(round(top * scale), round((top + h) * scale) - 1)
        lft, r = round(left * scale), max(round(left * scale), round((left + w) * scale) - 1)
        out[t:b + 1, [lft, r]] = _OUTLINE
        out[[t, b], lft:r + 1] = _OUTLINE
    return out


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
                  reference: np.ndarray | None = None,
                  windows: list[Box] | None = None) -> bytes:
    """PNG of one sample's pictures side by side: degraded | restored (| reference), with the
    restored ``windows`` (a tiled image's, in its pixels) outlined on the restored one."""
    tiles = [_tile(degraded), _tile(restored, windows)]
    if reference is not None:
        tiles.append(_tile(reference, None))
    return _png(_side_by_side(tiles))


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
