"""Restora's engine: flow-matching priors and the Restora-Flow sampler, in pure PyTorch.

Time convention, everywhere in this package: t = 0 is Gaussian noise, t = 1 is data, and the
linear path is x_t = t * x1 + (1 - t) * x0. A velocity field is called ``v(x, t)`` with ``x``
(B, C, H, W) in [-1, 1] and ``t`` of shape (B,). Masks are (B, 1, H, W), 1 = known pixel.
"""

from .priors import Prior, load_prior, save_prior
from .restore import METHODS, RestoreResult, method_nfe, restore

__all__ = ["METHODS", "Prior", "RestoreResult", "load_prior", "method_nfe", "restore", "save_prior"]
