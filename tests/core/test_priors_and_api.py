"""Loading priors safely, and the restore API's contract: shapes, errors, determinism."""

import hashlib

import pytest
import torch

from restora_core import load_prior, restore, save_prior
from restora_core.models import build_model

from .analytic import ConstantImagePrior

TINY = {"input_channels": 1, "input_height": 16, "ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1,
        "attn_resolutions": (8,), "resamp_with_conv": True}


@pytest.fixture(scope="module")
def tiny_prior_path(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(TINY)
    path = tmp_path_factory.mktemp("prior") / "tiny.safetensors"
    save_prior(model, {"architecture": TINY, "name": "tiny", "training_data": "none"}, str(path))
    return path


def test_saved_prior_round_trips_with_card_and_identity(tiny_prior_path):
    prior = load_prior(str(tiny_prior_path))
    assert prior.card["name"] == "tiny"
    assert prior.channels == 1 and prior.resolution == 16
    assert prior.model_id == hashlib.sha256(tiny_prior_path.read_bytes()).hexdigest()


def test_pt_state_dict_loads_with_a_preset_or_config(tmp_path):
    model = build_model(TINY)
    path = tmp_path / "plain.pt"
    torch.save(model.state_dict(), path)
    prior = load_prior(f"file://{path}", config=TINY)
    for a, b in zip(prior.velocity.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="carries no model card"):
        load_prior(str(path))


def test_truncated_checkpoint_error_names_the_file(tiny_prior_path, tmp_path):
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(tiny_prior_path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cut.safetensors"):
        load_prior(str(bad))
    bad_pt = tmp_path / "cut.pt"
    torch.save(build_model(TINY).state_dict(), bad_pt)
    bad_pt.write_bytes(bad_pt.read_bytes()[:500])
    with pytest.raises(ValueError, match="cut.pt"):
        load_prior(str(bad_pt), config=TINY)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_never_unpickled(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weight": _Evil()}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_prior(str(path), config=TINY)


def test_wrong_architecture_names_what_did_not_match(tiny_prior_path):
    other = dict(TINY, ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="does not match the architecture.*missing"):
        load_prior(str(tiny_prior_path), config=other)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_prior(str(tmp_path / "nope.safetensors"))


def test_image_restored_alone_equals_image_restored_in_a_batch(tiny_prior_path):
    prior = load_prior(str(tiny_prior_path))
    g = torch.Generator().manual_seed(0)
    y = torch.rand(6, 1, 16, 16, generator=g) * 2 - 1
    mask = (torch.rand(6, 1, 16, 16, generator=g) > 0.5).float()
    seeds = [11, 12, 13, 14, 15, 16]
    batch = restore(prior, y * mask, mask, steps=4, seed=seeds).images
    for i in (0, 3, 5):
        alone = restore(prior, y[i : i + 1] * mask[i : i + 1], mask[i : i + 1], steps=4,
                        seed=[seeds[i]]).images
        assert (alone[0] - batch[i]).abs().max().item() < 1e-4


def test_bad_inputs_get_messages_that_say_what_to_change(tiny_prior_path):
    prior = load_prior(str(tiny_prior_path))
    y, m = torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)
    with pytest.raises(ValueError, match="channels"):
        restore(prior, torch.zeros(1, 3, 16, 16), m)
    with pytest.raises(ValueError, match="takes 16x16"):
        restore(prior, torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32))
    with pytest.raises(ValueError, match="binary"):
        restore(prior, y, m * 0.5)
    with pytest.raises(ValueError, match="mask must have shape"):
        restore(prior, y, torch.ones(1, 3, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        restore(prior, torch.full_like(y, float("nan")), m)
    with pytest.raises(ValueError, match="needs a mask"):
        restore(prior, y, None)
    with pytest.raises(ValueError, match="unknown method"):
        restore(prior, y, m, method="ddrm")
    with pytest.raises(ValueError, match="seeds for a batch"):
        restore(prior, y, m, seed=[1, 2])


def test_nan_output_raises_runtime_error():
    with pytest.raises(RuntimeError, match="NaN"):
        restore(lambda x, t: x * float("nan"), torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4),
                steps=2)


def test_result_reports_evaluations_used(tiny_prior_path):
    prior = load_prior(str(tiny_prior_path))
    y, m = torch.zeros(2, 1, 16, 16), torch.ones(2, 1, 16, 16)
    assert restore(prior, y, m, steps=8, corrections=1).nfe == 8 + 2 * 7
    assert restore(prior, y, m, method="mask_ode", steps=8).nfe == 8
    assert restore(prior, y, None, method="restora_flow_denoise", steps=64, sigma=0.2).nfe == 13


def test_task_picks_the_published_defaults_and_unknown_parameters_are_named():
    field = ConstantImagePrior()
    y, m = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    result = restore(field, y, m, method="ot_ode", task="box", steps=10)
    assert result.params == {"steps": 10, "t0": 0.1, "gamma": "gamma_t"} and result.nfe == 9
    assert restore(field, y, None, method="pnp_flow", task="denoise", steps=2).params["alpha"] == 0.8
    with pytest.raises(ValueError, match="method 'ot_ode' has no parameter 'corrections'"):
        restore(field, y, m, method="ot_ode", corrections=1)
    with pytest.raises(ValueError, match="does not do task 'denoise'"):
        restore(field, y, None, method="restora_flow", task="denoise")
