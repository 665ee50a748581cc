"""Time schedules as data: lists of (t_from, t_to) transitions that samplers walk."""

from __future__ import annotations

from itertools import pairwise


def correction_levels(steps: int, corrections: int) -> list[int]:
    """Grid levels k (time k/steps) visited by Restora-Flow's jump schedule.

    The walk goes up one level at a time; after each up-step that lands on a level k with
    2 <= k <= steps it goes down one level and up again, ``corrections`` times.
    ``steps=4, corrections=1`` gives 0,1,2,1,2,3,2,3,4,3,4.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if corrections < 0:
        raise ValueError(f"corrections must be >= 0, got {corrections}")
    levels = [0]
    for k in range(1, steps + 1):
        levels.append(k)
        if k >= 2:
            for _ in range(corrections):
                levels.extend((k - 1, k))
    return levels


def correction_schedule(steps: int, corrections: int) -> list[tuple[float, float]]:
    """Transitions (t, t') of the jump schedule on the grid k/steps; t' < t is a correction."""
    levels = correction_levels(steps, corrections)
    return [(a / steps, b / steps) for a, b in pairwise(levels)]


def schedule_nfe(schedule: list[tuple[float, float]]) -> int:
    """Network evaluations a mask-guided walk of ``schedule`` costs: one per transition."""
    return len(schedule)


def euler_grid(steps: int) -> list[tuple[float, float]]:
    """Plain Euler transitions 0 -> 1 in ``steps`` equal steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [(k / steps, (k + 1) / steps) for k in range(steps)]


def gamma_t(t: float) -> float:
    """OT-ODE's time-dependent guidance weight sqrt(t / (t^2 + (1-t)^2)) (Pokle et al., TMLR 2024)."""
    return (t / (t**2 + (1.0 - t) ** 2)) ** 0.5


def start_index(steps: int, t0: float) -> int:
    """First grid index k (time k/steps) of a walk that starts at ``t0``: floor(steps * t0)."""
    # The tolerance keeps 0.29 * 100 = 28.999999999999996 on level 29.
    return int(steps * t0 + 1e-9)
