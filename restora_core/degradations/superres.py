"""Super-resolution: the input is the image at 1/factor of the prior's size; the sampler sees it
on the top-left pixel of every factor x factor block."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import param
from .base import Degradation, Observation


@dataclass(frozen=True)
class SuperResParams:
    """The scale factor."""

    factor: int = param(2, "scale factor s: the input is 1/s of the prior's size per side", ge=1)


def _input_size(params: SuperResParams, size: tuple[int, int]) -> tuple[int, int]:
    return size[0] // params.factor, size[1] // params.factor


def _check(params: SuperResParams, size: tuple[int, int]) -> None:
    height, width = size
    if height % params.factor or width % params.factor:
        side = height if height % params.factor else width
        raise ValueError(f"factor {params.factor} does not divide the prior's resolution {side}")


def _from_observed(params: SuperResParams, image, size, generator, mask):
    from .operators import SuperResolution

    s = params.factor
    op = SuperResolution(s, image.shape[-2] * s, image.shape[-1] * s).to(image.device)
    return Observation(op.A_adjoint(image), op.mask().expand(image.shape[0], -1, -1, -1)
                       .contiguous(), "")


def _simulate(params: SuperResParams, clean, generator, mask, sigma_y):
    # The sparse observation is built from the noisy low-resolution measurement, never from the
    # reference's other pixels.
    from .operators import SuperResolution, add_noise

    op = SuperResolution(params.factor, clean.shape[-2], clean.shape[-1]).to(clean.device)
    low = add_noise(op(clean), sigma_y, generator)
    return _from_observed(params, low, None, None, None)


ENTRY = Degradation(
    name="superres",
    summary="upscale by an integer factor (the input is the low-resolution image)",
    params=SuperResParams,
    from_observed=_from_observed,
    simulate=_simulate,
    geometry="the prior's size / factor",
    input_size=_input_size,
    check_size=_check,
    whole_image=True,
)
