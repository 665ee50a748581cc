"""The soak harness on a small run: the real CLI, every image committed once, RSS sampled."""

from __future__ import annotations

import pytest

from benchmarks.soak import slopes

pytestmark = [pytest.mark.integration]


@pytest.mark.timeout(600)
def test_a_small_soak_commits_every_image_once_and_samples_the_tree():
    import shutil
    import tempfile
    from pathlib import Path

    from benchmarks.soak import run_soak

    # Short: Ray's session sockets live under it (AF_UNIX paths stop at 107 bytes).
    work = Path(tempfile.mkdtemp(prefix="rsk", dir="/tmp"))
    try:
        res = run_soak(work, 60, interval=0.5, batch=16, shard=20, timeout_s=540)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    assert res["checks"] == {"images": 60, "ok": 60, "manifest_rows": 60, "unique_ids": 60,
                             "lost": 0, "duplicated": 0, "files_written": 60, "summary_ok": 60,
                             "shards": 3}
    series = res["series"]
    assert len(series) >= 3
    assert all(s["total_mib"] >= s["flow_mib"] > 0 for s in series)
    assert max(s["actor_mib"] for s in series) > 0  # the actor process was seen and measured
    done = [s["images_done"] for s in series]
    assert done == sorted(done) and done[-1] == 60


def test_slopes_are_fitted_per_half_after_the_warm_up():
    # 1 MiB per image before the warm-up ends, then flat in the first half, 2 MiB/1000 after
    series = []
    for done in range(0, 1001, 10):
        base = min(done, 100) * 1.0
        extra = 0.002 * max(0, done - 550)
        series.append({"images_done": done, **{f"{k}_mib": base + extra
                                               for k in ("total", "flow", "actor", "other")}})
    out = slopes(series, 1000)
    assert out["total_mib_per_1000_first_half"] == pytest.approx(0.0, abs=1e-6)
    assert out["total_mib_per_1000_second_half"] == pytest.approx(2.0, rel=1e-3)
