"""Tiling for images of any size: layouts cover every pixel with weights summing to 1, a per-pixel
prior restores identically tiled and untiled, a correlated prior converges to untiled as the
overlap grows past its correlation length, windows follow the holes, and known pixels survive."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from restora_core.full_resolution import Tiling, restore_full
from restora_core.restoration import restore
from restora_core.samplers import METHODS, get_method
from restora_core.tiling import TiledVelocity, tile_layout, tile_origins
from restora_core.windows import Window, pad_to_tile, plan_windows

from .analytic import GaussianImagePrior


class PixelGaussianPrior:
    """Exact velocity of i.i.d. N(mean, std^2) pixels: each pixel's velocity depends on that
    pixel alone, so tiles of any size give the exact velocity of any window."""

    def __init__(self, mean: float = 0.1, std: float = 0.4):
        self.mean, self.var = mean, std**2

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.to(x.dtype).view(-1, 1, 1, 1)
        gain = (tt * self.var - (1 - tt)) / (tt**2 * self.var + (1 - tt) ** 2)
        return self.mean + gain * (x - tt * self.mean)


def hole_mask(height: int, width: int, *boxes: tuple[int, int, int, int]) -> torch.Tensor:
    mask = torch.ones(1, 1, height, width)
    for top, left, h, w in boxes:
        mask[..., top:top + h, left:left + w] = 0.0
    return mask


@pytest.mark.parametrize("length,tile,overlap", [(16, 16, 4), (17, 16, 4), (40, 16, 4),
                                                 (41, 16, 0), (1000, 32, 8), (33, 32, 31)])
def test_tiles_cover_the_window_and_neighbours_overlap_enough(length, tile, overlap):
    starts = tile_origins(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def test_fusion_weights_sum_to_one_everywhere():
    layout = tile_layout(45, 70, 16, 6)
    fused = TiledVelocity(lambda x, t: torch.ones_like(x), layout)(torch.zeros(2, 3, 45, 70),
                                                                   torch.full((2,), 0.5))
    assert torch.allclose(fused, torch.ones_like(fused), atol=1e-6)


def test_a_per_pixel_prior_restores_identically_tiled_and_untiled():
    prior = PixelGaussianPrior()
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 1, 40, 52, generator=g) * 2 - 1
    mask = (torch.rand(2, 1, 40, 52, generator=g) > 0.5).float()
    layout = tile_layout(40, 52, 16, 4)
    tiled = restore(TiledVelocity(prior, layout), y, mask, seed=[3, 4], task="box", steps=8)
    plain = restore(prior, y, mask, seed=[3, 4], task="box", steps=8)
    assert torch.allclose(tiled.images, plain.images, atol=1e-5)


def test_a_correlated_prior_converges_to_untiled_as_the_overlap_grows():
    # A stationary field with correlation length 1 px: the exact velocity of the 36x36 window
    # uses every pixel, each 12x12 tile's only its own marginal. Velocities are compared at
    # x_t drawn on the path itself (t x1 + (1 - t) x0), where a sampler evaluates them.
    window = GaussianImagePrior(size=36, std=0.3, length=1.0, nugget=0.02)
    tile = GaussianImagePrior(size=12, std=0.3, length=1.0, nugget=0.02)
    g = torch.Generator().manual_seed(1)
    t = torch.tensor([0.2, 0.6, 0.9], dtype=torch.float64)
    x1 = window.draw(3, g).double()
    x = t.view(-1, 1, 1, 1) * x1 + (1 - t.view(-1, 1, 1, 1)) * torch.randn(
        x1.shape, generator=g, dtype=torch.float64)
    exact = window(x, t)
    errors = [(TiledVelocity(tile, tile_layout(36, 36, 12, overlap))(x, t) - exact).abs().max()
              .item() for overlap in (0, 2, 6, 8)]
    assert errors[0] > errors[1] > errors[2] > errors[3], errors
    assert errors[3] < 0.01 < errors[0], errors
    # ...and the restorations follow the velocities.
    y = window.draw(1, g).double()
    mask = hole_mask(36, 36, (10, 8, 14, 20)).double()
    plain = restore(window, y * mask, mask, seed=[5], task="box", steps=16).images
    gaps = [(restore(TiledVelocity(tile, tile_layout(36, 36, 12, o)), y * mask, mask, seed=[5],
                     task="box", steps=16).images - plain).abs().max().item() for o in (0, 8)]
    assert gaps[1] < 0.5 * gaps[0], gaps


@pytest.mark.parametrize("method", [m for m in METHODS if "box" in get_method(m).tasks])
def test_every_inpainting_method_runs_unchanged_on_a_tiled_window(method):
    prior = PixelGaussianPrior()
    y = torch.rand(1, 1, 24, 40, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mask = hole_mask(24, 40, (6, 10, 10, 20))
    tiled = TiledVelocity(prior, tile_layout(24, 40, 16, 4))
    out = restore(tiled, y * mask, mask, method=method, task="box", seed=[1], steps=4)
    assert out.images.shape == y.shape and torch.isfinite(out.images).all()
    assert tiled.tiles_evaluated > 0


def test_one_small_hole_in_a_large_image_gets_one_centred_tile():
    missing = np.zeros((1024, 1024), dtype=bool)
    missing[500:510, 700:710] = True
    (window,) = plan_windows(missing, 32, 8)
    assert (window.height, window.width) == (32, 32)
    assert window.top == 505 - 16 and window.left == 705 - 16  # centred on the hole


def test_windows_clamp_at_corners_merge_when_close_and_grow_for_big_holes():
    missing = np.zeros((100, 120), dtype=bool)
    missing[0:3, 0:3] = True  # a corner hole
    missing[60:64, 60:64] = True  # two holes close together...
    missing[60:64, 70:74] = True
    missing[10:50, 80:118] = True  # ...and one larger than a tile with its margin
    windows = plan_windows(missing, 16, 4)
    assert Window(0, 0, 16, 16) in windows
    assert all(0 <= w.top and w.bottom <= 100 and 0 <= w.left and w.right <= 120 for w in windows)
    big = [w for w in windows if w.height > 16 or w.width > 16]
    assert big and all(w.top <= 10 and w.bottom >= 50 for w in big[:1])
    painted = np.zeros((100, 120), dtype=int)
    for w in windows:
        painted[w.slices()] += 1
    assert painted.max() == 1  # no pixel in two windows
    assert painted[missing].min() == 1  # every missing pixel in one
    assert len([w for w in windows if w.top <= 60 < w.bottom and w.left <= 60 < w.right]) == 1


def test_a_fully_missing_image_is_one_window_of_a_tile_grid():
    (window,) = plan_windows(np.ones((40, 50), dtype=bool), 16, 4)
    assert window == Window(0, 0, 40, 50)
    assert tile_layout(40, 50, 16, 4).count == 3 * 4


def test_small_images_are_reflect_padded_as_known_and_cropped_back():
    y = torch.arange(2 * 5 * 9, dtype=torch.float32).view(1, 2, 5, 9) / 100
    mask = hole_mask(5, 9, (1, 1, 2, 2))
    padded, known, size = pad_to_tile(y, mask, 16)
    assert padded.shape[-2:] == (16, 16) and size == (5, 9)
    assert torch.equal(padded[..., :5, :9], y)
    assert known[..., 5:, :].min() == 1 and known[..., :, 9:].min() == 1
    assert torch.equal(known[..., :5, :9], mask)


@pytest.mark.parametrize("height,width", [(37, 53), (9, 40), (16, 16)])
def test_full_resolution_restores_at_the_input_size_with_known_pixels_exact(height, width):
    prior = PixelGaussianPrior()
    y = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(4)) * 2 - 1
    mask = hole_mask(height, width, (height // 3, width // 3, 4, 5), (0, width - 3, 2, 3))
    out = restore_full(prior, y * mask, mask, tile=16, seed=9, task="box", steps=6)
    assert out.image.shape == y.shape and torch.isfinite(out.image).all()
    known = mask.expand_as(y) > 0.5
    assert torch.equal(out.image[known], (y * mask)[known])
    assert out.windows and out.tiles >= 1


def test_one_small_hole_in_a_1024_image_costs_one_tile():
    prior = PixelGaussianPrior()
    y = torch.zeros(1, 1, 1024, 1024)
    mask = hole_mask(1024, 1024, (300, 400, 10, 10))
    out = restore_full(prior, y, mask, tile=32, seed=0, task="box")
    assert out.nfe == get_method("restora_flow").cost("box") == 190
    assert out.tiles == 1 and len(out.windows) == 1


def test_a_fully_missing_image_runs_as_a_grid_and_denoising_covers_everything():
    prior = PixelGaussianPrior()
    y = torch.zeros(1, 1, 40, 50)
    out = restore_full(prior, y, torch.zeros(1, 1, 40, 50), tile=16, task="box", steps=4,
                       tiling=Tiling(overlap=4))
    assert out.tiles == 12 and out.windows == [Window(0, 0, 40, 50)]
    noisy = torch.rand(1, 1, 40, 50, generator=torch.Generator().manual_seed(6)) * 2 - 1
    den = restore_full(prior, noisy, None, whole=True, tile=16, method="restora_flow_denoise",
                       task="denoise", sigma=0.2)
    assert den.tiles == 12 and not torch.equal(den.image, noisy)


def test_an_image_of_the_prior_size_restores_exactly_as_without_tiling():
    prior = PixelGaussianPrior()
    y = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(8)) * 2 - 1
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., ::3, :] = 1.0
    full = restore_full(prior, y * mask, mask, tile=16, seed=77, task="random", steps=8)
    plain = restore(prior, y * mask, mask, seed=[77], task="random", steps=8)
    assert torch.allclose(full.image, torch.where(mask > 0.5, y * mask, plain.images), atol=1e-6)
