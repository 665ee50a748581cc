"""Baselines Restora-Flow is measured against, for mask-based problems y = m * x (+ noise).

- OT-ODE: Pokle, Muckley, Chen, Karrer, "Training-free linear image inverses via flows",
  TMLR 2024. Euler integration of the flow's velocity plus a PiGDM-style likelihood correction
  that back-propagates through the network, started at t0 from a noised pseudo-inverse of y.
- PnP-Flow: Martin, Gagneux, Hagemann, Steidl, "PnP-Flow: Plug-and-play image restoration
  with flow matching", ICLR 2025. Alternates a gradient step on the data term, re-noising to the
  current time, and the flow's one-step denoiser x + (1-t) v(x, t).

Time convention: t=0 noise, t=1 data. Both take per-image generators.
"""

from __future__ import annotations

import torch

from ..noise import Generators, PerImageNoise, as_generator_list
from .restora_flow import Callback, Velocity, _tvec


def ot_ode_nfe(steps: int, t0: float) -> int:
    """Forward evaluations (each with one backward) of ``ot_ode`` for ``steps`` and ``t0``."""
    return len(_ot_ode_grid(steps, t0))


def _ot_ode_grid(steps: int, t0: float) -> list[float]:
    return [k / steps for k in range(steps) if k / steps >= t0 - 1e-12]


def ot_ode(
    velocity: Velocity,
    y: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int = 100,
    t0: float = 0.2,
    sigma_y: float = 0.01,
    generator: Generators,
    callback: Callback | None = None,
) -> torch.Tensor:
    """OT-ODE for inpainting-type masks: ``y, mask`` as in ``restora_flow``.

    On the grid k/steps from ``t0``: x1_hat = x + (1-t) v(x, t); the likelihood gradient is the
    vector-Jacobian product of x1_hat with m*(y - x1_hat) / (r_t^2 + sigma_y^2), where
    r_t^2 = (1-t)^2 / (t^2 + (1-t)^2); the corrected velocity adds (1-t)/t times it.
    Needs autograd, so it runs under ``no_grad`` with a local ``enable_grad``, not inference mode.
    """
    if not 0.0 < t0 < 1.0:
        raise ValueError(f"t0 must lie in (0, 1), got {t0}")
    gens = as_generator_list(generator, y.shape[0])
    mask = mask.to(dtype=y.dtype)
    with torch.no_grad():
        eps = PerImageNoise(gens, y.shape[1:], device=y.device, dtype=y.dtype)()
        x = t0 * (mask * y) + (1.0 - t0) * eps
    dt = 1.0 / steps
    for i, t in enumerate(_ot_ode_grid(steps, t0)):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            v = velocity(xg, _tvec(t, xg))
            x1_hat = xg + (1.0 - t) * v
            r2 = (1.0 - t) ** 2 / (t**2 + (1.0 - t) ** 2)
            residual = (mask * (y - x1_hat) / (r2 + sigma_y**2)).detach()
            (grad,) = torch.autograd.grad(x1_hat, xg, grad_outputs=residual)
        with torch.no_grad():
            x = x + dt * (v.detach() + ((1.0 - t) / t) * grad)
        if callback is not None:
            callback({"i": i, "t": t, "x": x})
    return x.detach()


@torch.inference_mode()
def pnp_flow(
    velocity: Velocity,
    y: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int = 100,
    alpha: float = 0.5,
    lr: float = 1.0,
    averages: int = 1,
    generator: Generators,
    callback: Callback | None = None,
) -> torch.Tensor:
    """PnP-Flow for inpainting-type masks: ``y, mask`` as in ``restora_flow``.

    For t_k = k/steps, k = 0..steps-1: z = x - gamma_k * m*(x - y) with
    gamma_k = lr * (1 - t_k)^alpha (gradient step on 0.5*||m*(x - y)||^2), then
    x = mean over ``averages`` draws of D(t_k*z + (1-t_k)*eps) with D(u) = u + (1-t_k) v(u, t_k).
    Costs ``steps * averages`` network evaluations.
    """
    gens = as_generator_list(generator, y.shape[0])
    mask = mask.to(dtype=y.dtype)
    draw = PerImageNoise(gens, y.shape[1:], device=y.device, dtype=y.dtype)
    x = mask * y
    for k in range(steps):
        t = k / steps
        gamma = lr * (1.0 - t) ** alpha
        z = x - gamma * mask * (x - y)
        acc = torch.zeros_like(z)
        for _ in range(averages):
            u = t * z + (1.0 - t) * draw()
            acc += u + (1.0 - t) * velocity(u, _tvec(t, u))
        x = acc / averages
        if callback is not None:
            callback({"i": k, "t": t, "x": x})
    return x
