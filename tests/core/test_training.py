"""Training flow-matching priors: the objective against closed forms, OT coupling against brute
force, exact resume, a decreasing loss, the exported prior, the CLI and the Prefect flow."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
import torch

from restora_core import load_prior
from restora_core.datasets import ImageArraySet
from restora_core.training import (
    TrainConfig,
    cfm_loss,
    latest_checkpoint,
    linear_path,
    load_checkpoint,
    make_cfm_batch,
    ot_permutation,
    step_seed,
    train,
)

TINY_MODEL = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
              "dropout": 0.0}


def tiny_images(n: int = 256, size: int = 16, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A few hundred blobby uint8 images (N, H, W, C)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(4, size - 4, (2, n, 1, 1))
    r = rng.uniform(2, 5, (n, 1, 1))
    img = (((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2).astype(np.uint8) * 255
    return np.repeat(img[..., None], channels, axis=-1)


def tiny_config(tmp_path, **kw) -> TrainConfig:
    base = {"resolution": 16, "channels": 1, "model": TINY_MODEL, "batch_size": 8, "lr": 1e-3,
            "warmup_steps": 2, "max_steps": 4, "log_every": 1, "sample_count": 0,
            "ema_decay": 0.9, "checkpoint_dir": str(tmp_path / "ckpt"), "checkpoint_every": 2,
            "name": "tiny"}
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------- the objective

def test_path_point_and_target_match_closed_form():
    x1 = torch.rand(4, 1, 8, 8) * 2 - 1
    gen = torch.Generator().manual_seed(7)
    batch = make_cfm_batch(x1, gen, ot=False)
    # recompute the draws independently from the same seed
    g2 = torch.Generator().manual_seed(7)
    x0 = torch.randn(x1.shape, generator=g2)
    t = torch.rand(4, generator=g2)
    for i in range(4):
        assert torch.allclose(batch.x_t[i], t[i] * x1[i] + (1 - t[i]) * x0[i], atol=1e-6)
        assert torch.allclose(batch.u_t[i], x1[i] - x0[i], atol=1e-6)
    assert torch.equal(batch.t, t)
    # ends of the path: t=0 is noise, t=1 is data
    xt0, _ = linear_path(x0, x1, torch.zeros(4))
    xt1, _ = linear_path(x0, x1, torch.ones(4))
    assert torch.equal(xt0, x0) and torch.equal(xt1, x1)


def test_loss_is_mean_squared_velocity_error():
    x1 = torch.rand(3, 1, 4, 4)
    batch = make_cfm_batch(x1, torch.Generator().manual_seed(0))
    pred = torch.randn_like(x1)
    expected = ((pred - batch.u_t) ** 2).sum() / pred.numel()
    assert torch.allclose(cfm_loss(pred, batch), expected)
    assert cfm_loss(batch.u_t, batch) == 0


def test_times_are_uniform_on_the_unit_interval():
    batch = make_cfm_batch(torch.zeros(20000, 1, 1, 1), torch.Generator().manual_seed(1))
    assert 0 <= batch.t.min() and batch.t.max() < 1
    assert abs(batch.t.mean().item() - 0.5) < 0.01


def test_ot_coupling_finds_the_minimum_cost_permutation_by_brute_force():
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        x0 = torch.randn(6, 1, 3, 3, generator=gen)
        x1 = torch.randn(6, 1, 3, 3, generator=gen)

        pair_cost = ((x0[None, :] - x1[:, None]) ** 2).flatten(2).sum(-1)  # [i, j]: x1[i], x0[j]

        def cost(p, pair_cost=pair_cost):
            return sum(pair_cost[i, p[i]].item() for i in range(6))

        best = min(cost(p) for p in itertools.permutations(range(6)))
        perm = ot_permutation(x0, x1)
        assert sorted(perm.tolist()) == list(range(6))
        assert cost(perm.tolist()) == pytest.approx(best, rel=1e-9)


def test_ot_coupled_batch_pairs_noise_closer_to_the_data():
    x1 = torch.rand(32, 1, 8, 8) * 2 - 1
    plain = make_cfm_batch(x1, torch.Generator().manual_seed(5), ot=False)
    coupled = make_cfm_batch(x1, torch.Generator().manual_seed(5), ot=True)
    assert (coupled.u_t ** 2).sum() < (plain.u_t ** 2).sum()
    # same noise samples, only re-paired
    x0_plain = x1 - plain.u_t
    x0_coupled = x1 - coupled.u_t
    key = lambda x: sorted(round(v, 4) for v in x.flatten(1).sum(1).tolist())
    assert key(x0_plain) == key(x0_coupled)


def test_step_seeds_differ_per_step_and_seed():
    seeds = {step_seed(s, k) for s in range(3) for k in range(100)}
    assert len(seeds) == 300


# ------------------------------------------------------------------------- loop and checkpoints

def test_resumed_run_equals_uninterrupted_run(tmp_path):
    ds = ImageArraySet(tiny_images(64), 16)
    full = train(tiny_config(tmp_path / "a", max_steps=4, ot_coupling=True, prefetch=True),
                 dataset=ds)
    first = train(tiny_config(tmp_path / "b", max_steps=2, ot_coupling=True), dataset=ds)
    assert first.step == 2 and first.checkpoint.endswith("step_000000002.pt")
    resumed = train(tiny_config(tmp_path / "b", max_steps=4, ot_coupling=True), dataset=ds)
    assert resumed.resumed_from.endswith("step_000000002.pt")
    assert resumed.step == 4
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema_model.state_dict().values(),
                    resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    sa = load_checkpoint(full.checkpoint)["optimizer"]["state"]
    sb = load_checkpoint(resumed.checkpoint)["optimizer"]["state"]
    for k in sa:
        assert torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"])


def test_checkpoints_are_committed_atomically_and_pruned(tmp_path):
    ds = ImageArraySet(tiny_images(32), 16)
    train(tiny_config(tmp_path, max_steps=6, checkpoint_every=2, keep_checkpoints=2), dataset=ds)
    files = sorted(os.listdir(tmp_path / "ckpt"))
    assert files == ["latest.json", "step_000000004.pt", "step_000000006.pt"]
    assert json.loads((tmp_path / "ckpt" / "latest.json").read_text())["step"] == 6
    state = load_checkpoint(latest_checkpoint(str(tmp_path / "ckpt")))
    assert state["step"] == 6 and set(state) >= {"model", "ema", "optimizer", "config"}
    # without the pointer the newest step file is found
    (tmp_path / "ckpt" / "latest.json").unlink()
    assert latest_checkpoint(str(tmp_path / "ckpt")).endswith("step_000000006.pt")


def test_resume_refuses_a_changed_config(tmp_path):
    ds = ImageArraySet(tiny_images(32), 16)
    train(tiny_config(tmp_path, max_steps=2), dataset=ds)
    with pytest.raises(ValueError, match="batch_size"):
        train(tiny_config(tmp_path, max_steps=4, batch_size=4), dataset=ds)


def test_loss_is_finite_and_decreases_on_constant_images(tmp_path):
    const = np.full((64, 16, 16, 1), 200, np.uint8)
    cfg = tiny_config(tmp_path, max_steps=40, log_every=5, lr=2e-3, warmup_steps=1,
                      checkpoint_dir=None)
    result = train(cfg, dataset=ImageArraySet(const, 16))
    losses = [h["loss"] for h in result.history]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.7 * losses[0]


def test_max_seconds_stops_the_run_and_records_why(tmp_path):
    ds = ImageArraySet(tiny_images(32), 16)
    result = train(tiny_config(tmp_path, max_steps=10_000, max_seconds=0.0,
                               checkpoint_dir=None), dataset=ds)
    assert result.stopped_by == "max_seconds" and result.step == 0


def test_exported_prior_loads_with_a_complete_card(tmp_path):
    ds = ImageArraySet(tiny_images(64), 16, meta={"content_sha256": "abc"})
    out = tmp_path / "tiny.safetensors"
    cfg = tiny_config(tmp_path, max_steps=2, output=str(out), sample_count=4, sample_steps=2,
                      save_half=True, command="python -m restora_core.training --x")
    result = train(cfg, dataset=ds)
    assert result.samples.shape == (4, 1, 16, 16)
    assert result.samples.abs().max() <= 1
    prior = load_prior(str(out))
    card = prior.card
    assert prior.channels == 1 and prior.resolution == 16
    assert card["value_range"] == [-1.0, 1.0]
    assert card["training"]["steps"] == 2 and np.isfinite(card["training"]["final_loss"])
    assert card["command"] == "python -m restora_core.training --x"
    assert card["data"]["content_sha256"] == "abc"
    assert card["architecture"]["ch_mult"] == [1, 2]
    assert card["date"] and card["weights_dtype"] == "float16"
    for a, b in zip(prior.velocity.state_dict().values(),
                    result.ema_model.state_dict().values()):
        assert torch.allclose(a, b.half().float())


# ------------------------------------------------------------------------ the command (restora train)

def test_train_command_flags_override_the_recipe():
    from flows.train_prior import config_from_argv

    cfg, recipe, _ = config_from_argv(["--recipe", "photo32", "--device", "cuda", "--bf16",
                                       "--max-seconds", "10", "--set", "ot_coupling=false",
                                       "--resolution", "48", "--output", "p.safetensors"])
    assert recipe == "photo32" and cfg.channels == 3 and cfg.device == "cuda" and cfg.bf16
    assert cfg.max_seconds == 10.0 and not cfg.ot_coupling and cfg.resolution == 48
    assert cfg.model["attn_resolutions"] == [16]
    assert cfg.command.startswith("restora train --recipe photo32")


def test_the_engine_loop_points_image_sources_to_the_train_command():
    with pytest.raises(ValueError, match="restora train"):
        train(TrainConfig(data="some/folder/", max_steps=1))


# --------------------------------------------------------------------------- the Prefect flow

@pytest.mark.integration
def test_train_prior_flow_publishes_artifacts_and_a_loadable_prior(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    from prefect.testing.utilities import prefect_test_harness

    from flows.train_prior import train_prior
    from restora_core.datasets import save_npz

    data = tmp_path / "d.npz"
    save_npz(ImageArraySet(tiny_images(300), 16), str(data))
    out = tmp_path / "prior.safetensors"
    config = {"data": str(data), "resolution": 16, "channels": 1, "model": TINY_MODEL,
              "batch_size": 8, "max_steps": 4, "log_every": 2,
              "checkpoint_dir": str(tmp_path / "ck"), "checkpoint_every": 2, "sample_count": 4,
              "sample_steps": 2, "output": str(out)}
    with prefect_test_harness(server_startup_timeout=120):
        summary = train_prior(config=config)
        from prefect import get_client

        async def artifacts():
            async with get_client() as client:
                return await client.read_artifacts()

        import asyncio

        keys = {a.key for a in asyncio.run(artifacts())}
    assert {"train-loss", "train-summary", "train-progress"} <= keys
    assert summary["step"] == 4 and np.isfinite(summary["final_loss"])
    assert (tmp_path / "prior_samples.png").exists()
    card = load_prior(str(out)).card
    assert card["command"].startswith("prefect flow train-prior")
    assert os.path.exists(tmp_path / "ck" / "step_000000004.pt")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_run_resumes_and_exports(tmp_path):
    ds = ImageArraySet(tiny_images(64), 16)
    out = tmp_path / "gpu.safetensors"
    first = train(tiny_config(tmp_path, max_steps=2, device="cuda", bf16=True,
                              ot_coupling=True), dataset=ds)
    assert first.step == 2
    result = train(tiny_config(tmp_path, max_steps=4, device="cuda", bf16=True, ot_coupling=True,
                               output=str(out), sample_count=4, sample_steps=2), dataset=ds)
    assert result.resumed_from is not None and result.step == 4
    assert np.isfinite(result.final_loss) and result.samples.shape == (4, 1, 16, 16)
    assert load_prior(str(out)).card["training"]["device"].startswith("cuda")
