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


class PerImageNoise:
    """Standard normal draws of shape (B, *shape), image i from ``gens[i]``, fetched in chunks.

    Each image draws ``chunk`` future samples in one call, so a batch costs B calls per ``chunk``
    draws instead of B calls per draw; the stream an image sees depends only on its generator and
    the fixed chunk size, never on the batch it is in.
    """

    CHUNK = 16

    def __init__(self, gens: list[torch.Generator], shape: Sequence[int], *,
                 device: torch.device, dtype: torch.dtype):
        self.gens, self.shape, self.device, self.dtype = gens, tuple(shape), device, dtype
        self._bank: torch.Tensor | None = None
        self._pos = self.CHUNK

    def __call__(self) -> torch.Tensor:
        """The next (B, *shape) draw."""
        if self._pos == self.CHUNK:
            self._bank = batch_randn(self.gens, (self.CHUNK, *self.shape), device=self.device,
                                     dtype=self.dtype)
            self._pos = 0
        out = self._bank[:, self._pos]
        self._pos += 1
        return out


def generators_for_seeds(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One freshly seeded generator per seed, on ``device``."""
    out = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s))
        out.append(g)
    return out
