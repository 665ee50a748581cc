"""Per-image summaries of a per-pixel uncertainty map (the std of several samples)."""

from __future__ import annotations

import torch


def uncertainty_summary(std: torch.Tensor,
                        mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and 95th percentile, per image, of ``std: (B, C, H, W)`` over the missing pixels.

    ``mask``: (B, 1, H, W), 1 = known; the missing pixels are those with mask 0 (every channel of
    them). With no mask (denoising), or for an image with no missing pixel, every pixel counts.
    Returns two (B,) float64 tensors.
    """
    if std.dim() != 4:
        raise ValueError(f"std must have shape (B, C, H, W), got {tuple(std.shape)}")
    means, p95s = [], []
    for i in range(std.shape[0]):
        values = std[i].double()
        if mask is not None:
            hole = (mask[i] == 0).expand_as(values)
            if bool(hole.any()):
                values = values[hole]
        values = values.flatten()
        means.append(values.mean())
        p95s.append(torch.quantile(values, 0.95))
    return torch.stack(means), torch.stack(p95s)
