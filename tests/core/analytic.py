"""Closed-form velocity fields for exact, fast sampler tests.

The data distribution is "constant images": x1 = c * 1 + s * z with c ~ N(0, a^2), z ~ N(0, I).
Its covariance a^2 11^T + s^2 I has eigenvalue n a^2 + s^2 along the all-ones direction and s^2
across it, so the exact marginal velocity of the linear path is cheap to evaluate.
"""

from __future__ import annotations

import torch


def _gain(lam: float, t: torch.Tensor) -> torch.Tensor:
    # E[x1 - x0 | x_t] = f(lam) * x_t for a zero-mean Gaussian with variance lam along a direction.
    return (t * lam - (1 - t)) / (t**2 * lam + (1 - t) ** 2)


class ConstantImagePrior:
    """v(x, t) exact for x1 = c * ones + s * noise, c ~ N(0, a^2); counts its evaluations."""

    def __init__(self, a: float = 0.5, s: float = 0.02):
        self.a, self.s, self.calls = a, s, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        n = x[0].numel()
        tt = t.to(x.dtype).view(-1, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # projection onto the all-ones direction
        along, across = mean.expand_as(x), x - mean
        return _gain(n * self.a**2 + self.s**2, tt) * along + _gain(self.s**2, tt) * across
