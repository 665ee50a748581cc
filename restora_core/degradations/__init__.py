"""Degradations: the task registry (torch-free) and the operators behind it.

``get_task(name)`` is a task's entry (``base.Degradation``): its typed parameters, observation
paths, input geometry and side inputs. The linear operators (``MaskOperator``,
``SuperResolution``, ``Denoising``) and mask builders live in ``operators`` and are imported
from here on first use, so that importing the registry never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import DEFAULT_SIGMA_Y, Degradation, Observation
from .registry import REGISTRY, TASKS, get_task

if TYPE_CHECKING:
    from .operators import (
        Denoising,
        MaskOperator,
        SuperResolution,
        add_noise,
        box_mask,
        centered_box,
        random_mask,
    )

_OPERATORS = ("Denoising", "MaskOperator", "SuperResolution", "add_noise", "box_mask",
              "centered_box", "random_mask")

__all__ = ["DEFAULT_SIGMA_Y", "REGISTRY", "TASKS", "Degradation", "Denoising", "MaskOperator",
           "Observation", "SuperResolution", "add_noise", "box_mask", "centered_box", "get_task",
           "random_mask"]


def __getattr__(name: str) -> Any:
    """The operators, imported from ``operators`` (and torch) on first use."""
    if name not in _OPERATORS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".operators", __name__), name)
    globals()[name] = value
    return value
