"""Outpainting: extend the canvas by ``pad`` pixels per edge; the new border is missing.

Observed, the input is the known centre, (H - top - bottom) x (W - left - right) for a prior of
H x W, placed on the canvas; simulated, a clean reference at the prior's size loses its border.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..params import param
from .base import Degradation, Observation, masked_simulation

# With no pad given, every edge grows by 1/8 of the prior's side: a square input stays square
# (so square datasets pass size_policy=error) and the known centre is (3/4)^2 of the canvas.
DEFAULT_PAD_FRACTION = 1 / 8


@dataclass(frozen=True)
class OutpaintParams:
    """How far the canvas extends past the input on each edge."""

    pad: tuple[int, int, int, int] | None = param(
        None, "pixels added on each edge [top, right, bottom, left]; none: "
        f"{DEFAULT_PAD_FRACTION:g} of the prior's side on every edge", ge=0)


def pads(params: OutpaintParams, size: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(top, right, bottom, left) in pixels for a prior of ``size`` (needed for the default)."""
    if params.pad is not None:
        return params.pad
    if size is None:
        raise ValueError("task 'outpaint' with the default pad needs the prior's size; give "
                         "size=(H, W) or an explicit pad")
    vertical, horizontal = (round(side * DEFAULT_PAD_FRACTION) for side in size)
    return vertical, horizontal, vertical, horizontal


def _check(params: OutpaintParams, size: tuple[int, int]) -> None:
    top, right, bottom, left = pads(params, size)
    height, width = size
    if top + bottom >= height or left + right >= width:
        raise ValueError(f"pad {[top, right, bottom, left]} leaves no known pixels of the "
                         f"prior's {height}x{width} (top + bottom = {top + bottom}, "
                         f"left + right = {left + right})")


def _input_size(params: OutpaintParams, size: tuple[int, int]) -> tuple[int, int]:
    top, right, bottom, left = pads(params, size)
    return size[0] - top - bottom, size[1] - left - right


def _border(batch: int, size: tuple[int, int], pad: tuple[int, int, int, int]):
    """(B, 1, H, W) mask: 1 inside, 0 on the pad border."""
    import torch

    top, right, bottom, left = pad
    m = torch.zeros(batch, 1, *size)
    m[..., top:size[0] - bottom, left:size[1] - right] = 1.0
    return m


def _canvas_mask(params: OutpaintParams, clean, generator, mask):
    size = tuple(clean.shape[-2:])
    _check(params, size)
    return _border(clean.shape[0], size, pads(params, size))


def _from_observed(params: OutpaintParams, image, size, generator, mask):
    top, right, bottom, left = pads(params, size)
    canvas = (image.shape[-2] + top + bottom, image.shape[-1] + left + right)
    m = _border(image.shape[0], canvas, (top, right, bottom, left)).to(image.device)
    y = image.new_zeros(*image.shape[:2], *canvas)
    y[..., top:canvas[0] - bottom, left:canvas[1] - right] = image
    return Observation(y, m, "")


ENTRY = Degradation(
    name="outpaint",
    summary="extend the canvas by pad pixels per edge and fill the new border",
    params=OutpaintParams,
    from_observed=_from_observed,
    simulate=masked_simulation(_canvas_mask),
    geometry="the prior's size minus the pads (H - top - bottom) x (W - left - right)",
    input_size=_input_size,
    check_size=_check,
)
