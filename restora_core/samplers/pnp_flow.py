"""PnP-Flow: Martin, Gagneux, Hagemann, Steidl, "PnP-Flow: Plug-and-play image restoration with
flow matching", ICLR 2025, for mask problems y = m * x + noise (m = 1 for denoising).

Alternates a gradient step on the data term, a re-noising to the current time and the flow's
one-step denoiser, averaged over several noise draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..noise import Generators, PerImageNoise, as_generator_list
from .common import Callback, Velocity, one_step_denoiser
from .method import BORROWED, Method, param

_SCRIPT = ("PnP-Flow repository (annegnx/PnP-Flow) scripts/script_test.sh, CelebA 128^2, "
           "method=pnp_flow problem={problem}: lr_pnp 1.0, alpha {alpha}, num_samples 5, "
           "steps_pnp 100")


@torch.inference_mode()
def pnp_flow(
    velocity: Velocity,
    y: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int,
    alpha: float,
    lr: float,
    averages: int,
    generator: Generators,
    callback: Callback | None = None,
) -> torch.Tensor:
    """PnP-Flow for mask operators: ``y: (B, C, H, W)``, ``mask: (B, 1, H, W)`` (1 = known).

    For t_k = k/steps, k = 0..steps-1: z = x - gamma_k * m*(x - y) with
    gamma_k = lr * (1 - t_k)^alpha (a gradient step on ||m*(x - y)||^2 / (2 sigma_y^2) of size
    sigma_y^2 * gamma_k), then x = mean over ``averages`` draws of D(t_k*z + (1-t_k)*eps) with
    D(u) = u + (1-t_k) v(u, t_k). Costs ``steps * averages`` network evaluations.
    """
    gens = as_generator_list(generator, y.shape[0])
    mask = mask.to(dtype=y.dtype)
    draw = PerImageNoise(gens, y.shape[1:], device=y.device, dtype=y.dtype)
    x = mask * y
    for k in range(steps):
        t = k / steps
        z = x - lr * (1.0 - t) ** alpha * mask * (x - y)
        acc = torch.zeros_like(z)
        for _ in range(averages):
            acc += one_step_denoiser(velocity, t * z + (1.0 - t) * draw(), t)
        x = acc / averages
        if callback is not None:
            callback({"i": k, "t": t, "x": x})
    return x


@dataclass(frozen=True)
class PnPFlowParams:
    """PnP-Flow's parameters; the defaults are PnP-Flow's config/method_config/pnp_flow.yaml."""

    steps: int = param(100, "iterations on the grid k/steps", ge=1)
    alpha: float = param(0.5, "step-size exponent: gamma_k = lr * (1 - t_k)^alpha", ge=0.0)
    lr: float = param(1.0, "step size lr (in units of sigma_y^2)", gt=0.0)
    averages: int = param(5, "noise draws averaged per iteration (num_samples)", ge=1)


def _sample(velocity, y, mask, p: PnPFlowParams, noise, generator):
    return pnp_flow(velocity, y, mask, steps=p.steps, alpha=p.alpha, lr=p.lr,
                    averages=p.averages, generator=generator)


_TASKS = {  # ours -> (PnP-Flow problem name, alpha)
    "box": ("inpainting", 0.5),
    "inpaint": ("paintbrush_inpainting", 0.5),
    "random": ("random_inpainting", 0.01),
    "superres": ("superresolution", 0.3),
    "denoise": ("denoising", 0.8),
    "outpaint": ("inpainting", 0.5),  # borrowed from box: no published setting
}

ENTRY = Method(
    name="pnp_flow",
    summary="gradient step on the data term, re-noise to t, flow denoiser, averaged over draws",
    paper="Martin, Gagneux, Hagemann, Steidl, PnP-Flow, ICLR 2025 (arXiv 2410.02423)",
    params=PnPFlowParams,
    sample=_sample,
    nfe=lambda p, noise: p.steps * p.averages,
    tasks=tuple(_TASKS),
    task_defaults={task: {"alpha": a} for task, (_, a) in _TASKS.items()},
    sources={"defaults": "PnP-Flow repository config/method_config/pnp_flow.yaml (steps_pnp 100, "
                         "lr_pnp 1.0, alpha 0.5, num_samples 5, gamma_style alpha_1_minus_t)",
             **{task: (BORROWED if task == "outpaint" else "") + _SCRIPT.format(problem=pr, alpha=a)
                for task, (pr, a) in _TASKS.items()}},
    needs_mask=False,
)
