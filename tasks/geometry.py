"""Which image size a job accepts, and the words for an image that is not that size.

``input_size`` is the one place that asks what a task decodes its inputs to: the task's entry in
the degradation registry (``RunInfo.input_size``), e.g. 1/factor of the prior for
super-resolution. Free of torch, Prefect and Ray: the read stage uses it for each image's error
text.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

from restora_core.degradations import get_task

if TYPE_CHECKING:  # annotations only: the read stage needs no pydantic
    from .spec import JobSpec, RunInfo


def input_size(spec: JobSpec, info: RunInfo, params: dict[str, Any] | None = None
               ) -> tuple[int, int]:
    """(height, width) an input image must have (before any size policy) for this job."""
    return info.input_size(spec, params)


def fits(spec: JobSpec, info: RunInfo, params: dict[str, Any] | None, width: int,
         height: int) -> bool:
    """Whether an image of ``width`` x ``height`` passes the job's size policy."""
    return spec.size_policy != "error" or (height, width) == input_size(spec, info, params)


def _prior_name(prior: str) -> str:
    """A shipped prior's name as is; a checkpoint URI by its file name."""
    return posixpath.basename(prior) if "/" in prior else prior


def size_message(spec: JobSpec, info: RunInfo, params: dict[str, Any] | None, width: int,
                 height: int) -> str:
    """Why a ``width`` x ``height`` image does not fit, with advice that keeps its pixels."""
    h, w = input_size(spec, info, params)
    prior = _prior_name(spec.prior)
    got = f"(got {width}x{height}; size_policy=error)"
    if (h, w) == info.prior_size:
        return (f"the input must be {w}x{h} for {prior} {got}; --size-policy tile (the "
                "default) restores other sizes at their own size, resize or center-crop maps "
                "them onto it")
    chosen = get_task(spec.task).resolved(spec.task_params if params is None else params)
    at = ", ".join(f"{k} {v}" for k, v in chosen.items())
    need = f"the input must be {w}x{h} for {prior} at {at} {got}"
    if width > w or height > h:
        scale = info.resolution / max(h, w)
        return (f"{need}; for {width}x{height} images use a prior of about "
                f"{round(width * scale)}x{round(height * scale)}; if these are clean images to "
                "test on, --inputs clean degrades and scores them (--size-policy resize would "
                "shrink them and throw their resolution away; --size-policy tile, the default, "
                "restores them as they are)")
    return (f"{need}; --size-policy tile (the default) takes any size, resize enlarges them to "
            f"{w}x{h} first")
