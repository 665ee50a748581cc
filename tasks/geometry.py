"""Which image size a job accepts, and the words for an image that is not that size.

``input_size`` is the one place that asks what a task decodes its inputs to (today
``RunInfo.input_resolution``); re-point it when task knowledge moves into a task registry.
Free of torch, Prefect and Ray: the read stage uses it for each image's error text.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the read stage needs no pydantic
    from .spec import JobSpec, RunInfo


def input_size(spec: JobSpec, info: RunInfo, params: dict[str, Any] | None = None) -> int:
    """Side of the square an input image must have (before any size policy) for this job."""
    return info.input_resolution(spec, params)


def fits(spec: JobSpec, info: RunInfo, params: dict[str, Any] | None, width: int,
         height: int) -> bool:
    """Whether an image of ``width`` x ``height`` passes the job's size policy."""
    side = input_size(spec, info, params)
    return spec.size_policy != "error" or (width, height) == (side, side)


def _prior_name(prior: str) -> str:
    """A shipped prior's name as is; a checkpoint URI by its file name."""
    return posixpath.basename(prior) if "/" in prior else prior


def size_message(spec: JobSpec, info: RunInfo, params: dict[str, Any] | None, width: int,
                 height: int) -> str:
    """Why a ``width`` x ``height`` image does not fit, with advice that keeps its pixels."""
    side = input_size(spec, info, params)
    prior = _prior_name(spec.prior)
    got = f"(got {width}x{height}; size_policy=error)"
    if side == info.resolution:
        return (f"the input must be {side}x{side} for {prior} {got}; --size-policy resize or "
                "center-crop maps other sizes onto it")
    factor = info.resolution // side
    need = f"the input must be {side}x{side} for {prior} at factor {factor} {got}"
    if width > side or height > side:
        return (f"{need}; to upscale {width}x{height} images by {factor} use a prior of "
                f"{width * factor}x{height * factor}; if these are clean images to test on, "
                "--inputs clean degrades and scores them (--size-policy resize would shrink "
                "them and throw their resolution away)")
    return f"{need}; --size-policy resize enlarges them to {side}x{side} first"
