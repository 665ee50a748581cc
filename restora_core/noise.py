"""Per-image noise: each image in a batch draws from its own generator, so its pixels do not
depend on the batch it was restored in."""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator]


def as_generator_list(generator: Generators, batch: int) -> list[torch.Generator]:
    """Normalise one generator (shared by the batch) or one per image into a list of ``batch``."""
    if isinstance(generator, torch.Generator):
        return _split_shared(generator, batch)
    gens = list(generator)
    if len(gens) != batch:
        raise ValueError(f"got {len(gens)} generators for a batch of {batch}; pass one per image")
    return gens


def _split_shared(generator: torch.Generator, batch: int) -> list[torch.Generator]:
    # One shared generator still yields per-image streams: derive a child seed per image once.
    seeds = torch.randint(0, 2**62, (batch,), generator=generator, device=generator.device)
    out = []
    for s in seeds.tolist():
        g = torch.Generator(device=generator.device)
        g.manual_seed(int(s))
        out.append(g)
    return out


def batch_randn(gens: list[torch.Generator], shape: Sequence[int], *, device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    """Draw ``(B, *shape)`` standard normal noise, image i from ``gens[i]``."""
    draws = [torch.randn(tuple(shape), generator=g, device=g.device, dtype=torch.float32)
             for g in gens]
    return torch.stack(draws).to(device=device, dtype=dtype)


def generators_for_seeds(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One freshly seeded generator per seed, on ``device``."""
    out = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))
        out.append(g)
    return out
