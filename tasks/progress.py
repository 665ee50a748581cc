"""Image-level progress of a run: done / total, rate and ETA, fed as batches finish.

Shard tasks run in the flow process (threads) and call ``RunProgress.report`` after every batch
their Ray pipeline returns; the flow reads ``snapshot()`` and publishes it. Ray actors never touch
Prefect. A shard reports its cumulative count for its current attempt, so a retried shard
restarts its own count instead of counting twice.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


def format_duration(seconds: float | None) -> str:
    """'45s', '3m05s', '2h07m'; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def format_rate(rate: float | None) -> str:
    """Images per second with sensible digits; '?' when unknown."""
    if rate is None:
        return "? images/s"
    return f"{rate:.3g} images/s" if rate < 100 else f"{rate:.0f} images/s"


@dataclass(frozen=True)
class ProgressSnapshot:
    """Progress at one moment: ``done`` counts earlier runs' committed images too."""

    done: int
    total: int
    processed: int  # images this run has restored (the rate's numerator)
    elapsed: float
    rate: float | None
    eta: float | None

    @property
    def percent(self) -> float:
        """Done as a percentage of total (100 for an empty run)."""
        return 100.0 * self.done / self.total if self.total else 100.0

    def describe(self) -> str:
        """'120/512 images (23.4%), 3.4 images/s, ETA 1m55s'."""
        eta = "done" if self.done >= self.total else f"ETA {format_duration(self.eta)}"
        return (f"{self.done}/{self.total} images ({self.percent:.1f}%), "
                f"{format_rate(self.rate)}, {eta}")


class RunProgress:
    """Thread-safe image counts of a run; the rate is over this run's restored images."""

    def __init__(self, total: int, done_before: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        """Start counting now; ``done_before`` images were committed by earlier runs."""
        self.total, self.done_before = total, done_before
        self._clock = clock
        self._started = clock()
        self._per_shard: dict[str, int] = {}
        self._lock = threading.Lock()
        self.version = 0  # bumps on every report, so a reader can tell nothing changed

    def restart_clock(self) -> None:
        """Measure the rate from now (e.g. once the actors have loaded the prior)."""
        with self._lock:
            self._started = self._clock()

    def report(self, shard_id: str, processed: int) -> None:
        """Shard ``shard_id`` has restored ``processed`` images so far in its current attempt."""
        with self._lock:
            self._per_shard[shard_id] = processed
            self.version += 1

    def snapshot(self) -> ProgressSnapshot:
        """Counts, rate (images/s since start) and ETA (remaining / rate) right now."""
        with self._lock:
            processed = sum(self._per_shard.values())
        elapsed = max(self._clock() - self._started, 0.0)
        done = min(self.total, self.done_before + processed)
        rate = processed / elapsed if processed and elapsed > 0 else None
        eta = (self.total - done) / rate if rate else None
        return ProgressSnapshot(done, self.total, processed, elapsed, rate, eta)
