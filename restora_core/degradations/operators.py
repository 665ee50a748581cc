"""Mask-based degradations as linear operators: y = A(x) + sigma_y * n.

Masks are (B, 1, H, W) floats in {0, 1}, 1 = known pixel, shared across channels; each image in a
batch may have its own mask. Operators hold their masks as buffers so ``.to(device)`` moves them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..noise import Generators, as_generator_list, batch_randn


class MaskOperator(nn.Module):
    """Inpainting: A(x) = m * x (self-adjoint), for box, random and free-form masks."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        _check_mask(mask)
        self.register_buffer("_mask", mask.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A(x): zero the unknown pixels of ``x: (B, C, H, W)``."""
        return self._mask * x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T(y) = m * y."""
        return self._mask * y

    def mask(self) -> torch.Tensor:
        """The (B, 1, H, W) mask, 1 = known."""
        return self._mask


class SuperResolution(nn.Module):
    """Super-resolution by ``factor`` s: A(x) keeps the top-left pixel of every s x s block.

    The adjoint places a low-resolution image on those pixels of a zero image; ``mask()`` marks them.
    """

    def __init__(self, factor: int, height: int, width: int):
        super().__init__()
        if factor < 1:
            raise ValueError(f"super-resolution factor must be >= 1, got {factor}")
        if height % factor or width % factor:
            raise ValueError(f"size {height}x{width} is not divisible by the factor {factor}")
        self.factor, self.height, self.width = factor, height, width
        m = torch.zeros(1, 1, height, width)
        m[..., ::factor, ::factor] = 1.0
        self.register_buffer("_mask", m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A(x): (B, C, H, W) -> (B, C, H/s, W/s)."""
        return x[..., :: self.factor, :: self.factor]

    def A_adjoint(self, z: torch.Tensor) -> torch.Tensor:
        """A^T(z): place ``z: (B, C, H/s, W/s)`` on the sampled pixels of a zero (B, C, H, W)."""
        out = z.new_zeros(z.shape[0], z.shape[1], self.height, self.width)
        out[..., :: self.factor, :: self.factor] = z
        return out

    def mask(self) -> torch.Tensor:
        """The (1, 1, H, W) sparse mask of sampled pixels."""
        return self._mask


class Denoising(nn.Module):
    """Denoising: A is the identity; every pixel is known but noisy with std ``sigma``."""

    def __init__(self, sigma: float):
        super().__init__()
        if not 0.0 < sigma < 1.0:
            raise ValueError(f"denoising sigma must lie in (0, 1), got {sigma}")
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """A(x) = x."""
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T(y) = y."""
        return y


def _check_mask(mask: torch.Tensor) -> None:
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must have shape (B, 1, H, W), got {tuple(mask.shape)}")
    if not torch.all((mask == 0) | (mask == 1)):
        raise ValueError("mask must be binary (0 = missing, 1 = known)")


def box_mask(batch: int, height: int, width: int,
             boxes: Sequence[tuple[int, int, int, int]] | tuple[int, int, int, int]) -> torch.Tensor:
    """Mask (B, 1, H, W) with the rectangles ``(top, left, h, w)`` missing; one box for all images
    or one per image."""
    if len(boxes) == 4 and all(isinstance(b, int) for b in boxes):
        boxes = [tuple(boxes)] * batch  # type: ignore[list-item]
    if len(boxes) != batch:
        raise ValueError(f"got {len(boxes)} boxes for a batch of {batch}")
    m = torch.ones(batch, 1, height, width)
    for i, (top, left, h, w) in enumerate(boxes):  # type: ignore[misc]
        if h <= 0 or w <= 0 or top < 0 or left < 0 or top + h > height or left + w > width:
            raise ValueError(f"box {(top, left, h, w)} does not fit in {height}x{width}")
        m[i, :, top : top + h, left : left + w] = 0.0
    return m


def centered_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """The centred ``size`` x ``size`` box (top, left, h, w); the paper uses 40 at 128^2, 80 at 256^2."""
    if not 0 < size <= min(height, width):
        raise ValueError(f"box size {size} does not fit in {height}x{width}")
    return ((height - size) // 2, (width - size) // 2, size, size)


def random_mask(batch: int, height: int, width: int, p: float, generator: Generators) -> torch.Tensor:
    """Mask (B, 1, H, W) with a fraction ``p`` of pixels missing, image i drawn from its generator."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"missing fraction p must lie in [0, 1), got {p}")
    gens = as_generator_list(generator, batch)
    u = torch.stack([torch.rand((1, height, width), generator=g, device=g.device) for g in gens])
    return (u >= p).float().cpu()


def add_noise(y: torch.Tensor, sigma_y: float, generator: Generators) -> torch.Tensor:
    """y + sigma_y * n with per-image noise; sigma_y is on the [-1, 1] scale."""
    if sigma_y == 0:
        return y
    gens = as_generator_list(generator, y.shape[0])
    return y + sigma_y * batch_randn(gens, y.shape[1:], device=y.device, dtype=y.dtype)
