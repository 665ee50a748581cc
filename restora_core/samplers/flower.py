"""Flower: Pourya, El Rawas, Unser, "FLOWER: A flow-matching solver for inverse problems",
ICLR 2026 (arXiv 2509.26287), for mask problems y = m * x + noise (m = 1 for denoising).

Each step predicts the clean image with the flow, moves it to the most likely image given both
that prediction (Gaussian with the flow's variance at t) and the measurements, and re-noises the
result to the next time. For a mask operator the move is a per-pixel weighted mean, the exact
solution of the linear system the authors solve with conjugate gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..noise import Generators, PerImageNoise, as_generator_list
from .common import Callback, Velocity, one_step_denoiser
from .method import BORROWED, Method, param

_SOURCE = ("Flower repository (mehrsapo/Flower): method=flower with the OT prior on CelebA 128^2 "
           "runs steps 100, num_samples 1 (scripts/script_test_celeba_flower_1_save_iter.sh, "
           "scripts/script_compute_time.sh); the paper keeps the settings the same across tasks. "
           "scripts/script_test_celeba_flower1.sh averages 5 samples for its flow_indp variant")


def prediction_variance(t: float) -> float:
    """Flower's isotropic variance of the clean-image prediction at t: (1-t)^2 / (t^2 + (1-t)^2)."""
    return (1.0 - t) ** 2 / (t**2 + (1.0 - t) ** 2)


def consistent_destination(x1_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                           variance: float, sigma_y: float) -> torch.Tensor:
    """argmin_x ||m*(x - y)||^2 / sigma_y^2 + ||x - x1_hat||^2 / variance, per pixel in closed form.

    Known pixels get the mean of y and x1_hat weighted by their inverse variances; unknown pixels
    keep x1_hat. ``sigma_y = 0`` puts y on the known pixels exactly.
    """
    weight = mask * (variance / (variance + sigma_y**2))
    return x1_hat + weight * (y - x1_hat)


@torch.inference_mode()
def flower(
    velocity: Velocity,
    y: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int,
    averages: int,
    sigma_y: float,
    generator: Generators,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Flower for mask operators: ``y: (B, C, H, W)`` in [-1, 1], ``mask: (B, 1, H, W)`` (1 = known).

    From x ~ N(0, I), for t = k/steps, k = 0..steps-1: x1_hat = x + (1-t) v(x, t);
    x1 = ``consistent_destination(x1_hat, y, m, prediction_variance(t), sigma_y)``;
    x = t' * x1 + (1 - t') * eps with t' = (k+1)/steps and fresh noise eps. The result is the
    mean of ``averages`` independent runs; costs ``steps * averages`` network evaluations.
    """
    if sigma_y < 0:
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}")
    gens = as_generator_list(generator, y.shape[0])
    mask = mask.to(dtype=y.dtype)
    draw = PerImageNoise(gens, y.shape[1:], device=y.device, dtype=y.dtype)
    total = torch.zeros_like(y)
    for run in range(averages):
        x = draw()
        for k in range(steps):
            t, t_next = k / steps, (k + 1) / steps
            x1 = consistent_destination(one_step_denoiser(velocity, x, t), y, mask,
                                        prediction_variance(t), sigma_y)
            x = t_next * x1 + (1.0 - t_next) * draw()
            if callback is not None:
                callback({"i": run * steps + k, "t": t, "t_next": t_next, "x": x})
        total += x
    return total / averages


@dataclass(frozen=True)
class FlowerParams:
    """Flower's parameters: the authors' CelebA 128^2 setting, the same for every task."""

    steps: int = param(100, "iterations on the grid k/steps", ge=1)
    averages: int = param(1, "independent runs averaged (num_samples)", ge=1)


def _sample(velocity, y, mask, p: FlowerParams, noise, generator):
    return flower(velocity, y, mask, steps=p.steps, averages=p.averages, sigma_y=noise,
                  generator=generator)


ENTRY = Method(
    name="flower",
    summary="predict the clean image, make it consistent with y, re-noise to the next time",
    paper="Pourya, El Rawas, Unser, FLOWER: A flow-matching solver for inverse problems, "
          "ICLR 2026 (arXiv 2509.26287)",
    params=FlowerParams,
    sample=_sample,
    nfe=lambda p, noise: p.steps * p.averages,
    tasks=("inpaint", "box", "random", "superres", "denoise", "outpaint"),
    sources={"defaults": _SOURCE, "outpaint": BORROWED + _SOURCE},
    needs_mask=False,
)
