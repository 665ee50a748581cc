"""The public restoration entry point: validate inputs once, look the method up, seed each image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .noise import generators_for_seeds
from .observations import DEFAULT_DENOISE_SIGMA, DEFAULT_SIGMA_Y
from .priors import Prior
from .samplers import METHODS, get_method, params_dict
from .seeding import image_seed

__all__ = ["METHODS", "RestoreResult", "method_nfe", "restore"]


@dataclass(frozen=True)
class RestoreResult:
    """Restored ``images`` (B, C, H, W) in [-1, 1], the network evaluations ``nfe`` they cost and
    the parameters that ran (``params``; ``steps`` and ``corrections`` repeated for convenience)."""

    images: torch.Tensor
    nfe: int
    method: str
    steps: int
    corrections: int
    params: dict[str, Any]
    task: str | None = None


def method_nfe(method: str, steps: int | None = None, corrections: int | None = None, *,
               task: str | None = None, sigma: float | None = None, **params: Any) -> int:
    """Network evaluations ``method`` costs for one batch with ``task``'s defaults and overrides.

    ``sigma`` is the denoising noise level (only the denoising path's cost depends on it).
    """
    overrides = {"steps": steps, "corrections": corrections, **params}
    return get_method(method).cost(task, _given(overrides), sigma)


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _seeds(seed: int | Sequence[int], batch: int) -> list[int]:
    if isinstance(seed, int):
        return [image_seed(seed, i) for i in range(batch)]
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch}; pass one int or one per image")
    return seeds


def _validate(prior_channels: int | None, prior_res: int | None, y: torch.Tensor,
              mask: torch.Tensor | None) -> None:
    if y.dim() != 4:
        raise ValueError(f"y must have shape (B, C, H, W), got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or infinite values")
    if prior_channels is not None and y.shape[1] != prior_channels:
        raise ValueError(f"y has {y.shape[1]} channels but the prior takes {prior_channels}; "
                         "convert the images (gray <-> RGB) first")
    if prior_res is not None and tuple(y.shape[-2:]) != (prior_res, prior_res):
        raise ValueError(f"y is {tuple(y.shape[-2:])} but the prior takes {prior_res}x{prior_res}; "
                         "resize or crop the images first")
    if mask is None:
        return
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != y.shape[-2:] \
            or mask.shape[0] not in (1, y.shape[0]):
        raise ValueError(f"mask must have shape ({y.shape[0]}, 1, {y.shape[2]}, {y.shape[3]}), "
                         f"got {tuple(mask.shape)}")
    if not torch.all((mask == 0) | (mask == 1)):
        raise ValueError("mask must be binary: 0 = missing, 1 = known")


def restore(
    prior: Prior | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    method: str = "restora_flow",
    task: str | None = None,
    seed: int | Sequence[int] = 0,
    sigma: float | None = None,
    sigma_y: float | None = None,
    **params: Any,
) -> RestoreResult:
    """Restore a batch ``y: (B, C, H, W)`` in [-1, 1] with ``mask: (B, 1, H, W)`` (1 = known).

    ``prior`` is a ``Prior`` or any callable ``v(x, t)`` (t of shape (B,)). ``params`` are the
    method's parameters (``steps=``, ``corrections=``, ... as ``restora methods`` lists them;
    None = default); unset ones take ``task``'s published defaults, or the method's generic ones
    when ``task`` is None. Without a mask (or for ``task="denoise"``) every pixel is observed
    with Gaussian noise of std ``sigma``; otherwise the known pixels carry noise ``sigma_y``.
    ``seed`` is one int for the batch (image i gets a seed derived from it and i) or one per
    image. Computation runs on the prior's device in ``y``'s dtype. Raises ``ValueError`` for bad
    inputs or parameters and ``RuntimeError`` when the result is not finite.
    """
    if isinstance(prior, Prior):
        velocity, channels, res = prior.velocity, prior.channels, prior.resolution
    elif callable(prior):
        velocity, channels, res = prior, None, None
    else:
        raise TypeError(f"prior must be a Prior or a callable v(x, t), got {type(prior).__name__}")
    entry = get_method(method)
    chosen = entry.make_params(task, _given(params))
    denoising = mask is None or entry.denoises(task)
    if denoising and entry.needs_mask:
        raise ValueError(f"method '{method}' needs a mask (B, 1, H, W), 1 = known pixel")
    _validate(channels, res, y, None if denoising else mask)
    device = next(velocity.parameters()).device if isinstance(velocity, torch.nn.Module) \
        and any(True for _ in velocity.parameters()) else y.device
    y = y.to(device)
    if denoising:
        noise = DEFAULT_DENOISE_SIGMA if sigma is None else sigma
        mask = torch.ones(y.shape[0], 1, *y.shape[-2:], device=device, dtype=y.dtype)
    else:
        noise = DEFAULT_SIGMA_Y if sigma_y is None else sigma_y
        mask = mask.to(device=device, dtype=y.dtype).expand(y.shape[0], -1, -1, -1)
    gens = generators_for_seeds(_seeds(seed, y.shape[0]), device)
    x = entry.sample(velocity, y, mask, chosen, noise, gens)
    if not torch.isfinite(x).all():
        raise RuntimeError(f"{method} produced NaN/inf values: check the prior and the input range")
    used = params_dict(chosen)
    return RestoreResult(images=x.clamp(-1.0, 1.0), nfe=entry.nfe(chosen, noise), method=method,
                         steps=used["steps"], corrections=used.get("corrections", 0), params=used,
                         task=task)
