"""The quality study's pieces: matched budgets, the classical baselines, the paired statistics."""

from __future__ import annotations

import pytest
import torch

from benchmarks.quality import BUDGETS, bicubic, matched_steps, paired_differences, runs_for
from restora_core.samplers import get_method


@pytest.mark.parametrize("task", ["box", "random", "superres", "denoise"])
def test_matched_budgets_land_within_a_few_evaluations_of_the_target(task):
    for method, setting, overrides in runs_for(task, quick=False):
        cost = get_method(method).cost(task, overrides)
        if setting != "published":
            budget = int(setting.strip("~ NFE"))
            assert budget in BUDGETS and abs(cost - budget) <= 2, (method, setting, cost)
    # mask_ode at about 190 evaluations is the equal-cost ablation of the corrections
    if task != "denoise":
        assert ("mask_ode", "~190 NFE", {"steps": 190}) in runs_for(task, quick=False)
    assert get_method("pnp_flow").cost(task, {"steps": matched_steps("pnp_flow", task, 64)}) == 65


def test_bicubic_passes_through_the_samples_and_keeps_a_linear_ramp():
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(1, 1, 16, 16).contiguous()
    up = bicubic(ramp, 2)
    assert torch.allclose(up[..., ::2, ::2], ramp[..., ::2, ::2], atol=1e-6)
    # away from the border (clamped there; the last column is replicated) a ramp stays a ramp
    assert torch.allclose(up[..., 2:13], ramp[..., 2:13], atol=1e-5)


def test_paired_differences_give_the_mean_interval_and_wins_per_image():
    rows = []
    for i, (a, b) in enumerate([(20.0, 21.0), (22.0, 22.5), (24.0, 25.5)]):
        rows.append({"dataset": "d", "task": "box", "method": "restora_flow",
                     "setting": "published", "index": i, "psnr": a, "psnr_hole": a, "lpips": 0.1})
        rows.append({"dataset": "d", "task": "box", "method": "flower", "setting": "published",
                     "index": i, "psnr": b, "psnr_hole": b, "lpips": 0.2})
    (row,) = paired_differences(rows)
    assert row["method"] == "flower" and row["d_psnr"] == pytest.approx(1.0)
    # t(0.975, 2) = 4.303; sd of (1, 0.5, 1.5) = 0.5
    assert row["d_psnr_ci95"] == pytest.approx(4.303 * 0.5 / 3**0.5, rel=1e-3)
    assert row["psnr_better_on"] == "3/3" and row["lpips_better_on"] == "0/3"


def test_equal_cost_pairs_use_restora_flows_row_at_that_budget():
    from benchmarks.quality import paired_at_budgets

    summary, rows = [], []
    runs = [("restora_flow", "published", 190, (20.0, 22.0, 24.0)),
            ("restora_flow", "~64 NFE", 64, (19.0, 20.0, 21.0)),
            ("mask_ode", "~190 NFE", 190, (18.0, 21.0, 22.0)),
            ("mask_ode", "published", 64, (19.5, 20.5, 21.5)),
            ("pnp_flow", "published", 500, (30.0, 30.0, 30.0))]
    for method, setting, nfe, values in runs:
        summary.append({"dataset": "d", "task": "box", "method": method, "setting": setting,
                        "nfe": nfe})
        for i, v in enumerate(values):
            rows.append({"dataset": "d", "task": "box", "method": method, "setting": setting,
                         "index": i, "psnr": v, "psnr_hole": v, "lpips": 0.1})
    out = {(r["budget"], r["method"]): r for r in paired_at_budgets(rows, summary)}
    assert set(out) == {("~64 NFE", "mask_ode"), ("~190 NFE", "mask_ode")}  # pnp_flow: no budget
    assert out[("~190 NFE", "mask_ode")]["against"] == "restora_flow published (190 NFE)"
    assert out[("~190 NFE", "mask_ode")]["d_psnr"] == pytest.approx(-5 / 3)
    assert out[("~64 NFE", "mask_ode")]["d_psnr"] == pytest.approx(0.5)
