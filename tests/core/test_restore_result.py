"""RestoreResult reports what the sampler ran with, not what was asked."""

from __future__ import annotations

import torch

from restora_core import restore

from .analytic import ConstantImagePrior


def test_result_reports_the_settings_each_method_used_whatever_was_asked():
    y, mask = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 0
    expected = {"restora_flow": (2, {"paste_known": False}),
                "mask_ode": (0, {"paste_known": False}),
                "ot_ode": (0, {"t0": 0.2, "sigma_y": 0.01}), "pnp_flow": (0, {"alpha": 0.5})}
    for method, (corrections, settings) in expected.items():
        prior = ConstantImagePrior()
        result = restore(prior, y, mask, method=method, steps=4, corrections=2)
        assert (result.method, result.steps, result.corrections) == (method, 4, corrections)
        assert result.settings == settings, method
        if method != "ot_ode":  # ot_ode also back-propagates through each evaluation
            assert result.nfe == prior.calls, method
    denoised = restore(ConstantImagePrior(), y, None, method="restora_flow_denoise", steps=8,
                       sigma=0.1)
    assert denoised.corrections == 0 and denoised.settings == {"sigma": 0.1}
