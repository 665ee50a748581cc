"""The public restoration entry point: validate inputs once, pick the sampler, seed each image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .noise import generators_for_seeds
from .priors import Prior
from .samplers import denoise_nfe, ot_ode, ot_ode_nfe, pnp_flow, restora_flow, restora_flow_denoise
from .seeding import image_seed

METHODS = ("restora_flow", "mask_ode", "ot_ode", "pnp_flow", "restora_flow_denoise")
DEFAULT_STEPS = {"restora_flow": 64, "mask_ode": 64, "ot_ode": 100, "pnp_flow": 100,
                 "restora_flow_denoise": 64}


@dataclass(frozen=True)
class RestoreResult:
    """Restored ``images`` (B, C, H, W) in [-1, 1], the network evaluations ``nfe`` they cost,
    and the settings the sampler ran with (``settings``: its own parameters, e.g. ``t0`` and
    ``sigma_y`` for ot_ode), as used, not as asked."""

    images: torch.Tensor
    nfe: int
    method: str
    steps: int
    corrections: int
    settings: dict[str, Any] = field(default_factory=dict)


def method_nfe(method: str, steps: int, corrections: int = 1, sigma: float = 0.2,
               t0: float = 0.2, averages: int = 1) -> int:
    """Network evaluations ``method`` costs for one batch."""
    if method == "restora_flow":
        return steps + 2 * corrections * (steps - 1)
    if method == "mask_ode":
        return steps
    if method == "restora_flow_denoise":
        return denoise_nfe(steps, sigma)
    if method == "ot_ode":
        return ot_ode_nfe(steps, t0)
    if method == "pnp_flow":
        return steps * averages
    raise ValueError(f"unknown method '{method}'; expected one of {METHODS}")


def _seeds(seed: int | Sequence[int], batch: int) -> list[int]:
    if isinstance(seed, int):
        return [image_seed(seed, i) for i in range(batch)]
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch}; pass one int or one per image")
    return seeds


def _validate(prior_channels: int | None, prior_res: int | None, y: torch.Tensor,
              mask: torch.Tensor | None, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; expected one of {METHODS}")
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
    if method == "restora_flow_denoise":
        return
    if mask is None:
        raise ValueError(f"method '{method}' needs a mask (B, 1, H, W), 1 = known pixel")
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
    steps: int | None = None,
    corrections: int = 1,
    seed: int | Sequence[int] = 0,
    sigma: float = 0.2,
    sigma_y: float = 0.01,
    paste_known: bool = False,
    t0: float = 0.2,
    alpha: float = 0.5,
) -> RestoreResult:
    """Restore a batch ``y: (B, C, H, W)`` in [-1, 1] with ``mask: (B, 1, H, W)`` (1 = known).

    ``prior`` is a ``Prior`` or any callable ``v(x, t)`` (t of shape (B,)). ``seed`` is one int for
    the batch (image i gets a seed derived from it and i) or one per image. Computation runs on the
    prior's device in ``y``'s dtype. Raises ``ValueError`` for bad inputs and ``RuntimeError`` when
    the result is not finite.
    """
    if isinstance(prior, Prior):
        velocity, channels, res = prior.velocity, prior.channels, prior.resolution
    elif callable(prior):
        velocity, channels, res = prior, None, None
    else:
        raise TypeError(f"prior must be a Prior or a callable v(x, t), got {type(prior).__name__}")
    _validate(channels, res, y, mask, method)
    steps = steps if steps is not None else DEFAULT_STEPS[method]
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = next(velocity.parameters()).device if isinstance(velocity, torch.nn.Module) \
        and any(True for _ in velocity.parameters()) else y.device
    y = y.to(device)
    if mask is not None:
        mask = mask.to(device=device, dtype=y.dtype).expand(y.shape[0], -1, -1, -1)
    gens = generators_for_seeds(_seeds(seed, y.shape[0]), device)

    if method == "restora_flow_denoise":
        x = restora_flow_denoise(velocity, y, sigma=sigma, steps=steps)
        settings: dict[str, Any] = {"sigma": sigma}
    elif method in ("restora_flow", "mask_ode"):
        c = corrections if method == "restora_flow" else 0
        x = restora_flow(velocity, y, mask, steps=steps, corrections=c, generator=gens,
                         paste_known=paste_known)
        settings = {"paste_known": paste_known}
    elif method == "ot_ode":
        x = ot_ode(velocity, y, mask, steps=steps, t0=t0, sigma_y=sigma_y, generator=gens)
        settings = {"t0": t0, "sigma_y": sigma_y}
    else:
        x = pnp_flow(velocity, y, mask, steps=steps, alpha=alpha, generator=gens)
        settings = {"alpha": alpha}
    if not torch.isfinite(x).all():
        raise RuntimeError(f"{method} produced NaN/inf values: check the prior and the input range")
    used_c = corrections if method == "restora_flow" else 0
    nfe = method_nfe(method, steps, used_c, sigma=sigma, t0=t0)
    return RestoreResult(images=x.clamp(-1.0, 1.0), nfe=nfe, method=method, steps=steps,
                         corrections=used_c, settings=settings)
