"""Restora's engine: flow-matching priors and the Restora-Flow sampler, in pure PyTorch.

Time convention, everywhere in this package: t = 0 is Gaussian noise, t = 1 is data, and the
linear path is x_t = t * x1 + (1 - t) * x0. A velocity field is called ``v(x, t)`` with ``x``
(B, C, H, W) in [-1, 1] and ``t`` of shape (B,). Masks are (B, 1, H, W), 1 = known pixel.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .priors import Prior, load_prior, save_prior
    from .restoration import METHODS, RestoreResult, method_nfe, restore

__all__ = ["METHODS", "Prior", "RestoreResult", "load_prior", "method_nfe", "restore", "save_prior"]

# Resolved on first use, so that torch-free modules (``seeding``, ``choices``) import without
# torch: Ray's I/O workers use them and should stay small.
_HOME = {"Prior": "priors", "load_prior": "priors", "save_prior": "priors",
         "METHODS": "restoration", "RestoreResult": "restoration", "method_nfe": "restoration",
         "restore": "restoration"}


def __getattr__(name: str) -> Any:
    """The public names, imported from their modules on first use."""
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value
