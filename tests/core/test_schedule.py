"""The jump schedule: levels, step sizes and evaluation counts."""

from itertools import pairwise

import pytest

from restora_core.restore import method_nfe
from restora_core.schedule import correction_levels, correction_schedule, euler_grid


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


def test_bad_schedule_arguments_are_refused():
    with pytest.raises(ValueError):
        correction_levels(0, 1)
    with pytest.raises(ValueError):
        correction_levels(4, -1)
    assert len(euler_grid(5)) == 5
