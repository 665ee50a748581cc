"""Every method against an independent step-by-step transcription of its published update rule.

Each test runs the registry entry once on a tiny nonlinear velocity field (its Jacobian is not
symmetric, so a transposed vector-Jacobian product shows) and replays the authors' loop written
out here, drawing the same noise in the same order; they must agree to 1e-5. Each test then
replays a plausible wrong variant (re-noising to the wrong time, a missing weight, ...) and
checks that it is caught: it differs from the run by a clear margin.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restora_core.noise import PerImageNoise, generators_for_seeds
from restora_core.samplers import get_method

SEEDS = [3, 4]
SHAPE = (2, 6, 6)  # (C, H, W) of each image
SIGMA_Y = 0.01
AGREE = 1e-5
CAUGHT = 1e-2


class TinyField:
    """A smooth nonlinear v(x, t): a fixed random 3x3 convolution through tanh, mixed with x by t."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.kernel = torch.randn(SHAPE[0], SHAPE[0], 3, 3, generator=g) * 0.4
        self.bias = torch.randn(SHAPE[0], generator=g) * 0.1

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.to(x.dtype).view(-1, 1, 1, 1)
        h = F.conv2d(x, self.kernel.to(x.dtype), padding=1) + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return torch.tanh(h) * (1.0 + tt) - 0.5 * x * (1.0 - tt)


def _problem(denoise: bool = False):
    g = torch.Generator().manual_seed(11)
    clean = (torch.rand(len(SEEDS), *SHAPE, generator=g, dtype=torch.float64) * 1.6 - 0.8)
    if denoise:
        mask = torch.ones(len(SEEDS), 1, *SHAPE[1:], dtype=torch.float64)
        return clean + 0.2 * torch.randn(clean.shape, generator=g, dtype=torch.float64), mask
    mask = (torch.rand(len(SEEDS), 1, *SHAPE[1:], generator=g) > 0.4).double()
    mask[:, :, 1:4, 2:5] = 0.0  # a box the field has to fill
    noisy = clean + SIGMA_Y * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    return mask * noisy, mask


def _noise(y: torch.Tensor) -> PerImageNoise:
    return PerImageNoise(generators_for_seeds(SEEDS), y.shape[1:], device=y.device, dtype=y.dtype)


def _run(name: str, y, mask, noise: float, task: str | None = None, **overrides) -> torch.Tensor:
    entry = get_method(name)
    params = entry.make_params(task, overrides)
    return entry.sample(TinyField(), y, mask, params, noise, generators_for_seeds(SEEDS))


def _assert_agrees_and_wrong_is_caught(run, right, wrong):
    assert (run - right).abs().max().item() < AGREE
    assert (run - wrong).abs().max().item() > CAUGHT


def _at(t: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype)


# --- Restora-Flow and its c = 0 ablation -------------------------------------------------------

def _restora_flow_by_hand(y, m, T, c, *, renoise_to_current=False, paste_at_next=False):
    v, draw = TinyField(), _noise(y)
    x = draw()

    def up(x, k, first):  # the Euler step from level k-1 to k, known pixels re-imposed first
        t = (k - 1) / T
        if not first:
            tp = k / T if paste_at_next else t
            x = m * (tp * y + (1 - tp) * draw()) + (1 - m) * x
        return x + (1 / T) * v(x, _at(t, x))

    x = up(x, 1, first=True)
    for k in range(2, T + 1):
        x = up(x, k, first=False)
        for _ in range(c):  # predict the clean image at k/T, re-noise it to (k-1)/T, step again
            t, t_back = k / T, (k - 1) / T
            x1 = x + (1 - t) * v(x, _at(t, x))
            target = t if renoise_to_current else t_back
            x = target * x1 + (1 - target) * draw()
            x = up(x, k, first=False)
    return x


def test_restora_flow_matches_the_published_walk_and_catches_renoising_to_the_current_time():
    y, m = _problem()
    run = _run("restora_flow", y, m, SIGMA_Y, steps=6, corrections=2)
    _assert_agrees_and_wrong_is_caught(
        run, _restora_flow_by_hand(y, m, 6, 2),
        _restora_flow_by_hand(y, m, 6, 2, renoise_to_current=True))


def test_mask_ode_matches_the_published_walk_without_corrections_and_catches_a_late_paste():
    y, m = _problem()
    run = _run("mask_ode", y, m, SIGMA_Y, steps=8)
    _assert_agrees_and_wrong_is_caught(
        run, _restora_flow_by_hand(y, m, 8, 0), _restora_flow_by_hand(y, m, 8, 0, paste_at_next=True))


def _denoise_by_hand(y, sigma, T, *, start_at_y=False):
    v = TinyField()
    x = y if start_at_y else (1 - sigma) * y
    delta = 1 / T
    for t in torch.linspace(0, 1, T, dtype=torch.float64).tolist():
        if t >= 1 - sigma:
            x = x + delta * v(x, _at(t, x))
    return x


def test_restora_flow_denoise_matches_the_published_path_and_catches_a_start_off_the_path():
    y, m = _problem(denoise=True)
    run = _run("restora_flow_denoise", y, m, 0.2, steps=16)
    _assert_agrees_and_wrong_is_caught(run, _denoise_by_hand(y, 0.2, 16),
                                       _denoise_by_hand(y, 0.2, 16, start_at_y=True))


# --- OT-ODE -------------------------------------------------------------------------------------

def _ot_ode_by_hand(y, m, steps, t0, gamma, sigma, *, jacobian_not_transposed=False):
    v, draw = TinyField(), _noise(y)
    x = t0 * (m * y) + (1 - t0) * draw()
    delta = 1 / steps
    for k in range(int(steps * t0), steps):
        t = delta * k
        tv = _at(t, x)
        vt = v(x, tv)
        x1_hat = x + (1 - t) * vt
        rt2 = (1 - t) ** 2 / ((1 - t) ** 2 + t**2)
        d = m * y - m * x1_hat
        vec = m * (d / (m * rt2 + sigma**2))
        product = torch.autograd.functional.jvp if jacobian_not_transposed \
            else torch.autograd.functional.vjp
        g = product(lambda z, tv=tv: v(z, tv), x, vec)[1]
        g = vec + (1 - t) * g
        weight = 1.0 if gamma == "constant" else (t / (t**2 + (1 - t) ** 2)) ** 0.5
        x = x + delta * (vt + (1 - t) / t * weight * g)
    return x


@pytest.mark.parametrize(("task", "t0", "gamma", "sigma"), [
    ("box", 0.1, "gamma_t", SIGMA_Y), ("random", 0.1, "constant", SIGMA_Y),
    ("denoise", 0.3, "gamma_t", 0.2)])
def test_ot_ode_matches_the_published_loop_and_catches_an_untransposed_jacobian(task, t0, gamma, sigma):
    y, m = _problem(denoise=task == "denoise")
    run = _run("ot_ode", y, m, sigma, task=task, steps=20)
    assert get_method("ot_ode").make_params(task).t0 == t0
    _assert_agrees_and_wrong_is_caught(
        run, _ot_ode_by_hand(y, m, 20, t0, gamma, sigma),
        _ot_ode_by_hand(y, m, 20, t0, gamma, sigma, jacobian_not_transposed=True))


def test_ot_ode_catches_a_constant_weight_where_gamma_t_is_published():
    y, m = _problem()
    run = _run("ot_ode", y, m, SIGMA_Y, task="box", steps=20)
    assert (run - _ot_ode_by_hand(y, m, 20, 0.1, "constant", SIGMA_Y)).abs().max() > CAUGHT


# --- PnP-Flow -----------------------------------------------------------------------------------

def _pnp_flow_by_hand(y, m, steps, alpha, lr, samples, sigma, *, renoise_to_next=False):
    v, draw = TinyField(), _noise(y)
    lr = sigma**2 * lr
    x = m * torch.ones_like(y)  # the published start, H^T(1); it is forgotten at t = 0
    delta = 1 / steps
    for k in range(steps):
        t = delta * k
        z = x - lr * (1 - t) ** alpha * (m * (m * x - y) / sigma**2)
        s = t + delta if renoise_to_next else t
        total = torch.zeros_like(x)
        for _ in range(samples):
            z_t = s * z + (1 - s) * draw()
            total = total + z_t + (1 - t) * v(z_t, _at(t, z_t))
        x = total / samples
    return x


@pytest.mark.parametrize(("task", "alpha", "sigma"), [("box", 0.5, SIGMA_Y), ("denoise", 0.8, 0.2)])
def test_pnp_flow_matches_the_published_loop_and_catches_renoising_to_the_next_time(task, alpha, sigma):
    y, m = _problem(denoise=task == "denoise")
    run = _run("pnp_flow", y, m, sigma, task=task, steps=10, averages=3)
    _assert_agrees_and_wrong_is_caught(
        run, _pnp_flow_by_hand(y, m, 10, alpha, 1.0, 3, sigma),
        _pnp_flow_by_hand(y, m, 10, alpha, 1.0, 3, sigma, renoise_to_next=True))


# --- Flower -------------------------------------------------------------------------------------

def _conjugate_gradients(apply, b, x0, iters=50):
    x = x0.clone()
    r = b - apply(x)
    p = r.clone()
    rr = (r * r).sum(dim=(1, 2, 3), keepdim=True)
    for _ in range(iters):
        if rr.max() < 1e-28:
            break
        ap = apply(p)
        step = rr / (p * ap).sum(dim=(1, 2, 3), keepdim=True)
        x = x + step * p
        r = r - step * ap
        rr_new = (r * r).sum(dim=(1, 2, 3), keepdim=True)
        p = r + rr_new / rr * p
        rr = rr_new
    return x


def _flower_by_hand(y, m, steps, samples, sigma, *, renoise_to_current=False):
    v, draw = TinyField(), _noise(y)
    delta = 1 / steps
    total = torch.zeros_like(y)
    for _ in range(samples):
        x = draw()
        for k in range(steps):
            t = delta * k
            sigma_r = (1 - t) / (t**2 + (1 - t) ** 2) ** 0.5
            x_hat_1 = x + (1 - t) * v(x, _at(t, x))
            lam = sigma_r**2
            b = m * y / sigma**2 + x_hat_1 / lam
            x_star = _conjugate_gradients(lambda z, lam=lam: m * z / sigma**2 + z / lam, b, x_hat_1)
            s = t if renoise_to_current else t + delta
            x = s * x_star + (1 - s) * draw()
        total = total + x
    return total / samples


@pytest.mark.parametrize(("task", "sigma"), [("box", SIGMA_Y), ("denoise", 0.2)])
def test_flower_matches_the_published_loop_and_catches_renoising_to_the_current_time(task, sigma):
    y, m = _problem(denoise=task == "denoise")
    run = _run("flower", y, m, sigma, task=task, steps=10, averages=2)
    _assert_agrees_and_wrong_is_caught(run, _flower_by_hand(y, m, 10, 2, sigma),
                                       _flower_by_hand(y, m, 10, 2, sigma, renoise_to_current=True))


def test_every_registered_method_has_a_transcription_here():
    from restora_core.samplers import METHODS

    tested = {"restora_flow", "mask_ode", "restora_flow_denoise", "ot_ode", "pnp_flow", "flower"}
    assert set(METHODS) == tested
