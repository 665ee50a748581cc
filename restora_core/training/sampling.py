"""Unconditional Euler samples and image grids, for monitoring a training run."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.inference_mode()
def euler_sample(velocity: Velocity, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` from ``t = 0`` (noise ``x0: (B, C, H, W)``) to
    ``t = 1`` with ``steps`` uniform Euler steps; returns ``(B, C, H, W)`` clamped to [-1, 1]."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    x = x0.clone()
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), i * dt, device=x.device, dtype=x.dtype)
        x = x + dt * velocity(x, t).to(x.dtype)
    return x.clamp(-1.0, 1.0)


def image_grid(images: torch.Tensor | np.ndarray, nrow: int | None = None, pad: int = 2
               ) -> np.ndarray:
    """``(B, C, H, W)`` in [-1, 1] -> one ``(rows*(H+pad)+pad, cols*(W+pad)+pad, C)`` uint8 grid
    (C = 1 or 3), white separators."""
    x = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else images
    b, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    rows = math.ceil(b / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    u8 = np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    for i in range(b):
        r, col = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
        grid[y0:y0 + h, x0:x0 + w] = u8[i]
    return grid


def grid_png(grid: np.ndarray) -> bytes:
    """PNG bytes of a uint8 ``(H, W, 1|3)`` grid (needs PIL)."""
    import io

    from PIL import Image

    im = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()
