"""One shard, end to end: batches through read -> restore -> write on Ray, then the manifest.

``run_shard`` is plain Python over Ray (unit-testable); ``restore_shard`` is the Prefect task
around it: one task run per shard, named after it, retried only on transient storage errors. The
manifest is written last, as the shard's commit marker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import ray
from prefect import task
from prefect.cache_policies import NO_CACHE

from .batch_io import commit_shard, load_batch, write_batch_parts
from .planning import ShardPlan
from .pool import IO_TASK_CPUS, ActorPool
from .readers import get_reader
from .spec import JobSpec, RunInfo
from .storage import is_transient_storage_error

# Failures of the machinery (a node or actor lost), not of the data: resubmit the batch.
_LOST = (ray.exceptions.ActorDiedError, ray.exceptions.ActorUnavailableError,
         ray.exceptions.ObjectLostError, ray.exceptions.WorkerCrashedError,
         ray.exceptions.NodeDiedError, ray.exceptions.OwnerDiedError,
         # Ray's memory monitor killed the worker: host memory, not the data
         ray.exceptions.OutOfMemoryError)
_MAX_BATCH_ATTEMPTS = 4


def _io_options() -> dict[str, Any]:
    return {"num_cpus": IO_TASK_CPUS, "max_retries": 3}


_load = ray.remote(load_batch).options(**_io_options())
# Two returns: the manifest columns (fetched here) and the PNGs a one-file format's commit writes,
# which stay in Ray's object store and go straight to the commit task.
_write = ray.remote(write_batch_parts).options(**_io_options(), num_returns=2)
_commit = ray.remote(commit_shard).options(**_io_options())


def batch_requests(shard: ShardPlan, spec: JobSpec,
                   redo_sources: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The shard's batch requests, ``spec.batch_size`` items each (only ``redo_sources`` if given).

    The first request is flagged ``preview``: its first ok rows also save a before/after strip.
    """
    wanted = None if redo_sources is None else set(redo_sources)
    for index, request in enumerate(get_reader(shard.kind).requests(shard, spec, wanted)):
        yield {**request, "preview": index == 0, "shard_name": shard.output_name}


def _submit(request: dict[str, Any], spec: JobSpec, info: RunInfo,
            actor: Any) -> tuple[ray.ObjectRef, ray.ObjectRef]:
    """(manifest columns, PNGs for the commit) of one batch request."""
    loaded = _load.remote(request, spec, info)
    restored = actor.__call__.remote(loaded)
    return tuple(_write.remote(restored, spec, info))


def run_shard(shard: ShardPlan, spec: JobSpec, info: RunInfo, pool: ActorPool,
              redo_sources: list[str] | None = None,
              on_progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Restore one shard with at most ``spec.max_inflight_batches`` batches in flight; commit it.

    ``on_progress(shard_id, images done so far)`` is called as each batch's results arrive.
    The commit gets the batches in request order, so a shard file's rows follow the source's.
    """
    started = time.time()
    inflight: dict[ray.ObjectRef, tuple[dict, Any, int, int, ray.ObjectRef]] = {}
    done_parts: dict[int, tuple[dict[str, list], ray.ObjectRef]] = {}
    resubmitted = 0
    if on_progress is not None:
        on_progress(shard.shard_id, 0)

    def drain(until: int) -> None:
        nonlocal resubmitted
        while len(inflight) > until:
            done, _ = ray.wait(list(inflight), num_returns=1)
            request, actor, attempt, index, pngs = inflight.pop(done[0])
            try:
                done_parts[index] = (ray.get(done[0]), pngs)
                if on_progress is not None:
                    on_progress(shard.shard_id,
                                sum(len(part["id"]) for part, _ in done_parts.values()))
            except _LOST:
                if attempt + 1 >= _MAX_BATCH_ATTEMPTS:
                    raise
                resubmitted += 1
                fresh = pool.replace(actor)
                cols, pngs = _submit(request, spec, info, fresh)
                inflight[cols] = (request, fresh, attempt + 1, index, pngs)

    for index, request in enumerate(batch_requests(shard, spec, redo_sources)):
        drain(spec.max_inflight_batches - 1)
        actor = pool.pick()
        cols, pngs = _submit(request, spec, info, actor)
        inflight[cols] = (request, actor, 0, index, pngs)
    drain(0)
    ordered = [done_parts[i] for i in sorted(done_parts)]
    results = [part for part, _ in ordered]
    # Top-level ObjectRef arguments: Ray hands the commit their values, never this process.
    counts = ray.get(_commit.remote(shard.shard_id, results, redo_sources, spec, info,
                                    *(pngs for _, pngs in ordered),
                                    shard_name=shard.output_name))
    processed = sum(len(part["id"]) for part in results)
    nodes = sorted({n for part in results for n in part["worker_node"] if n})
    return {"shard_id": shard.shard_id, **counts, "processed": processed,
            "seconds": time.time() - started, "resubmitted_batches": resubmitted,
            "worker_nodes": nodes}


def retry_on_transient_storage_error(task_obj: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry a shard only when it failed on a transient storage error."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as err:  # noqa: BLE001 - the state carried the exception
            exc = err
    return isinstance(exc, BaseException) and is_transient_storage_error(exc)


@task(name="restore-shard", task_run_name="restore {shard_id}", retries=3,
      retry_delay_seconds=[2, 10, 30], retry_condition_fn=retry_on_transient_storage_error,
      cache_policy=NO_CACHE, persist_result=False)
def restore_shard(shard_id: str, shard: ShardPlan, spec: JobSpec, info: RunInfo, pool: ActorPool,
                  redo_sources: list[str] | None = None,
                  on_progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Prefect task: restore shard ``shard_id`` and commit its manifest; returns its counts."""
    return run_shard(shard, spec, info, pool, redo_sources, on_progress)
