"""Windows of one shape from different images (and from one image) share network passes:
every window keeps its own seed, so an image's pixels do not depend on the company it is
restored in, and two small holes cost one pass of two tiles per evaluation, not two."""

from __future__ import annotations

import pytest
import torch

from restora_core.full_resolution import plan_full, restore_full, restore_planned, window_groups

from .test_tiling import PixelGaussianPrior, hole_mask


class CountingVelocity:
    """A velocity that records the number of tiles of every network pass."""

    def __init__(self):
        self.prior, self.passes = PixelGaussianPrior(), []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.passes.append(x.shape[0])
        return self.prior(x, t)


def _images() -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """(y, mask, seed) of three images: small holes (one tile each), two in one image, and a
    hole big enough for a window of several tiles."""
    g = torch.Generator().manual_seed(0)
    shapes = [((37, 53), [(5, 6, 3, 3), (25, 40, 2, 4)]), ((20, 30), [(8, 20, 3, 3)]),
              ((40, 50), [(10, 10, 16, 25)])]
    out = []
    for n, ((h, w), holes) in enumerate(shapes):
        mask = hole_mask(h, w, *holes)
        out.append(((torch.rand(1, 3, h, w, generator=g) * 2 - 1) * mask, mask, 100 + n))
    return out


@pytest.mark.parametrize("max_batch", [None, 3, 1])
@pytest.mark.parametrize("samples", [1, 2])
def test_an_images_pixels_do_not_depend_on_the_images_it_shares_passes_with(max_batch, samples):
    prior, images = PixelGaussianPrior(), _images()
    kwargs = {"task": "box", "steps": 4, "samples": samples}
    alone = [restore_full(prior, y, m, tile=16, seed=s, max_batch=max_batch, **kwargs)
             for y, m, s in images]
    plans = [plan_full(y, m, tile=16, seed=s) for y, m, s in images]
    assert any(len(group) > 1 for group in window_groups(plans))  # windows do share
    for order in ([0, 1, 2], [2, 0, 1]):
        together = restore_planned(prior, [plans[i] for i in order], max_batch=max_batch,
                                   **kwargs)
        for i, full in zip(order, together):
            assert torch.allclose(full.image, alone[i].image, atol=1e-5)
            assert (full.nfe, full.windows, full.tiles) == (alone[i].nfe, alone[i].windows,
                                                            alone[i].tiles)
            if samples > 1:
                assert torch.allclose(full.std, alone[i].std, atol=1e-5)


def test_two_images_with_one_small_hole_each_share_one_pass_per_evaluation():
    g = torch.Generator().manual_seed(1)
    plans = [plan_full(torch.rand(1, 1, h, w, generator=g), hole_mask(h, w, (4, 4, 3, 3)),
                       tile=16, seed=n) for n, (h, w) in enumerate([(30, 40), (50, 20)])]
    shared = CountingVelocity()
    fulls = restore_planned(shared, plans, max_batch=8, task="box", steps=4)
    cost = fulls[0].nfe  # one tile: the method's NFE, one network evaluation each
    assert shared.passes == [2] * cost
    assert [f.nfe for f in fulls] == [cost, cost]  # each image still pays its own tile

    single = CountingVelocity()
    restore_planned(single, plans, max_batch=1, task="box", steps=4)
    assert single.passes == [1] * (2 * cost)
