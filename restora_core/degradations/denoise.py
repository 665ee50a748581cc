"""Denoising: every pixel is known but carries Gaussian noise of std sigma."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import param
from .base import Degradation, Observation


@dataclass(frozen=True)
class DenoiseParams:
    """The noise level."""

    sigma: float = param(0.2, "noise std on the [-1, 1] scale", gt=0.0, lt=1.0)


def _from_observed(params: DenoiseParams, image, size, generator, mask):
    return Observation(image, None, "", params.sigma)


def _simulate(params: DenoiseParams, clean, generator, mask, sigma_y):
    from .operators import add_noise

    return Observation(add_noise(clean, params.sigma, generator), None, "", params.sigma)


ENTRY = Degradation(
    name="denoise",
    summary="remove Gaussian noise of std sigma (every pixel is observed)",
    params=DenoiseParams,
    from_observed=_from_observed,
    simulate=_simulate,
    noise_param="sigma",
    whole_image=True,
)
