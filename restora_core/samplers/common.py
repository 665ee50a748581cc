"""Types and helpers every sampler shares.

Time convention: t=0 noise, t=1 data, x_t = t*x1 + (1-t)*x0; ``velocity(x, t)`` with t of shape (B,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]


def tvec(t: float, x: torch.Tensor) -> torch.Tensor:
    """Time ``t`` as the (B,) tensor a velocity field takes, on ``x``'s device and dtype."""
    return torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)


def one_step_denoiser(velocity: Velocity, x: torch.Tensor, t: float) -> torch.Tensor:
    """The flow's estimate of the clean image from x_t: x + (1 - t) v(x, t)."""
    return x + (1.0 - t) * velocity(x, tvec(t, x))
