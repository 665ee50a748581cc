"""Closed-form velocity fields for exact, fast sampler tests, and a Gaussian image prior whose
posterior is exact (the calibration test and benchmark use it).

``ConstantImagePrior``, "constant images": x1 = c * 1 + s * z with c ~ N(0, a^2), z ~ N(0, I).
Its covariance a^2 11^T + s^2 I has eigenvalue n a^2 + s^2 along the all-ones direction and s^2
across it, so the exact marginal velocity of the linear path is cheap to evaluate.
"""

from __future__ import annotations

import torch


def _gain(lam: float, t: torch.Tensor) -> torch.Tensor:
    # E[x1 - x0 | x_t] = f(lam) * x_t for a zero-mean Gaussian with variance lam along a direction.
    return (t * lam - (1 - t)) / (t**2 * lam + (1 - t) ** 2)


class ConstantImagePrior:
    """v(x, t) exact for x1 = c * ones + s * noise, c ~ N(0, a^2); counts its evaluations."""

    def __init__(self, a: float = 0.5, s: float = 0.02):
        self.a, self.s, self.calls = a, s, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        n = x[0].numel()
        tt = t.to(x.dtype).view(-1, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)  # projection onto the all-ones direction
        along, across = mean.expand_as(x), x - mean
        return _gain(n * self.a**2 + self.s**2, tt) * along + _gain(self.s**2, tt) * across


def exponential_covariance(size: int, std: float, length: float, nugget: float) -> torch.Tensor:
    """(n, n) float64 covariance of ``size`` x ``size`` pixels: std^2 exp(-d / length) with d the
    distance between pixels, plus ``nugget``^2 of independent per-pixel variance."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pos = torch.stack([rows.flatten(), cols.flatten()], dim=1).double()
    dist = torch.cdist(pos, pos)
    return std**2 * torch.exp(-dist / length) + nugget**2 * torch.eye(size * size,
                                                                       dtype=torch.float64)


class GaussianImagePrior:
    """Gray ``size`` x ``size`` images x1 ~ N(mean, cov): the exact flow-matching velocity of the
    linear path, exact draws, and the exact posterior given a masked noisy observation.

    With x0 ~ N(0, I) and x_t = t x1 + (1-t) x0, x_t is Gaussian with covariance
    C_t = t^2 S + (1-t)^2 I, and the velocity E[x1 - x0 | x_t] = mu + (t S - (1-t) I) C_t^{-1}
    (x_t - t mu): diagonal in S's eigenbasis, finite at t = 1. Counts its evaluations.
    """

    def __init__(self, size: int = 8, std: float = 0.3, length: float = 2.0,
                 nugget: float = 0.01, mean: float = 0.0):
        self.size, self.n, self.calls = size, size * size, 0
        self.cov = exponential_covariance(size, std, length, nugget)
        self.mu = torch.full((self.n,), float(mean), dtype=torch.float64)
        self.eigval, self.eigvec = torch.linalg.eigh(self.cov)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v(x, t) for ``x: (B, 1, size, size)``, ``t: (B,)``, in x's dtype."""
        self.calls += 1
        u, lam, mu = (a.to(x.dtype) for a in (self.eigvec, self.eigval, self.mu))
        tt = t.to(x.dtype).view(-1, 1)
        coeff = (x.reshape(x.shape[0], -1) - tt * mu) @ u
        gain = (tt * lam - (1 - tt)) / (tt**2 * lam + (1 - tt) ** 2)
        return (mu + (gain * coeff) @ u.T).view_as(x)

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` exact draws (count, 1, size, size), float32."""
        z = torch.randn(count, self.n, generator=generator, dtype=torch.float64)
        x = self.mu + (z * self.eigval.sqrt()) @ self.eigvec.T
        return x.float().view(count, 1, self.size, self.size)

    def _posterior_one(self, y: torch.Tensor, mask: torch.Tensor,
                       sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        # Precision form: observed pixels add 1/sigma^2 to the prior precision's diagonal.
        prior_precision = torch.linalg.inv(self.cov)
        m = mask.double().flatten()
        cov = torch.linalg.inv(prior_precision + torch.diag(m / sigma**2))
        cov = 0.5 * (cov + cov.T)
        return cov @ (prior_precision @ self.mu + m * y.double().flatten() / sigma**2), cov

    def posterior(self, y: torch.Tensor, mask: torch.Tensor,
                  sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact per-pixel posterior mean and std (B, 1, size, size), float64, of x1 given
        ``y = mask * (x1 + sigma * noise)`` (``mask`` (B, 1, size, size), 1 = observed; all ones
        for denoising)."""
        parts = [self._posterior_one(yi, mi, sigma) for yi, mi in zip(y, mask)]
        shape = (y.shape[0], 1, self.size, self.size)
        return (torch.stack([mean for mean, _ in parts]).view(shape),
                torch.stack([cov.diagonal().sqrt() for _, cov in parts]).view(shape))

    def posterior_draws(self, y: torch.Tensor, mask: torch.Tensor, sigma: float, count: int,
                        generator: torch.Generator) -> torch.Tensor:
        """``count`` exact posterior draws per image, (B, count, 1, size, size) float64."""
        out = []
        for yi, mi in zip(y, mask):
            mean, cov = self._posterior_one(yi, mi, sigma)
            z = torch.randn(count, self.n, generator=generator, dtype=torch.float64)
            out.append(mean + z @ torch.linalg.cholesky(cov).T)
        return torch.stack(out).view(y.shape[0], count, 1, self.size, self.size)


CALIBRATION_TASKS = ("box", "random", "superres", "denoise")


def calibration_problem(prior: GaussianImagePrior, task: str, count: int, seed: int, *,
                        sigma_y: float = 0.01, sigma: float = 0.2):
    """``count`` truths drawn from ``prior`` and their observation for ``task``: returns
    (truth, y, mask or None, noise std). box: the centred half-side square is missing;
    random: 70 % of pixels; superres: all but every second row and column; denoise: none,
    every pixel carries noise ``sigma``."""
    g = torch.Generator().manual_seed(seed)
    truth = prior.draw(count, g)
    size = prior.size
    if task == "denoise":
        return truth, truth + sigma * torch.randn(truth.shape, generator=g), None, sigma
    if task == "box":
        mask = torch.ones(count, 1, size, size)
        lo, hi = size // 4, size // 4 + size // 2
        mask[..., lo:hi, lo:hi] = 0.0
    elif task == "random":
        mask = (torch.rand(count, 1, size, size, generator=g) >= 0.7).float()
    elif task == "superres":
        mask = torch.zeros(count, 1, size, size)
        mask[..., ::2, ::2] = 1.0
    else:
        raise ValueError(f"no calibration problem for task '{task}'")
    return truth, mask * (truth + sigma_y * torch.randn(truth.shape, generator=g)), mask, sigma_y


def calibration_scores(mean: torch.Tensor, std: torch.Tensor | None, post_mean: torch.Tensor,
                       post_std: torch.Tensor, truth: torch.Tensor,
                       scored: torch.Tensor) -> dict[str, float | None]:
    """How a sampler's per-pixel ``mean``/``std`` match the exact posterior on ``scored`` pixels.

    mean_err_z: mean |mean - posterior mean| / posterior std; std_ratio: mean std / posterior
    std (1 = calibrated spread, < 1 over-confident); kl: mean per-pixel KL(exact || N(mean,
    std^2)); mse_ratio: squared error of ``mean`` to the truth over that of the exact posterior
    mean (1 = Bayes-optimal); coverage90: fraction of truths inside mean +- 1.645 std (0.90 for
    an exact posterior). ``std`` None (a deterministic method) counts as zero spread.
    """
    sel = scored.expand_as(truth).bool()
    m, pm, ps, x = (a.double()[sel] for a in (mean, post_mean, post_std, truth))
    s = torch.zeros_like(m) if std is None else std.double()[sel]
    kl = None
    if std is not None and bool((s > 0).all()):
        kl = (torch.log(s / ps) + (ps**2 + (pm - m) ** 2) / (2 * s**2) - 0.5).mean().item()
    return {
        "mean_err_z": ((m - pm).abs() / ps).mean().item(),
        "std_ratio": (s / ps).mean().item(),
        "kl": kl,
        "mse_ratio": ((m - x) ** 2).mean().item() / ((pm - x) ** 2).mean().item(),
        "coverage90": ((x - m).abs() <= 1.645 * s).double().mean().item(),
    }
