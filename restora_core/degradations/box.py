"""Box inpainting: one rectangle of every image is missing (by default the paper's centred square)."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import param
from .base import Degradation, on_canvas

# The paper's centred box is 40 px at 128^2 (80 at 256^2), i.e. 5/16 of the side.
DEFAULT_BOX_FRACTION = 40 / 128


@dataclass(frozen=True)
class BoxParams:
    """Where the missing rectangle is."""

    box: tuple[int, int, int, int] | None = param(
        None, "the missing rectangle [top, left, height, width] in pixels; none: a centred "
        "square of side box_size", ge=0)
    box_size: int | None = param(
        None, f"side of the centred missing square; none: {DEFAULT_BOX_FRACTION:g} of the "
        "prior's shorter side (the paper's 40 px at 128^2)", ge=1)


def _box(params: BoxParams, height: int, width: int) -> tuple[int, int, int, int]:
    from .operators import centered_box

    if params.box is not None:
        return params.box
    size = params.box_size or round(min(height, width) * DEFAULT_BOX_FRACTION)
    return centered_box(height, width, int(size))


def _check(params: BoxParams, size: tuple[int, int]) -> None:
    height, width = size
    if params.box is not None:
        top, left, h, w = params.box
        if h < 1 or w < 1 or top + h > height or left + w > width:
            raise ValueError(f"box {list(params.box)} does not fit in the prior's "
                             f"{height}x{width}")
    elif params.box_size is not None and params.box_size > min(height, width):
        raise ValueError(f"box_size {params.box_size} does not fit in the prior's "
                         f"{height}x{width}")


def _mask(params, image, generator, mask):
    from .operators import box_mask

    b, _, h, w = image.shape
    return box_mask(b, h, w, _box(params, h, w))


_from_observed, _simulate = on_canvas(_mask)

ENTRY = Degradation(
    name="box",
    summary="fill one missing rectangle per image (default: the paper's centred square)",
    params=BoxParams,
    from_observed=_from_observed,
    simulate=_simulate,
    check_size=_check,
)
