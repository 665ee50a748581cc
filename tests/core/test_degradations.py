"""Degradation operators: adjointness, masks built from measurements, per-image masks."""

import pytest
import torch

from restora_core.degradations import (
    Denoising,
    MaskOperator,
    SuperResolution,
    box_mask,
    centered_box,
    random_mask,
)
from restora_core.noise import generators_for_seeds
from restora_core.observations import make_observation, simulate_observation


def _operators():
    g = generators_for_seeds([1, 2])
    yield "box", MaskOperator(box_mask(2, 16, 16, [(2, 3, 5, 7), (8, 8, 4, 4)])), (2, 3, 16, 16)
    yield "random", MaskOperator(random_mask(2, 16, 16, 0.7, g)), (2, 3, 16, 16)
    yield "freeform", MaskOperator((torch.rand(2, 1, 16, 16) > 0.5).float()), (2, 1, 16, 16)
    yield "superres", SuperResolution(4, 16, 16), (2, 3, 16, 16)
    yield "denoise", Denoising(0.2), (2, 3, 16, 16)


@pytest.mark.parametrize("name,op,shape", list(_operators()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_operator_is_adjoint(name, op, shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    z = torch.randn(op(x).shape, dtype=torch.float64)
    op = op.double()
    lhs = (op(x) * z).sum()
    rhs = (x * op.A_adjoint(z)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10)


def test_random_mask_removes_the_requested_fraction_and_differs_per_image():
    m = random_mask(2, 64, 64, 0.7, generators_for_seeds([3, 4]))
    assert abs(1 - m.mean().item() - 0.7) < 0.03
    assert not torch.equal(m[0], m[1])


def test_superres_observation_is_built_from_the_low_resolution_measurement():
    low = torch.rand(1, 3, 8, 8) * 2 - 1
    obs = make_observation("superres", low, params={"factor": 4})
    assert obs.y.shape == (1, 3, 32, 32)
    assert torch.equal(obs.y[..., ::4, ::4], low)
    assert obs.mask.sum().item() == 64
    assert torch.equal(obs.y * (1 - obs.mask), torch.zeros_like(obs.y))


def test_simulated_superres_never_copies_reference_pixels_off_the_grid():
    clean = torch.rand(1, 1, 16, 16)
    obs = simulate_observation("superres", clean, params={"factor": 2},
                               generator=generators_for_seeds([0]), sigma_y=0.0)
    assert torch.equal(obs.y[..., ::2, ::2], clean[..., ::2, ::2])
    assert obs.y[..., 1::2, :].abs().sum() == 0


def test_centered_box_matches_the_paper_sizes():
    assert centered_box(128, 128, 40) == (44, 44, 40, 40)
    assert centered_box(256, 256, 80) == (88, 88, 80, 80)
    obs = make_observation("box", torch.zeros(1, 3, 128, 128))
    assert (1 - obs.mask).sum().item() == 40 * 40


def test_bad_masks_and_boxes_are_refused():
    with pytest.raises(ValueError, match="binary"):
        MaskOperator(torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="does not fit"):
        box_mask(1, 8, 8, (4, 4, 8, 8))
    with pytest.raises(ValueError, match="differs from image size"):
        make_observation("inpaint", torch.zeros(1, 1, 8, 8), mask=torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match="unknown task .colorize.; expected one of"):
        make_observation("colorize", torch.zeros(1, 1, 8, 8))


def test_observed_outpaint_places_the_input_inside_a_missing_border():
    image = torch.rand(2, 3, 12, 10) * 2 - 1
    obs = make_observation("outpaint", image, params={"pad": [1, 2, 3, 4]}, size=(16, 16))
    assert obs.y.shape == (2, 3, 16, 16) and obs.mask.shape == (2, 1, 16, 16)
    inside = torch.zeros(16, 16)
    inside[1:13, 4:14] = 1.0
    assert torch.equal(obs.mask[:, 0], inside.expand(2, -1, -1))
    assert torch.equal(obs.y[..., 1:13, 4:14], image)
    assert obs.y.mul(1 - obs.mask).abs().sum() == 0


def test_observed_outpaint_with_the_default_pad_needs_the_prior_size_and_checks_the_input():
    obs = make_observation("outpaint", torch.zeros(1, 1, 12, 12), size=(16, 16))
    assert obs.y.shape == (1, 1, 16, 16) and obs.mask[0, 0, 2:14, 2:14].all()
    assert obs.mask.sum() == 144
    with pytest.raises(ValueError, match="default pad needs the prior's size"):
        make_observation("outpaint", torch.zeros(1, 1, 12, 12))
    with pytest.raises(ValueError, match="takes a 12x12 input for a prior of 16x16, got 16x16"):
        make_observation("outpaint", torch.zeros(1, 1, 16, 16), size=(16, 16))


def test_simulated_outpaint_masks_exactly_the_pad_border_of_the_clean_reference():
    clean = torch.rand(2, 1, 16, 16) * 2 - 1
    obs = simulate_observation("outpaint", clean, generator=generators_for_seeds([0, 1]),
                               sigma_y=0.0)
    assert obs.y.shape == clean.shape
    assert torch.equal(obs.mask[..., 2:14, 2:14], torch.ones(2, 1, 12, 12))
    assert obs.mask.sum() == 2 * 144  # nothing outside the centre is known
    assert torch.equal(obs.y, clean * obs.mask)
    with pytest.raises(ValueError, match="leaves no known pixels"):
        simulate_observation("outpaint", clean, params={"pad": [0, 8, 0, 8]},
                             generator=generators_for_seeds([0, 1]))


def test_outpainted_known_pixels_survive_a_restora_flow_restore():
    from restora_core import restore

    from .analytic import ConstantImagePrior

    image = torch.full((1, 3, 12, 12), 0.3) + 0.05 * torch.randn(1, 3, 12, 12)
    obs = make_observation("outpaint", image, size=(16, 16))
    result = restore(ConstantImagePrior(), obs.y, obs.mask, method="restora_flow",
                     task="outpaint", steps=8, paste_known=True, sigma_y=0.0)
    assert result.images.shape == (1, 3, 16, 16) and result.params["steps"] == 8
    assert torch.equal(result.images[..., 2:14, 2:14], image.clamp(-1, 1))
    border = result.images * (1 - obs.mask)
    # the constant-image prior fills the border near the image's mean level
    assert abs(border.sum() / (1 - obs.mask).sum() / 3 - 0.3) < 0.15
