"""Conditional flow matching with the linear (rectified / OT-CFM) path.

Time convention (the package's): t = 0 is Gaussian noise ``x0``, t = 1 is data ``x1``;
``x_t = t * x1 + (1 - t) * x0`` and the regression target is the path's velocity
``u_t = x1 - x0``, with ``t ~ U(0, 1)``. The model is called ``model(x_t, t)`` with ``t: (B,)``.

Minibatch OT coupling (Tong et al. 2023, Pooladian et al. 2023): before building the path,
the noise samples are re-paired with the images by the permutation minimising the total
squared Euclidean distance, solved exactly by ``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def linear_path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Point and velocity of the linear path.

    ``x0, x1: (B, C, H, W)``, ``t: (B,)`` in [0, 1] -> ``x_t = t*x1 + (1-t)*x0`` and
    ``u_t = x1 - x0``, both ``(B, C, H, W)``.
    """
    tb = t.to(x1.dtype).view(-1, *([1] * (x1.dim() - 1)))
    return tb * x1 + (1 - tb) * x0, x1 - x0


def ot_permutation(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Permutation ``p`` such that pairing ``x0[p[i]]`` with ``x1[i]`` minimises
    ``sum_i ||x0[p[i]] - x1[i]||^2`` (exact, equal weights). ``x0, x1: (B, ...)`` -> ``(B,)``
    long on ``x0``'s device."""
    from scipy.optimize import linear_sum_assignment

    a = x0.detach().flatten(1).cpu().numpy().astype(np.float64)
    b = x1.detach().flatten(1).cpu().numpy().astype(np.float64)
    # cost[i, j] = ||x1[i] - x0[j]||^2 = |x1_i|^2 + |x0_j|^2 - 2 x1_i.x0_j (one BLAS call)
    cost = (b * b).sum(1)[:, None] + (a * a).sum(1)[None, :] - 2.0 * (b @ a.T)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(rows), np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm).to(x0.device)


@dataclass
class CFMBatch:
    """One training batch of the linear path: inputs ``x_t: (B, C, H, W)``, ``t: (B,)`` and the
    target ``u_t: (B, C, H, W)``."""

    x_t: torch.Tensor
    t: torch.Tensor
    u_t: torch.Tensor

    def to(self, device: torch.device | str) -> CFMBatch:
        """The batch on ``device`` (through pinned memory, asynchronously, for CUDA)."""
        device = torch.device(device)

        def move(x: torch.Tensor) -> torch.Tensor:
            if device.type == "cuda" and x.device.type == "cpu":
                return (x if x.is_pinned() else x.pin_memory()).to(device, non_blocking=True)
            return x.to(device)

        return CFMBatch(x_t=move(self.x_t), t=move(self.t), u_t=move(self.u_t))


def make_cfm_batch(x1: torch.Tensor, generator: torch.Generator, *, ot: bool = False
                   ) -> CFMBatch:
    """Draw noise ``x0 ~ N(0, I)`` and ``t ~ U(0, 1)`` from ``generator`` (on the generator's
    device, normally CPU so that runs are reproducible across devices), optionally OT-pair them
    with ``x1: (B, C, H, W)`` in [-1, 1], and build the path point and target on ``x1``'s
    device."""
    gdev = generator.device
    x0 = torch.randn(x1.shape, generator=generator, device=gdev, dtype=torch.float32)
    t = torch.rand(x1.shape[0], generator=generator, device=gdev, dtype=torch.float32)
    if ot:
        x0 = x0[ot_permutation(x0, x1).to(x0.device)]
    x0 = x0.to(x1.device, non_blocking=True)
    t = t.to(x1.device, non_blocking=True)
    x_t, u_t = linear_path(x0, x1, t)
    return CFMBatch(x_t=x_t, t=t, u_t=u_t)


def cfm_loss(prediction: torch.Tensor, batch: CFMBatch) -> torch.Tensor:
    """Mean squared error between the predicted velocity and ``u_t`` (float32 scalar)."""
    return F.mse_loss(prediction.float(), batch.u_t.float())
