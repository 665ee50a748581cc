"""Full-reference and observation-consistency metrics, one value per image.

Images are (B, C, H, W) float tensors in [-1, 1]; masks are (B, 1, H, W) (or (B, C, H, W)) floats
in {0, 1}, 1 = known pixel. PSNR and SSIM clip both images to [-1, 1] (what saving them as an image
does) and map them to [0, 1], so the data range is 1. All functions return a float32 tensor of shape
(B,) on the input's device; the arithmetic runs in float64.

Edge cases, decided once here:
- identical images (zero error): ``psnr``/``psnr_hole`` return ``+inf``. Aggregate with a median or
  drop non-finite values before a mean.
- ``psnr_hole`` on an image with no unknown pixels (empty hole): ``nan``.
- ``consistency`` on an image with no known pixels: ``nan``.
- NaNs in the inputs propagate to that image's value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["consistency", "psnr", "psnr_hole", "ssim"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of ``x`` against ``ref``, both (B, C, H, W) in [-1, 1] -> (B,); inf if equal.

    Both images are clipped to [-1, 1] and mapped to [0, 1]; ``data_range`` is the peak value on
    that [0, 1] scale (1 unless you know why you want otherwise).
    """
    _check_pair(x, ref)
    a, b = _to_unit(x), _to_unit(ref)
    mse = (a - b).pow(2).flatten(1).mean(dim=1)
    return _mse_to_psnr(mse, data_range).to(torch.float32)


def psnr_hole(x: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR in dB over the unknown pixels only (mask == 0): x, ref (B, C, H, W) in [-1, 1] -> (B,).

    ``mask``: (B, 1, H, W) or (B, C, H, W) in {0, 1}, 1 = known. An image whose mask has no unknown
    pixel gets ``nan``; a perfect fill gets ``inf``. Data range 1 after mapping to [0, 1].
    """
    _check_pair(x, ref)
    hole = 1.0 - _check_mask(mask, x).to(torch.float64)
    a, b = _to_unit(x), _to_unit(ref)
    hole = hole.expand_as(a)
    count = hole.flatten(1).sum(dim=1)
    sq_err = ((a - b).pow(2) * hole).flatten(1).sum(dim=1)
    mse = sq_err / count  # 0/0 -> nan for an empty hole
    return _mse_to_psnr(mse, 1.0).to(torch.float32)


def consistency(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean |x - y| over known pixels (mask == 1): x, y (B, C, H, W) in [-1, 1] -> (B,), >= 0.

    Measured on the [-1, 1] scale of the inputs, without clipping (the same scale as the
    observation noise ``sigma_y``). ``mask``: (B, 1, H, W) or (B, C, H, W) in {0, 1}; ``None`` means
    every pixel is known (denoising). An image with no known pixel gets ``nan``.
    """
    _check_pair(x, y, names=("x", "y"))
    diff = (x.to(torch.float64) - y.to(torch.float64)).abs()
    if mask is None:
        return diff.flatten(1).mean(dim=1).to(torch.float32)
    known = _check_mask(mask, x).to(torch.float64).expand_as(diff)
    total = (diff * known).flatten(1).sum(dim=1)
    return (total / known.flatten(1).sum(dim=1)).to(torch.float32)


def ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """SSIM of ``x`` against ``ref``, both (B, C, H, W) in [-1, 1] with H, W >= 11 -> (B,) in [-1, 1].

    Wang et al. (2004): Gaussian window 11x11 with sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1
    after clipping and mapping to [0, 1]; the SSIM map is averaged over the valid region (no
    padding) and over channels. Matches ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=0)``.
    """
    _check_pair(x, ref)
    _, c, h, w = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(
            f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {h}x{w}"
        )
    a, b = _to_unit(x), _to_unit(ref)
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA, a.device)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1

    def blur(t: torch.Tensor) -> torch.Tensor:
        # Separable Gaussian, valid region only: each channel filtered on its own.
        t = F.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return F.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).flatten(1).mean(dim=1).to(torch.float32)


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] in float64, clipped."""
    return ((x.to(torch.float64) + 1.0) / 2.0).clamp(0.0, 1.0)


def _mse_to_psnr(mse: torch.Tensor, data_range: float) -> torch.Tensor:
    # 10 log10(R^2 / mse); mse == 0 -> +inf, mse nan -> nan.
    return 20.0 * math.log10(data_range) - 10.0 * torch.log10(mse)


def _gaussian_1d(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _check_pair(x: torch.Tensor, ref: torch.Tensor, names: tuple[str, str] = ("x", "ref")) -> None:
    for name, t in zip(names, (x, ref)):
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}")
    if x.shape != ref.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, "
            f"got {tuple(x.shape)} and {tuple(ref.shape)}"
        )


def _check_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    if (
        not isinstance(mask, torch.Tensor)
        or mask.ndim != 4
        or mask.shape[0] != b
        or mask.shape[1] not in (1, c)
        or mask.shape[2:] != (h, w)
    ):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be ({b}, 1, {h}, {w}) or ({b}, {c}, {h}, {w}), got {shape}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must be binary: 1 = known pixel, 0 = unknown")
    return mask
