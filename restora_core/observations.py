"""Observations for each task: what the sampler sees (y, mask, noise level) given an input image.

``make_observation`` treats the input as the real, already degraded observation (production).
``simulate_observation`` degrades a clean reference first (evaluation and benchmarks). Both
dispatch to the task's entry in the degradation registry (``restora_core.degradations``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from .degradations import DEFAULT_SIGMA_Y, TASKS, Observation, get_task
from .noise import Generators

__all__ = ["DEFAULT_SIGMA_Y", "TASKS", "Observation", "make_observation", "simulate_observation"]


def _check_image(image: torch.Tensor) -> None:
    if image.dim() != 4:
        raise ValueError(f"image must have shape (B, C, H, W), got {tuple(image.shape)}")


def make_observation(task: str, image: torch.Tensor, *, params: dict[str, Any] | None = None,
                     generator: Generators | None = None, mask: torch.Tensor | None = None,
                     size: tuple[int, int] | None = None, any_size: bool = False
                     ) -> Observation:
    """Observation for ``task`` from an observed ``image: (B, C, h, w)`` in [-1, 1].

    ``size`` is the prior's (H, W), the canvas the observation is built on; when given, the
    image must have the task's input size for it (``restora tasks`` lists each task's
    geometry). inpaint: ``mask`` (B, 1, h, w) supplied, non-zero = known; box: a rectangle
    (``box=[top, left, h, w]`` or a centred ``box_size``) is treated as missing; random: a
    fraction ``p`` is dropped (needs ``generator``); superres: ``image`` is the low-resolution
    measurement, placed on the top-left pixel of every ``factor`` x ``factor`` block; denoise:
    the whole image, noise ``sigma``; outpaint: ``image`` is placed inside a border of ``pad``
    missing pixels (the default pad needs ``size``). ``any_size``: the image may have any size
    (it is restored in prior-sized tiles, ``restore_full``); ``size`` then only checks the
    parameters against the prior and sets the default pads.
    """
    entry = get_task(task)
    chosen = entry.make_params(params)
    _check_image(image)
    if size is not None:
        entry.check_size(chosen, size)
        want = entry.input_size(chosen, size)
        if not any_size and tuple(image.shape[-2:]) != tuple(want):
            raise ValueError(f"task '{task}' takes a {want[0]}x{want[1]} input for a prior of "
                             f"{size[0]}x{size[1]}, got {image.shape[-2]}x{image.shape[-1]}")
    return replace(entry.from_observed(chosen, image, size, generator, mask), task=task)


def simulate_observation(task: str, clean: torch.Tensor, *, params: dict[str, Any] | None = None,
                         generator: Generators, mask: torch.Tensor | None = None,
                         sigma_y: float = DEFAULT_SIGMA_Y) -> Observation:
    """Degrade a clean ``clean: (B, C, H, W)`` reference (at the prior's size) for ``task`` and
    add measurement noise ``sigma_y`` (denoising: its own ``sigma`` instead).

    Super-resolution measures the low-resolution image first, then builds the sparse observation
    from it (never from the reference).
    """
    entry = get_task(task)
    chosen = entry.make_params(params)
    _check_image(clean)
    entry.check_size(chosen, tuple(clean.shape[-2:]))
    return replace(entry.simulate(chosen, clean, generator, mask, sigma_y), task=task)
