"""Is the spread of several samples honest? On a Gaussian image prior the velocity and the
posterior are exact, so each sampler's per-pixel mean and std can be held to the truth
(numbers: benchmarks/results/uncertainty_calibration.md, same problems and seeds)."""

import torch

from restora_core import restore

from .analytic import GaussianImagePrior, calibration_problem, calibration_scores


def test_gaussian_velocity_is_the_conditional_expectation_of_x1_minus_x0():
    prior = GaussianImagePrior()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    for t in (0.0, 0.3, 0.9, 1.0):
        # Independent recomputation by Gaussian conditioning with full matrices:
        # Cov(x1, x_t) = t S, Cov(x0, x_t) = (1-t) I, Cov(x_t) = t^2 S + (1-t)^2 I.
        cov_t = t**2 * prior.cov + (1 - t) ** 2 * torch.eye(64, dtype=torch.float64)
        centred = x.view(3, 64) - t * prior.mu
        e_x1 = prior.mu + (t * prior.cov @ torch.linalg.solve(cov_t, centred.T)).T
        e_x0 = ((1 - t) * torch.linalg.solve(cov_t, centred.T)).T
        got = prior(x, torch.full((3,), t, dtype=torch.float64)).view(3, 64)
        assert torch.allclose(got, e_x1 - e_x0, atol=1e-9)


def test_exact_flow_carries_noise_to_the_prior_covariance():
    prior = GaussianImagePrior()
    x = torch.randn(3000, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    steps = 100
    for k in range(steps):
        x = x + prior(x, torch.full((x.shape[0],), k / steps, dtype=torch.float64)) / steps
    empirical = torch.cov(x.view(-1, 64).T)
    # Entries reach 0.09; with 3000 draws the largest Monte Carlo error is ~0.008.
    assert (empirical - prior.cov).abs().max().item() < 0.015


def test_exact_posterior_matches_conditioning_on_the_known_pixels():
    prior = GaussianImagePrior()
    _truth, y, mask, sigma_y = calibration_problem(prior, "box", 2, seed=3)
    mean, std = prior.posterior(y, mask, sigma_y)
    known = mask[0].flatten().bool()
    s = prior.cov
    s_kk = s[known][:, known] + sigma_y**2 * torch.eye(int(known.sum()), dtype=torch.float64)
    s_mk = s[~known][:, known]
    want_mean = s_mk @ torch.linalg.solve(s_kk, y[0].double().flatten()[known])
    want_var = (s[~known][:, ~known] - s_mk @ torch.linalg.solve(s_kk, s_mk.T)).diagonal()
    assert torch.allclose(mean[0].flatten()[~known], want_mean, atol=1e-9)
    assert torch.allclose(std[0].flatten()[~known] ** 2, want_var, atol=1e-9)


def test_exact_posterior_draws_score_as_calibrated():
    prior = GaussianImagePrior()
    truth, y, mask, sigma_y = calibration_problem(prior, "box", 16, seed=100)
    post_mean, post_std = prior.posterior(y, mask, sigma_y)
    draws = prior.posterior_draws(y, mask, sigma_y, 512, torch.Generator().manual_seed(7))
    scores = calibration_scores(draws.mean(1), draws.std(1), post_mean, post_std, truth, 1 - mask)
    assert scores["mean_err_z"] < 0.05 and abs(scores["std_ratio"] - 1) < 0.02
    assert scores["kl"] < 0.005


def _scores(method: str, task: str, seed: int):
    prior = GaussianImagePrior()
    truth, y, mask, noise = calibration_problem(prior, task, 16, seed=seed)
    observed = torch.ones_like(truth) if mask is None else mask
    post_mean, post_std = prior.posterior(y, observed, noise)
    kw = {"sigma": noise} if mask is None else {"sigma_y": noise}
    result = restore(prior, y, mask, method=method, task=task, seed=11, samples=512, **kw)
    scored = torch.ones_like(observed) if mask is None else 1 - observed
    return calibration_scores(result.mean, result.std, post_mean, post_std, truth, scored)


def test_restora_flow_box_posterior_is_near_exact_in_mean_and_twenty_percent_narrow():
    # Measured (16 images, K=512, seed 100 as in the benchmark): mean_err_z 0.141, std_ratio
    # 0.805, kl 0.081, mse_ratio 1.02. Restora-Flow is the best-calibrated mask method, but its
    # spread is ~20 % too small: a flag threshold must be set on data, not read as a true std.
    s = _scores("restora_flow", "box", seed=100)
    assert s["mean_err_z"] < 0.18
    assert 0.75 < s["std_ratio"] < 0.86
    assert s["kl"] < 0.11
    assert s["mse_ratio"] < 1.06


def test_ot_ode_denoising_spread_is_honest():
    # Measured (16 images, K=512, seed 103): std_ratio 1.05, kl 0.028, coverage90 0.883.
    s = _scores("ot_ode", "denoise", seed=103)
    assert 0.98 < s["std_ratio"] < 1.12
    assert s["kl"] < 0.045
    assert 0.85 < s["coverage90"] < 0.92
