"""Random inpainting: a fraction p of the pixels, drawn per image from its seed, is missing."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import param
from .base import Degradation, on_canvas


@dataclass(frozen=True)
class RandomParams:
    """How many pixels are missing."""

    p: float = param(0.7, "fraction of missing pixels, drawn per image from its seed", ge=0.0, lt=1.0)


def _mask(params: RandomParams, image, generator, mask):
    from .operators import random_mask

    if generator is None:
        raise ValueError("task 'random' needs a generator for its mask")
    b, _, h, w = image.shape
    return random_mask(b, h, w, params.p, generator)


_from_observed, _simulate = on_canvas(_mask)

ENTRY = Degradation(
    name="random",
    summary="fill a random fraction p of missing pixels (drawn per image from its seed)",
    params=RandomParams,
    from_observed=_from_observed,
    simulate=_simulate,
)
