"""The output lease: one writer per output prefix, on local disk and on moto's S3 server."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tasks.lease import LeaseHeldError, OutputLease, lease_dir
from tasks.storage import open_fs, write_atomic

from .retry import call_with_retry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    """(output URI, storage options) on local disk or on moto's S3 server."""
    if request.param == "local":
        return str(tmp_path / "out"), None
    import uuid

    import s3fs

    endpoint = request.getfixturevalue("s3_endpoint")
    options = {"endpoint_url": endpoint}
    bucket = f"lease-{uuid.uuid4().hex[:12]}"
    call_with_retry(lambda: s3fs.S3FileSystem(**options).mkdir(bucket),
                    what=f"create bucket {bucket} on moto")
    return f"s3://{bucket}/out", options


def test_a_second_run_is_refused_naming_the_first_then_takes_over_after_release(output):
    uri, options = output
    first = OutputLease(uri, options, run_id="run-a")
    first.acquire()
    second = OutputLease(uri, options, run_id="run-b")
    with pytest.raises(LeaseHeldError) as err:
        second.acquire()
    message = str(err.value)
    assert "run run-a" in message and "pid" in message and uri in message
    first.release()
    second.acquire()
    assert second.generation == 2
    with pytest.raises(LeaseHeldError, match="run run-b"):
        OutputLease(uri, options, run_id="run-a").acquire()  # and the other way round
    second.release()


def test_a_crashed_runs_expired_lease_is_superseded_not_deleted(output):
    uri, options = output
    fs, folder = open_fs(lease_dir(uri), options)
    stale = {"run_id": "crashed", "host": "h", "pid": 1, "started": 0.0, "heartbeat": 0.0,
             "expires": time.time() - 1, "released": False}
    write_atomic(fs, f"{folder}/00000001.json", json.dumps(stale).encode())
    lease = OutputLease(uri, options, run_id="fresh")
    lease.acquire()
    assert lease.generation == 2
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{folder}/00000001.json"))["run_id"] == "crashed"
    lease.release()


def test_racing_runs_get_exactly_one_lease(output):
    uri, options = output
    leases = [OutputLease(uri, options, run_id=f"r{i}") for i in range(6)]
    won: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(len(leases))

    def take(lease: OutputLease) -> None:
        barrier.wait()
        try:
            lease.acquire()
            won.append(lease.run_id)
        except LeaseHeldError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1 and len(refused) == 5
    assert all(f"run {won[0]}" in msg for msg in refused)
    for lease in leases:
        lease.release()


def test_a_holder_that_was_superseded_knows_it_lost_the_output(output):
    uri, options = output
    slow = OutputLease(uri, options, run_id="slow", ttl_s=0.5)
    slow.acquire()
    slow._stop.set()  # its heartbeat stalls (a paused process)
    time.sleep(0.7)
    other = OutputLease(uri, options, run_id="other")
    other.acquire()  # slow's lease expired: the other run takes over
    assert not slow.check() and slow.lost.is_set()
    slow.release()  # does not mark the other run's lease released
    with pytest.raises(LeaseHeldError, match="run other"):
        OutputLease(uri, options, run_id="third").acquire()
    other.release()


def test_wait_lease_waits_for_the_holder_to_finish(output):
    uri, options = output
    first = OutputLease(uri, options, run_id="first")
    first.acquire()
    threading.Timer(1.0, first.release).start()
    second = OutputLease(uri, options, run_id="second")
    second.acquire(wait_s=30)
    assert second.generation == 2
    second.release()


def test_a_lease_of_a_dead_process_on_this_host_is_free_at_once(output):
    import socket

    uri, options = output
    # pid_max is at most 2**22 on Linux, so no process has this pid.
    fs, folder = open_fs(lease_dir(uri), options)
    gone = {"run_id": "killed", "host": socket.gethostname(), "pid": 2**22 + 12345,
            "started": time.time(), "heartbeat": time.time(), "expires": time.time() + 600,
            "released": False}
    write_atomic(fs, f"{folder}/00000001.json", json.dumps(gone).encode())
    lease = OutputLease(uri, options, run_id="next")
    lease.acquire()
    assert lease.generation == 2
    lease.release()


def test_a_taken_over_run_writes_no_further_image_or_manifest(output, ray_local, tmp_path,
                                                             tiny_prior):
    """The check sits in the write and commit tasks: a shard already in flight stops there."""
    from dataclasses import replace

    from tasks.lease import LeaseLostError
    from tasks.planning import make_plan
    from tasks.pool import ActorPool
    from tasks.shard import run_shard
    from tasks.spec import JobSpec
    from tasks.validate import validate_job

    from .conftest import image_folder

    uri, options = output
    spec = JobSpec(input_uri=str(image_folder(tmp_path / "in", 4)), output_uri=uri,
                   storage_options=options or {}, task="box", prior=tiny_prior, steps=2,
                   batch_size=2, num_actors=1)
    ours = OutputLease(uri, options, run_id="stalled", ttl_s=0.3)
    ours.acquire()
    ours._stop.set()  # its heartbeat stalls
    time.sleep(0.5)
    theirs = OutputLease(uri, options, run_id="newer")
    theirs.acquire()
    info = replace(validate_job(spec), lease_generation=ours.generation)
    (shard,) = make_plan(spec).shards
    pool = ActorPool(spec, info)
    try:
        with pytest.raises(Exception, match="taken over by run newer") as err:
            run_shard(shard, spec, info, pool)
    finally:
        pool.shutdown()
        theirs.release()
    assert isinstance(err.value.cause if hasattr(err.value, "cause") else err.value,
                      LeaseLostError)
    fs, root = open_fs(uri, options)
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/images") or not fs.find(f"{root}/images")
    assert not fs.exists(f"{root}/manifests/{shard.shard_id}.parquet")


def _dead_lease(uri, options, generation: int = 1) -> dict:
    """Write the unreleased lease of a run whose process on this host is gone."""
    import socket

    fs, folder = open_fs(lease_dir(uri), options)
    record = {"run_id": "killed-run", "host": socket.gethostname(), "pid": 2**22 + 4321,
              "started": 1_700_000_000.0, "heartbeat": 1_700_000_060.0,
              "expires": time.time() + 600, "released": False}
    write_atomic(fs, f"{folder}/{generation:08d}.json", json.dumps(record).encode())
    return record


def test_taking_over_a_dead_runs_lease_says_who_died_when_and_what_it_left(output):
    from tasks.lease import describe_takeover

    uri, options = output
    dead = _dead_lease(uri, options)
    lease = OutputLease(uri, options, run_id="next")
    lease.acquire()
    assert lease.took_over is not None and lease.took_over.run_id == "killed-run"
    line = describe_takeover(lease.took_over, ["shard-00003", "shard-00007"])
    assert f"run killed-run (host {dead['host']}, pid {dead['pid']})" in line
    assert "last renewed it at 2023-11-14T22:14:20Z" in line
    assert "2 shard(s) of the plan have no manifest" in line
    assert line.endswith("shard-00003, shard-00007")
    lease.release()
    after = OutputLease(uri, options, run_id="after")
    after.acquire()  # the output was released, not abandoned: nothing to report
    assert after.took_over is None
    after.release()


def test_released_and_dead_leases_are_pruned_and_numbering_continues(output):
    uri, options = output
    _dead_lease(uri, options)
    fs, folder = open_fs(lease_dir(uri), options)

    def files() -> list[str]:
        fs.invalidate_cache()
        return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False))

    first = OutputLease(uri, options, run_id="r2")
    first.acquire()
    assert files() == ["00000001.json", "00000002.json"]  # the dead run's record, while held
    first.release()
    assert first.pruned == [1] and files() == ["00000002.json"]
    for i in range(3, 6):
        lease = OutputLease(uri, options, run_id=f"r{i}")
        lease.acquire()
        assert lease.generation == i
        lease.release()
        assert files() == [f"{i:08d}.json"]
    live = OutputLease(uri, options, run_id="holder")
    live.acquire()
    with pytest.raises(LeaseHeldError, match="run holder"):
        OutputLease(uri, options, run_id="late").acquire()
    live.release()
