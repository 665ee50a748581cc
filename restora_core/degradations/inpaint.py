"""Inpainting with a mask per image: pixels where the mask is 0 are missing."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Degradation, on_canvas


@dataclass(frozen=True)
class InpaintParams:
    """Inpainting takes no parameters: the mask says everything."""


def _mask(params, image, generator, mask):
    if mask is None:
        raise ValueError("task 'inpaint' needs a mask (0 = missing, non-zero = known)")
    if mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"mask size {tuple(mask.shape[-2:])} differs from image size "
                         f"{tuple(image.shape[-2:])}")
    return (mask > 0).float()


_from_observed, _simulate = on_canvas(_mask)

ENTRY = Degradation(
    name="inpaint",
    summary="fill the pixels a per-image mask marks missing (mask file: 0 = missing)",
    params=InpaintParams,
    from_observed=_from_observed,
    simulate=_simulate,
    side_input="mask",
)
