"""Several samples per image: K = 1 is the plain restoration, the batched samples equal the
samples run one by one, memory stays bounded by ``max_batch``, and the estimates are what they say."""

import pytest
import torch

from restora_core import restore
from restora_core.noise import generators_for_seeds
from restora_core.samplers import REGISTRY, get_method
from restora_core.seeding import image_seed, sample_seed

from .analytic import ConstantImagePrior

# Short runs of every stochastic method, enough to exercise each loop.
CHEAP = {"restora_flow": {"steps": 4, "corrections": 1}, "mask_ode": {"steps": 4},
         "ot_ode": {"steps": 10}, "pnp_flow": {"steps": 4, "averages": 2},
         "flower": {"steps": 4}}
STOCHASTIC = [name for name, entry in REGISTRY.items() if entry.stochastic]


class SmallConvField(torch.nn.Module):
    """A small random conv net v(x, t): batched convolutions, so batch size can change the last
    bits of its output on CPU, as a real prior's would."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = torch.nn.Conv2d(2, 16, 3, padding=1)
        self.out = torch.nn.Conv2d(16, 1, 3, padding=1)

    def forward(self, x, t):
        tt = t.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return self.out(torch.nn.functional.silu(self.inp(torch.cat([x, tt], dim=1))))


@pytest.fixture(scope="module")
def net():
    return SmallConvField().eval()


def _problem(batch=2, size=16):
    g = torch.Generator().manual_seed(3)
    y = torch.rand(batch, 1, size, size, generator=g) * 2 - 1
    mask = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    return y * mask, mask


def test_every_stochastic_method_has_a_cheap_setting_here():
    assert set(STOCHASTIC) == set(CHEAP)


@pytest.mark.parametrize("method", STOCHASTIC)
def test_one_sample_is_the_plain_restoration_bit_for_bit(net, method):
    y, mask = _problem()
    entry = get_method(method)
    params = entry.make_params(None, CHEAP[method])
    gens = generators_for_seeds([image_seed(7, i) for i in range(2)])
    plain = entry.sample(net, y, mask, params, 0.01, gens).clamp(-1, 1)
    for estimate in ("mean", "sample", "median"):
        result = restore(net, y, mask, method=method, seed=7, sigma_y=0.01, samples=1,
                         estimate=estimate, **CHEAP[method])
        assert torch.equal(result.images, plain)
        assert torch.equal(result.mean, plain) and result.std is None
    assert torch.equal(restore(net, y, mask, method=method, seed=7, sigma_y=0.01,
                               **CHEAP[method]).images, plain)


@pytest.mark.parametrize("method", STOCHASTIC)
@pytest.mark.parametrize("max_batch", [None, 4])
def test_batched_samples_equal_samples_run_one_by_one(net, method, max_batch):
    y, mask = _problem()
    seeds, k = [21, 22], 3
    result = restore(net, y, mask, method=method, seed=seeds, samples=k, return_samples=True,
                     max_batch=max_batch, **CHEAP[method])
    assert result.samples.shape == (2, k, 1, 16, 16)
    for i in range(2):
        for j in range(k):
            alone = restore(net, y[i:i + 1], mask[i:i + 1], method=method,
                            seed=[sample_seed(seeds[i], j)], **CHEAP[method]).images
            assert (alone[0] - result.samples[i, j]).abs().max().item() < 1e-4
    assert not torch.allclose(result.samples[:, 0], result.samples[:, 1])


def test_max_batch_bounds_the_rows_of_every_network_pass():
    seen = []
    field = ConstantImagePrior(a=0.5, s=0.3)

    def recording(x, t):
        seen.append(x.shape[0])
        return field(x, t)

    y, mask = _problem(batch=3)
    restore(recording, y, mask, steps=4, corrections=1, samples=5, max_batch=4)
    nfe = 4 + 2 * 3
    assert max(seen) <= 4 and sum(seen) == 3 * 5 * nfe
    seen.clear()
    restore(recording, y, mask, steps=4, corrections=1, samples=5)
    assert seen == [15] * nfe  # unbounded: all B*K rows share each pass


def test_estimates_are_the_mean_median_or_first_sample_and_std_is_the_spread():
    field = ConstantImagePrior(a=0.5, s=0.3)
    y, mask = _problem()
    runs = {e: restore(field, y, mask, steps=6, samples=4, estimate=e, return_samples=True, seed=1)
            for e in ("mean", "median", "sample")}
    stack = runs["mean"].samples
    assert torch.allclose(runs["mean"].images, stack.mean(1))
    assert torch.allclose(runs["mean"].std, stack.std(1))
    ordered = stack.sort(1).values
    assert torch.allclose(runs["median"].images, (ordered[:, 1] + ordered[:, 2]) / 2)
    single = restore(field, y, mask, steps=6, seed=1).images
    assert torch.allclose(runs["sample"].images, single, atol=1e-6)
    hole = mask.expand_as(single) == 0
    assert runs["mean"].std[hole].mean() > runs["mean"].std[~hole].mean()
    assert runs["mean"].nfe == 6 + 2 * 5 and runs["mean"].num_samples == 4


def test_deterministic_method_refuses_several_samples_and_bad_settings_are_named():
    field = ConstantImagePrior()
    y = torch.zeros(1, 1, 8, 8)
    assert restore(field, y, None, method="restora_flow_denoise", samples=1).std is None
    with pytest.raises(ValueError, match="deterministic"):
        restore(field, y, None, method="restora_flow_denoise", samples=4)
    m = torch.ones(1, 1, 8, 8)
    with pytest.raises(ValueError, match="samples must be"):
        restore(field, y, m, steps=2, samples=0)
    with pytest.raises(ValueError, match="estimate must be"):
        restore(field, y, m, steps=2, samples=2, estimate="mode")
    with pytest.raises(ValueError, match="max_batch must be"):
        restore(field, y, m, steps=2, samples=2, max_batch=0)


def test_sample_zero_keeps_the_image_seed_and_later_samples_differ():
    assert sample_seed(123, 0) == 123
    assert len({sample_seed(123, k) for k in range(50)}) == 50
    with pytest.raises(ValueError):
        sample_seed(1, -1)
