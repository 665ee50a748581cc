"""The public restoration entry point: validate inputs once, look the method up, seed each image."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .choices import ESTIMATES
from .noise import generators_for_seeds
from .priors import Prior
from .samplers import METHODS, Method, get_method, params_dict
from .seeding import image_seed, sample_seed

__all__ = ["ESTIMATES", "METHODS", "RestoreResult", "method_nfe", "restore"]


@dataclass(frozen=True)
class RestoreResult:
    """Restored ``images`` (B, C, H, W) in [-1, 1], the network evaluations ``nfe`` one sample
    cost and the parameters that ran (``params``; ``steps`` and ``corrections`` repeated).

    With ``num_samples`` K > 1, ``images`` is the per-pixel ``estimate`` over the K samples,
    ``mean`` and ``std`` (sample std, K - 1 in the denominator) are per pixel, (B, C, H, W), and
    ``samples`` (B, K, C, H, W) is kept when asked for. An image's K samples cost K * ``nfe``
    evaluations. With K = 1, ``mean`` is ``images`` and ``std`` is None (one draw has no spread).
    """

    images: torch.Tensor
    nfe: int
    method: str
    steps: int
    corrections: int
    params: dict[str, Any]
    task: str | None = None
    num_samples: int = 1
    estimate: str = "mean"
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    samples: torch.Tensor | None = None


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


def _check_sampling(entry: Method, samples: int, estimate: str, max_batch: int | None) -> None:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    if estimate not in ESTIMATES:
        raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int)
                                  or max_batch < 1):
        raise ValueError(f"max_batch must be an integer >= 1 or None, got {max_batch!r}")
    if samples > 1 and not entry.stochastic:
        raise ValueError(f"method '{entry.name}' is deterministic: its {samples} samples would "
                         "be the same image, so samples > 1 adds nothing; use samples=1 or a "
                         "stochastic method")


def _median(stack: torch.Tensor) -> torch.Tensor:
    # Per-pixel median over dim 1; the mean of the two middle values when K is even.
    ordered = stack.sort(dim=1).values
    k = stack.shape[1]
    return 0.5 * (ordered[:, (k - 1) // 2] + ordered[:, k // 2])


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
    samples: int = 1,
    estimate: str = "mean",
    return_samples: bool = False,
    max_batch: int | None = None,
    **params: Any,
) -> RestoreResult:
    """Restore a batch ``y: (B, C, H, W)`` in [-1, 1] with ``mask: (B, 1, H, W)`` (1 = known).

    ``prior`` is a ``Prior`` or any callable ``v(x, t)`` (t of shape (B,)). ``params`` are the
    method's parameters (``steps=``, ``corrections=``, ... as ``restora methods`` lists them;
    None = default); unset ones take ``task``'s published defaults, or the method's generic ones
    when ``task`` is None. Without a mask (or for ``task="denoise"``) every pixel is observed
    with Gaussian noise of std ``sigma``; otherwise the known pixels carry noise ``sigma_y``.
    ``seed`` is one int for the batch (image i gets a seed derived from it and i) or one per
    image. Computation runs on the prior's device in ``y``'s dtype.

    ``samples`` K draws each image K times, sample k from its own generator seeded with
    ``sample_seed(image seed, k)`` (sample 0 is the plain restoration, so K = 1 is exactly the
    single-sample result); the B*K rows share the sampler's batched network passes, at most
    ``max_batch`` rows per pass (None: all B*K). ``estimate`` picks what ``images`` is: the
    per-pixel ``"mean"`` of the K samples (the posterior-mean estimate), ``"median"``, or
    ``"sample"`` (sample 0). ``return_samples`` keeps all samples in the result. A deterministic
    method (``restora_flow_denoise``) refuses K > 1. Raises ``ValueError`` for bad inputs or
    parameters and ``RuntimeError`` when the result is not finite.
    """
    if isinstance(prior, Prior):
        velocity, channels, res = prior.velocity, prior.channels, prior.resolution
    elif callable(prior):
        velocity, channels, res = prior, None, None
    else:
        raise TypeError(f"prior must be a Prior or a callable v(x, t), got {type(prior).__name__}")
    entry = get_method(method)
    chosen = entry.make_params(task, _given(params))
    _check_sampling(entry, samples, estimate, max_batch)
    denoising = mask is None or entry.denoises(task)
    if denoising and entry.needs_mask:
        raise ValueError(f"method '{method}' needs a mask (B, 1, H, W), 1 = known pixel")
    _validate(channels, res, y, None if denoising else mask)
    device = next(velocity.parameters()).device if isinstance(velocity, torch.nn.Module) \
        and any(True for _ in velocity.parameters()) else y.device
    y = y.to(device)
    if denoising:
        noise = entry.default_noise(task, denoising) if sigma is None else sigma
        mask = torch.ones(y.shape[0], 1, *y.shape[-2:], device=device, dtype=y.dtype)
    else:
        noise = entry.default_noise(task, denoising) if sigma_y is None else sigma_y
        mask = mask.to(device=device, dtype=y.dtype).expand(y.shape[0], -1, -1, -1)
    batch = y.shape[0]
    seeds = [sample_seed(s, k) for s in _seeds(seed, batch) for k in range(samples)]
    gens = generators_for_seeds(seeds, device)  # row i*K + k is sample k of image i
    rows_y = y if samples == 1 else y.repeat_interleave(samples, dim=0)
    rows_mask = mask if samples == 1 else mask.repeat_interleave(samples, dim=0)
    chunk = len(seeds) if max_batch is None else max_batch
    out = []
    for start in range(0, len(seeds), chunk):
        stop = start + chunk
        x = entry.sample(velocity, rows_y[start:stop], rows_mask[start:stop], chosen, noise,
                         gens[start:stop])
        if not torch.isfinite(x).all():
            raise RuntimeError(f"{method} produced NaN/inf values: check the prior and the input "
                               "range")
        out.append(x.clamp(-1.0, 1.0))
    drawn = out[0] if len(out) == 1 else torch.cat(out)
    stack = drawn.view(batch, samples, *drawn.shape[1:])
    if samples == 1:
        images, mean, std = drawn, drawn, None
    else:
        mean, std = stack.mean(dim=1), stack.std(dim=1, correction=1)
        if estimate == "mean":
            images = mean
        elif estimate == "median":
            images = _median(stack)
        else:
            images = stack[:, 0]
    used = params_dict(chosen)
    return RestoreResult(images=images, nfe=entry.nfe(chosen, noise), method=method,
                         steps=used["steps"], corrections=used.get("corrections", 0), params=used,
                         task=task, num_samples=samples, estimate=estimate, mean=mean, std=std,
                         samples=stack if return_samples else None)
