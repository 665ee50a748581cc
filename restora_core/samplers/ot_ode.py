"""OT-ODE: Pokle, Muckley, Chen, Karrer, "Training-free linear image inverses via flows",
TMLR 2024, for mask problems y = m * x + noise (inpainting, decimation super-resolution, denoising
with m = 1).

Euler integration of the flow's velocity plus a PiGDM-style likelihood correction that
back-propagates through the network, started at t0 from a noised pseudo-inverse of y.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..noise import Generators, PerImageNoise, as_generator_list
from ..schedule import gamma_t, start_index
from .common import Callback, Velocity, tvec
from .method import BORROWED, Method, param

GAMMAS = ("constant", "gamma_t")
_SCRIPT = ("PnP-Flow repository (annegnx/PnP-Flow) scripts/script_test.sh, CelebA 128^2, "
           "method=ot_ode problem={problem}: start_time {t0}, gamma {gamma}; steps_ode from "
           "config/method_config/ot_ode.yaml")


def _first_level(steps: int, t0: float) -> int:
    # The published loop starts on floor(steps * t0); level 0 (t = 0, where the correction's
    # (1-t)/t diverges) only happens for steps < 1/t0 and is skipped.
    return max(1, start_index(steps, t0))


def ot_ode_nfe(steps: int, t0: float) -> int:
    """Forward evaluations (each with one backward) of ``ot_ode`` for ``steps`` and ``t0``."""
    return max(0, steps - _first_level(steps, t0))


def ot_ode(
    velocity: Velocity,
    y: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int,
    t0: float,
    gamma: str,
    sigma_y: float,
    generator: Generators,
    callback: Callback | None = None,
) -> torch.Tensor:
    """OT-ODE for mask operators: ``y: (B, C, H, W)``, ``mask: (B, 1, H, W)`` (1 = known).

    From x = t0*m*y + (1-t0)*eps, for t = k/steps, k = max(1, floor(steps*t0)) .. steps-1:
    x1_hat = x + (1-t) v(x, t); g = J^T [m*(y - x1_hat) / (r_t^2 + sigma_y^2)] with J the
    Jacobian of x1_hat and r_t^2 = (1-t)^2 / (t^2 + (1-t)^2); x += (v + (1-t)/t * gamma(t) * g) / steps
    with gamma(t) = 1 ("constant") or ``gamma_t(t)``. Needs autograd, so it runs under ``no_grad``
    with a local ``enable_grad``, not inference mode.
    """
    if not 0.0 < t0 < 1.0:
        raise ValueError(f"t0 must lie in (0, 1), got {t0}")
    if gamma not in GAMMAS:
        raise ValueError(f"gamma must be one of {GAMMAS}, got {gamma!r}")
    gens = as_generator_list(generator, y.shape[0])
    mask = mask.to(dtype=y.dtype)
    with torch.no_grad():
        eps = PerImageNoise(gens, y.shape[1:], device=y.device, dtype=y.dtype)()
        x = t0 * (mask * y) + (1.0 - t0) * eps
    for i, k in enumerate(range(_first_level(steps, t0), steps)):
        t = k / steps
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            v = velocity(xg, tvec(t, xg))
            x1_hat = xg + (1.0 - t) * v
            r2 = (1.0 - t) ** 2 / (t**2 + (1.0 - t) ** 2)
            residual = (mask * (y - x1_hat) / (r2 + sigma_y**2)).detach()
            (grad,) = torch.autograd.grad(x1_hat, xg, grad_outputs=residual)
        weight = 1.0 if gamma == "constant" else gamma_t(t)
        with torch.no_grad():
            x = x + (v.detach() + ((1.0 - t) / t) * weight * grad) / steps
        if callback is not None:
            callback({"i": i, "t": t, "x": x})
    return x.detach()


@dataclass(frozen=True)
class OTODEParams:
    """OT-ODE's parameters; the defaults are PnP-Flow's config/method_config/ot_ode.yaml."""

    steps: int = param(100, "Euler grid k/steps", ge=1)
    t0: float = param(0.2, "start time: the walk starts on level floor(steps * t0)", gt=0.0, lt=1.0)
    gamma: str = param("constant", "guidance weight: constant (1) or gamma_t", choices=GAMMAS)


def _sample(velocity, y, mask, p: OTODEParams, noise, generator):
    return ot_ode(velocity, y, mask, steps=p.steps, t0=p.t0, gamma=p.gamma, sigma_y=noise,
                  generator=generator)


_TASKS = {  # ours -> (PnP-Flow problem name, start_time, gamma)
    "box": ("inpainting", 0.1, "gamma_t"),
    "inpaint": ("paintbrush_inpainting", 0.1, "gamma_t"),
    "random": ("random_inpainting", 0.1, "constant"),
    "superres": ("superresolution", 0.1, "constant"),
    "denoise": ("denoising", 0.3, "gamma_t"),
    "outpaint": ("inpainting", 0.1, "gamma_t"),  # borrowed from box: no published setting
}

ENTRY = Method(
    name="ot_ode",
    summary="Euler steps of the velocity plus a likelihood correction back-propagated through it",
    paper="Pokle, Muckley, Chen, Karrer, Training-free linear image inverses via flows, TMLR 2024",
    params=OTODEParams,
    sample=_sample,
    nfe=lambda p, noise: ot_ode_nfe(p.steps, p.t0),
    tasks=tuple(_TASKS),
    task_defaults={task: {"t0": t0, "gamma": g} for task, (_, t0, g) in _TASKS.items()},
    sources={"defaults": "PnP-Flow repository config/method_config/ot_ode.yaml (steps_ode 100, "
                         "start_time 0.2, gamma constant)",
             **{task: (BORROWED if task == "outpaint" else "")
                + _SCRIPT.format(problem=pr, t0=t0, gamma=g) for task, (pr, t0, g) in _TASKS.items()},
             # Their super-resolution operator averages blocks and its r_t^2 line has a typo
             # (t*k for t^2); ours decimates, so the mask formula above applies unchanged.
             },
    needs_mask=False,
)
