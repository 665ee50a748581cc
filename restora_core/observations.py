"""Observations for each task: what the sampler sees (y, mask, noise level) given an input image.

``make_observation`` treats the input as the real, already degraded observation (production).
``simulate_observation`` degrades a clean reference first (evaluation and benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .degradations import SuperResolution, add_noise, box_mask, centered_box, random_mask
from .noise import Generators

TASKS = ("inpaint", "box", "random", "superres", "denoise")

# The paper's centred box is 40 px at 128^2 (80 at 256^2), i.e. 5/16 of the side.
DEFAULT_BOX_FRACTION = 40 / 128
DEFAULT_RANDOM_P = 0.7
DEFAULT_DENOISE_SIGMA = 0.2
DEFAULT_SIGMA_Y = 0.01


@dataclass(frozen=True)
class Observation:
    """What a sampler restores from: ``y`` (B, C, H, W), ``mask`` (B, 1, H, W) or None, noise level."""

    y: torch.Tensor
    mask: torch.Tensor | None
    task: str
    sigma: float | None = None


def _box(params: dict[str, Any], height: int, width: int) -> tuple[int, int, int, int]:
    if "box" in params and params["box"] is not None:
        top, left, h, w = (int(v) for v in params["box"])
        return top, left, h, w
    size = params.get("box_size") or round(min(height, width) * DEFAULT_BOX_FRACTION)
    return centered_box(height, width, int(size))


def _check_image(image: torch.Tensor) -> None:
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, C, H, W), got {tuple(image.shape)}")


def make_observation(task: str, image: torch.Tensor, *, params: dict[str, Any] | None = None,
                     generator: Generators | None = None,
                     mask: torch.Tensor | None = None) -> Observation:
    """Observation for ``task`` from an observed ``image: (B, C, h, w)`` in [-1, 1].

    inpaint: ``mask`` (B, 1, H, W) supplied, 1 = known; box: a rectangle (``box=(top, left, h, w)``
    or a centred ``box_size``) is treated as missing; random: a fraction ``p`` of pixels is dropped
    (needs ``generator``); superres: ``image`` is the low-resolution measurement, placed on the
    top-left pixel of every ``factor`` x ``factor`` block; denoise: the whole image, noise ``sigma``.
    """
    params = dict(params or {})
    _check_image(image)
    b, _, h, w = image.shape
    if task == "inpaint":
        if mask is None:
            raise ValueError("task 'inpaint' needs a mask (0 = missing, non-zero = known)")
        if mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"mask size {tuple(mask.shape[-2:])} differs from image size {(h, w)}")
        m = (mask > 0).float().to(image.device)
        return Observation(image * m, m, task)
    if task == "box":
        m = box_mask(b, h, w, _box(params, h, w)).to(image.device)
        return Observation(image * m, m, task)
    if task == "random":
        if generator is None:
            raise ValueError("task 'random' needs a generator for its mask")
        m = random_mask(b, h, w, float(params.get("p", DEFAULT_RANDOM_P)), generator).to(image.device)
        return Observation(image * m, m, task)
    if task == "superres":
        factor = int(params.get("factor", 2))
        op = SuperResolution(factor, h * factor, w * factor).to(image.device)
        return Observation(op.A_adjoint(image), op.mask().expand(b, -1, -1, -1).contiguous(), task)
    if task == "denoise":
        return Observation(image, None, task, float(params.get("sigma", DEFAULT_DENOISE_SIGMA)))
    raise ValueError(f"unknown task '{task}'; expected one of {TASKS}")


def simulate_observation(task: str, clean: torch.Tensor, *, params: dict[str, Any] | None = None,
                         generator: Generators, mask: torch.Tensor | None = None,
                         sigma_y: float = DEFAULT_SIGMA_Y) -> Observation:
    """Degrade a clean ``clean: (B, C, H, W)`` reference for ``task`` and add measurement noise.

    Super-resolution measures the low-resolution image first, then builds the sparse observation
    from it (never from the reference). Denoising adds noise of std ``sigma`` instead of ``sigma_y``.
    """
    params = dict(params or {})
    _check_image(clean)
    if task == "superres":
        factor = int(params.get("factor", 2))
        op = SuperResolution(factor, clean.shape[-2], clean.shape[-1]).to(clean.device)
        low = add_noise(op(clean), sigma_y, generator)
        return make_observation("superres", low, params=params)
    if task == "denoise":
        sigma = float(params.get("sigma", DEFAULT_DENOISE_SIGMA))
        return Observation(add_noise(clean, sigma, generator), None, task, sigma)
    obs = make_observation(task, clean, params=params, generator=generator, mask=mask)
    return Observation(obs.mask * add_noise(clean, sigma_y, generator), obs.mask, task)
