"""Progress counts, rate and ETA, and their formatting (a fake clock: no timing in tests)."""

from __future__ import annotations

import pytest

from tasks.progress import RunProgress, format_duration, format_rate


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (44.6, "45s"), (59.4, "59s"), (60, "1m00s"), (185, "3m05s"), (3599, "59m59s"),
    (3600, "1h00m"), (7620, "2h07m"), (None, "?"), (float("inf"), "?"), (float("nan"), "?"),
])
def test_durations_read_like_a_clock(seconds, text):
    assert format_duration(seconds) == text


def test_rates_keep_three_digits_and_unknown_is_a_question_mark():
    assert format_rate(3.4567) == "3.46 images/s"
    assert format_rate(0.0123) == "0.0123 images/s"
    assert format_rate(1234.5) == "1234 images/s"
    assert format_rate(None) == "? images/s"


def test_rate_and_eta_come_from_this_runs_images_and_count_earlier_runs_as_done():
    clock = _Clock()
    progress = RunProgress(total=100, done_before=20, clock=clock)
    assert progress.snapshot().describe() == "20/100 images (20.0%), ? images/s, ETA ?"
    clock.now += 10
    progress.report("shard-00000", 16)
    progress.report("shard-00001", 4)
    snap = progress.snapshot()
    assert (snap.done, snap.processed, snap.rate, snap.eta) == (40, 20, 2.0, 30.0)
    assert snap.describe() == "40/100 images (40.0%), 2 images/s, ETA 30s"


def test_a_retried_shard_restarts_its_count_instead_of_adding():
    clock = _Clock()
    progress = RunProgress(total=8, clock=clock)
    progress.report("shard-00000", 4)
    progress.report("shard-00000", 2)  # its second attempt has done 2 so far
    assert progress.snapshot().done == 2
    clock.now += 4
    progress.report("shard-00000", 8)
    snap = progress.snapshot()
    assert snap.percent == 100.0 and snap.describe() == "8/8 images (100.0%), 2 images/s, done"
