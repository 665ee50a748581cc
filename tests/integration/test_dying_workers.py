"""Dying workers on a real local Ray: an actor process killed in the middle of a batch, an actor
removed for good, and a device that runs out of memory on a batch. No image is lost or doubled.

The workers here are RestoreWorker subclasses that leave a marker file (pid, first id of the
batch) when a call starts and hold the batch for a moment, so the test can kill the process that
is working on a known batch.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.spec import JobSpec

from .conftest import gray_images, png, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def marking_worker(marker_dir: str, hold_s: float, fits_at_most: int | None = None) -> type:
    """A RestoreWorker class that marks each call ``<pid>-<first id>-<n images>`` and holds it
    ``hold_s`` seconds; with ``fits_at_most``, groups above that many images run out of memory."""
    import torch

    from tasks.worker import RestoreWorker

    class MarkingWorker(RestoreWorker):
        def __call__(self, batch):
            Path(marker_dir, f"{os.getpid()}-{batch['id'][0]}-{len(batch['id'])}").touch()
            time.sleep(hold_s)
            return super().__call__(batch)

        def _restore_group(self, rows, batch, params, out):
            if fits_at_most is not None and len(rows) > fits_at_most:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            super()._restore_group(rows, batch, params, out)

    return MarkingWorker


def _markers(folder: Path) -> list[tuple[int, str, int]]:
    out = []
    for path in folder.iterdir():
        pid, rest = path.name.split("-", 1)
        first, n = rest.rsplit("-", 1)
        out.append((int(pid), first, int(n)))
    return out


def _job(tmp_path, tiny_prior, n: int, **kwargs):
    from tasks.planning import make_plan
    from tasks.validate import validate_job

    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(gray_images(n, seed=11)):
        (src / f"img{i:02d}.png").write_bytes(png(img))
    spec = JobSpec(input_uri=str(src), output_uri=str(tmp_path / "out"), task="box",
                   prior=tiny_prior, steps=2, shard_size=n, **kwargs)
    info = validate_job(spec)
    (shard,) = make_plan(spec).shards
    markers = tmp_path / "markers"
    markers.mkdir()
    return spec, info, shard, markers


def _committed_once(tmp_path, n: int) -> None:
    table = pq.read_table(tmp_path / "out" / "manifests")
    assert sorted(table["id"].to_pylist()) == [f"img{i:02d}" for i in range(n)]  # once each
    assert set(table["status"].to_pylist()) == {"ok"}
    assert sorted(p.stem for p in (tmp_path / "out" / "images").glob("*.png")) == \
        [f"img{i:02d}" for i in range(n)]


def test_an_actor_killed_mid_batch_is_restarted_and_the_shard_commits_once(
        ray_local, tmp_path, tiny_prior):
    from tasks.pool import ActorPool
    from tasks.shard import run_shard

    spec, info, shard, markers = _job(tmp_path, tiny_prior, 12, batch_size=2, num_actors=1,
                                      max_inflight_batches=2)
    pool = ActorPool(spec, info, worker_cls=marking_worker(str(markers), hold_s=1.5))
    killed: dict[str, int] = {}

    def kill_the_third_batch() -> None:
        pid = wait_for(lambda: next((p for p, first, _ in _markers(markers) if first == "img04"),
                                    None), timeout=120, what="the batch starting at img04")
        os.kill(pid, signal.SIGKILL)  # while that batch is held, before it returns
        killed["pid"] = pid

    killer = threading.Thread(target=kill_the_third_batch, daemon=True)
    try:
        pool.wait_ready()
        killer.start()
        result = run_shard(shard, spec, info, pool)
    finally:
        pool.shutdown()
    killer.join(timeout=5)

    assert killed, "the actor was never killed"
    assert result["processed"] == 12 and result["ok"] == 12 and result["error"] == 0
    starts = [(pid, first) for pid, first, _ in _markers(markers)]
    # the killed batch ran again, in a fresh process (Ray restarted the actor, replayed the call)
    assert (killed["pid"], "img04") in starts
    assert any(first == "img04" and pid != killed["pid"] for pid, first in starts)
    _committed_once(tmp_path, 12)


def test_an_actor_removed_for_good_mid_batch_is_replaced_and_its_batch_resubmitted(
        ray_local, tmp_path, tiny_prior):
    import ray

    from tasks.pool import ActorPool
    from tasks.shard import run_shard

    spec, info, shard, markers = _job(tmp_path, tiny_prior, 8, batch_size=2, num_actors=1,
                                      max_inflight_batches=1)
    pool = ActorPool(spec, info, worker_cls=marking_worker(str(markers), hold_s=1.5))
    first_actor = pool.actors[0]

    def remove_the_actor() -> None:
        wait_for(lambda: any(first == "img02" for _, first, _ in _markers(markers)),
                 timeout=120, what="the batch starting at img02")
        ray.kill(first_actor, no_restart=True)

    killer = threading.Thread(target=remove_the_actor, daemon=True)
    try:
        pool.wait_ready()
        killer.start()
        result = run_shard(shard, spec, info, pool)
        replaced = pool.actors[0]._actor_id != first_actor._actor_id
    finally:
        pool.shutdown()
    killer.join(timeout=5)

    assert replaced
    assert result["resubmitted_batches"] >= 1
    assert result["processed"] == 8 and result["ok"] == 8
    starts = [(pid, first) for pid, first, _ in _markers(markers)]
    assert len({pid for pid, first in starts if first == "img02"}) == 2  # two processes ran it
    _committed_once(tmp_path, 8)


def test_a_batch_that_runs_out_of_memory_is_halved_on_the_actor(ray_local, tmp_path, tiny_prior):
    from tasks.pool import ActorPool
    from tasks.shard import run_shard

    spec, info, shard, markers = _job(tmp_path, tiny_prior, 8, batch_size=4, num_actors=1)
    pool = ActorPool(spec, info, worker_cls=marking_worker(str(markers), 0.0, fits_at_most=2))
    try:
        pool.wait_ready()
        result = run_shard(shard, spec, info, pool)
    finally:
        pool.shutdown()

    assert result["processed"] == 8 and result["ok"] == 8 and result["error"] == 0
    assert sorted(n for _, _, n in _markers(markers)) == [4, 4]  # two calls, each halved inside
    _committed_once(tmp_path, 8)


def test_an_image_that_never_fits_fails_the_shard_with_a_clear_error_and_commits_nothing(
        ray_local, tmp_path, tiny_prior):
    from tasks.pool import ActorPool
    from tasks.shard import run_shard

    spec, info, shard, markers = _job(tmp_path, tiny_prior, 4, batch_size=4, num_actors=1)
    pool = ActorPool(spec, info, worker_cls=marking_worker(str(markers), 0.0, fits_at_most=0))
    try:
        pool.wait_ready()
        with pytest.raises(Exception, match=r"out of memory restoring one image \(img00\)"):
            run_shard(shard, spec, info, pool)
    finally:
        pool.shutdown()
    assert not (tmp_path / "out" / "manifests").exists()
