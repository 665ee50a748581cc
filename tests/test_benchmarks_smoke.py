"""The benchmark runner works end to end in its quick form and writes readable, complete tables.

Timings are never asserted (shared, noisy machines); only that the outputs exist, have the
documented columns, and that the efficiency is a plausible ratio.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from benchmarks import run_all


def test_quick_efficiency_and_batching_write_parquet_and_markdown(tmp_path):
    rc = run_all.main(["--quick", "--sections", "1,2", "--models", "digits32",
                       "--out", str(tmp_path)])
    assert rc == 0, (tmp_path / "run_status.md").read_text()

    eff = pq.read_table(tmp_path / "efficiency.parquet").to_pylist()
    assert eff and {"model", "batch", "nfe", "forward_ms", "sampler_s", "efficiency",
                    "goal_met"} <= set(eff[0])
    for row in eff:
        assert 0 < row["efficiency"] <= 1.5
        assert row["nfe"] == row["steps_T"] + 2 * (row["steps_T"] - 1)

    batching = pq.read_table(tmp_path / "batching.parquet").to_pylist()
    assert [r["batch"] for r in batching] == [1, 4]
    assert batching[0]["ratio_to_batch1"] == 1.0
    assert all(r["images_per_s_at_190nfe"] > 0 for r in batching)

    for stem in ("efficiency", "batching"):
        md = (tmp_path / f"{stem}.md").read_text()
        assert "python -m benchmarks.run_all --quick --sections 1,2" in md  # the exact command
        assert "torch:" in md and "date:" in md and "machine:" in md
        assert "|---|" in md


def test_quick_uncertainty_calibration_scores_every_method_per_task(tmp_path):
    from benchmarks import uncertainty

    assert uncertainty.main(["--quick", "--sections", "calibration", "--out", str(tmp_path)]) == 0
    rows = pq.read_table(tmp_path / "uncertainty_calibration.parquet").to_pylist()
    for task in ("box", "random", "superres", "denoise"):
        methods = {r["method"] for r in rows if r["task"] == task}
        assert "exact posterior draws" in methods and len(methods) >= 4
    floor = [r for r in rows if r["method"] == "exact posterior draws"]
    assert all(abs(r["std_ratio"] - 1) < 0.1 for r in floor)
    md = (tmp_path / "uncertainty.md").read_text()
    assert "python -m benchmarks.uncertainty --quick --sections calibration" in md
    assert "Closest to the exact posterior per task" in md


def test_quick_uncertainty_eval_random_resumes_per_set(tmp_path, monkeypatch):
    from benchmarks import uncertainty, uncertainty_eval

    monkeypatch.setattr(uncertainty_eval, "PARTIAL_DIR", tmp_path / "partial")
    out = tmp_path / "out"
    base = ["--quick", "--sections", "eval", "--task", "random", "--images", "4", "--k-max", "2",
            "--out", str(out)]
    # A part fills one set's checkpoint and writes no table.
    assert uncertainty.main([*base, "--sets", "digits32"]) == 0
    assert len(list((tmp_path / "partial").glob("uncertainty_eval_random_4_digits32_*.pt"))) == 1
    assert not (out / "uncertainty_eval_random_4.md").exists()

    assert uncertainty.main(base) == 0
    assert len(list((tmp_path / "partial").glob("*.pt"))) == 2  # digits32 reused, photo32 new
    rows = pq.read_table(out / "uncertainty_eval_random_4.parquet").to_pylist()
    assert {r["task"] for r in rows} == {"random"}
    assert {(r["dataset"], r["estimate"]) for r in rows} == {
        (d, e) for d in ("digits32", "photo32") for e in ("biharmonic", "one sample", "mean of 2")}
    one = {r["dataset"]: r for r in rows if r["estimate"] == "one sample"}
    assert all(r["gain_vs_one_sample_db"] == 0 and r["nfe_per_image"] > 0 for r in one.values())
    per_image = pq.read_table(out / "uncertainty_eval_random_4_per_image.parquet").to_pylist()
    assert len(per_image) == 8 and all(r["uncertainty_mean_k2"] > 0 for r in per_image)
    assert (out / "uncertainty_eval_random_4.png").stat().st_size > 0
    md = (out / "uncertainty.md").read_text()
    assert "Several samples on the shipped priors (random, K up to 2)" in md
    assert "Random inpainting (each pixel missing with probability 0.7)" in md

    with pytest.raises(SystemExit, match="--task"):
        uncertainty.main([*base[:-2], "--task", "superres", "--out", str(out)])

