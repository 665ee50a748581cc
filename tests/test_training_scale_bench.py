"""The training-at-scale benchmark: its on-paper all-reduce model and its quick form's tables.

Timings are never asserted (shared, noisy machines).
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from benchmarks import training_scale as ts


def test_ring_allreduce_moves_two_n_minus_one_over_n_of_the_gradient():
    grad = 26e6
    # nccl-tests: busbw = algbw x 2(N-1)/N, algbw = bytes / time
    assert ts.ring_allreduce_seconds(grad, 8, 100.0) == pytest.approx(1.75 * grad / 100e9)
    assert ts.ring_allreduce_seconds(grad, 2, 100.0) == pytest.approx(grad / 100e9)


def test_paper_estimate_hides_an_allreduce_shorter_than_the_backward():
    rows = ts.paper_rows(6_472_195)
    assert [r["row"] for r in rows] == ["P1", "P2", "P3"]
    step_ms = 1e3 / ts.H100_PHOTO32_STEPS_PER_S
    for r in rows:
        assert r["allreduce_ms"] < ts.BACKWARD_SHARE * step_ms
        assert r["efficiency_full_overlap"] == pytest.approx(1.0)
        assert r["efficiency_no_overlap"] == pytest.approx(step_ms / (step_ms + r["allreduce_ms"]))
    slower_bus = [r["efficiency_no_overlap"] for r in sorted(rows, key=lambda r: -r["bus_GBps"])]
    assert slower_bus == sorted(slower_bus, reverse=True)


def test_paper_estimate_shows_what_outlasts_the_backward():
    # a gradient so large that its all-reduce outlasts the backward at every bandwidth
    for r in ts.paper_rows(10**11):
        assert r["efficiency_no_overlap"] < r["efficiency_full_overlap"] < 1.0


def test_loop_steps_leave_out_the_warmup_and_split_off_the_input_wait():
    history = [{"steps_per_s": 0.1, "input_fraction": 0.5},
               {"steps_per_s": 2.0, "input_fraction": 0.1}]
    (only,) = ts.loop_steps(history, warmup=1)
    assert only["seconds"] == pytest.approx(0.5)
    assert only["input_s"] == pytest.approx(0.05)


def test_quick_run_writes_rows_named_in_its_claims(tmp_path):
    assert ts.main(["--quick", "--sections", "single,paper", "--out", str(tmp_path)]) == 0
    rows = pq.read_table(tmp_path / "training_scale.parquet").to_pylist()
    assert [r["row"] for r in rows] == ["A1", "A2", "A3"]  # bare, loop, bare at half batch
    assert rows[1]["input_fraction"] is not None and 0 <= rows[1]["input_fraction"] < 1
    md = (tmp_path / "training_scale.md").read_text()
    assert "python -m benchmarks.training_scale --quick --sections single,paper" in md
    assert "git_commit:" in md and "load_average_at_start:" in md
    assert "(rows A2 / A1)" in md and "(rows P1-P3)" in md
    assert "photo32_train.log" in md  # the cited H100 step time
