"""The jump schedule: levels, step sizes and evaluation counts."""

from itertools import pairwise

import pytest

from restora_core import method_nfe
from restora_core.schedule import (
    correction_levels,
    correction_schedule,
    euler_grid,
    gamma_t,
    start_index,
)


def test_levels_for_four_steps_match_the_paper_walk():
    assert correction_levels(4, 1) == [0, 1, 2, 1, 2, 3, 2, 3, 4, 3, 4]
    assert correction_levels(4, 2) == [0, 1, 2, 1, 2, 1, 2, 3, 2, 3, 2, 3, 4, 3, 4, 3, 4]
    assert correction_levels(4, 0) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 64, 128])
@pytest.mark.parametrize("corrections", [0, 1, 2, 3])
def test_schedule_properties(steps, corrections):
    sched = correction_schedule(steps, corrections)
    assert sched[0][0] == 0.0 and sched[-1][1] == 1.0
    ups = [s for s in sched if s[1] > s[0]]
    downs = [s for s in sched if s[1] < s[0]]
    assert len(ups) == steps + corrections * max(steps - 1, 0)
    assert len(downs) == corrections * max(steps - 1, 0)
    for a, b in sched:
        assert abs(abs(b - a) - 1 / steps) < 1e-12
    for (_, b), (c, _) in pairwise(sched):
        assert b == c
    # first up-step never follows a correction; the walk never goes below 0 or above 1
    assert all(0.0 <= t <= 1.0 for pair in sched for t in pair)
    assert len(sched) == method_nfe("restora_flow", steps, corrections)


def test_paper_nfe_counts():
    assert len(correction_schedule(64, 1)) == 190
    assert method_nfe("restora_flow", 64, 1) == 190
    assert method_nfe("restora_flow_denoise", 64, sigma=0.2) == 13


def test_published_baseline_costs_at_their_box_settings():
    # OT-ODE starts at t0 = 0.1 on a 100-step grid: 90 evaluations; PnP-Flow averages 5 draws.
    assert method_nfe("ot_ode", task="box") == 90
    assert method_nfe("ot_ode", 100, task="denoise") == 70
    assert method_nfe("ot_ode", 4, task="box") == 3  # never starts at t = 0
    assert method_nfe("pnp_flow", 100, task="box") == 500
    assert method_nfe("flower", task="box") == 100
    assert method_nfe("restora_flow", task="random") == 128 + 2 * 127


def test_gamma_t_is_the_published_weight():
    assert gamma_t(0.5) == pytest.approx(1.0)
    assert gamma_t(0.1) == pytest.approx((0.1 / (0.01 + 0.81)) ** 0.5)
    assert gamma_t(1.0) == pytest.approx(1.0)
    assert start_index(100, 0.29) == 29 and start_index(100, 0.1) == 10


def test_bad_schedule_arguments_are_refused():
    with pytest.raises(ValueError):
        correction_levels(0, 1)
    with pytest.raises(ValueError):
        correction_levels(4, -1)
    assert len(euler_grid(5)) == 5
