"""Samplers against a closed-form velocity field: known pixels stay, holes are filled correctly."""

import pytest
import torch

from restora_core import restore
from restora_core.degradations import box_mask
from restora_core.noise import generators_for_seeds
from restora_core.samplers import restora_flow, restora_flow_denoise

from .analytic import ConstantImagePrior


def _constant_batch(values, size=16):
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, size, size).clone()


@pytest.mark.parametrize("method", ["restora_flow", "mask_ode", "ot_ode", "pnp_flow", "flower"])
def test_hole_is_filled_with_the_value_the_known_pixels_imply(method):
    # Constant images: the only consistent fill of the hole is the constant seen around it.
    clean = _constant_batch([0.6, -0.4, 0.1])
    mask = box_mask(3, 16, 16, (4, 4, 8, 8))
    prior = ConstantImagePrior(a=0.5, s=0.02)
    steps = {"restora_flow": 32, "mask_ode": 32, "ot_ode": 50, "pnp_flow": 50, "flower": 50}[method]
    out = restore(prior, clean * mask, mask, method=method, steps=steps, seed=1).images
    hole = mask.expand_as(out) == 0
    err_hole = (out - clean)[hole].abs().mean().item()
    err_known = (out - clean)[~hole].abs().mean().item()
    assert err_hole < 0.06, err_hole
    assert err_known < 0.06, err_known


def test_corrections_cost_the_documented_evaluations():
    prior = ConstantImagePrior()
    clean = _constant_batch([0.3])
    mask = box_mask(1, 16, 16, (4, 4, 8, 8))
    g = generators_for_seeds([0])
    restora_flow(prior, clean * mask, mask, steps=16, corrections=2, generator=g)
    assert prior.calls == 16 + 2 * 2 * 15


def test_paste_known_copies_the_observation_exactly():
    clean = _constant_batch([0.5, -0.5])
    mask = box_mask(2, 16, 16, (2, 2, 6, 6))
    out = restore(ConstantImagePrior(), clean * mask, mask, steps=8, paste_known=True).images
    assert torch.equal(out * mask, clean * mask)


def test_denoising_uses_thirteen_evaluations_and_reduces_the_error():
    torch.manual_seed(0)
    clean = _constant_batch([0.5, -0.2, 0.0])
    noisy = clean + 0.2 * torch.randn_like(clean)
    prior = ConstantImagePrior(a=0.5, s=0.02)
    out = restora_flow_denoise(prior, noisy, sigma=0.2, steps=64)
    assert prior.calls == 13
    assert (out - clean).pow(2).mean() < 0.25 * (noisy - clean).pow(2).mean()


def test_same_seed_same_pixels_and_other_seed_other_pixels():
    clean = _constant_batch([0.2])
    mask = box_mask(1, 16, 16, (0, 0, 16, 8))
    prior = ConstantImagePrior(a=0.5, s=0.3)
    a = restore(prior, clean * mask, mask, steps=8, seed=[5]).images
    b = restore(prior, clean * mask, mask, steps=8, seed=[5]).images
    c = restore(prior, clean * mask, mask, steps=8, seed=[6]).images
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
