"""The `restore-dataset` Prefect flow: plan, skip committed shards, restore the rest, summarise."""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from
# real annotations when a deployment loads this module by entrypoint.
import base64
import io
import json
import logging
import time
from typing import Any

import numpy as np
import pyarrow.compute as pc
from PIL import Image
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.manifest import (
    SCHEMA_VERSION,
    committed_manifest,
    manifest_config_hash,
    manifest_dir,
    manifest_uri,
    read_manifest,
)
from tasks.planning import Plan, ShardPlan, load_or_make_plan
from tasks.pool import ActorPool, actor_device
from tasks.shard import restore_shard
from tasks.spec import JobSpec, JobSpecError, RunInfo
from tasks.storage import join, open_fs, write_atomic
from tasks.summary import SUMMARY_COLUMNS, SummaryAccumulator, markdown_summary
from tasks.validate import validate_job

from .ray_runtime import ray_connection

SUMMARY_NAME = "summary.json"
GRID_NAME = "preview.png"


def summary_uri(output_uri: str) -> str:
    """Where the run summary JSON lives (beside the manifests folder)."""
    return join(output_uri, SUMMARY_NAME)


def _logger() -> Any:
    """The Prefect run logger inside a flow run, else a plain one (unit tests, scripts)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("restora")


def shards_to_run(plan: Plan, spec: JobSpec, info: RunInfo, *, retry_failed: bool,
                  overwrite: bool) -> tuple[list[tuple[ShardPlan, list[str] | None]], int]:
    """([(shard, redo_sources or None for all)], skipped count) from the committed manifests."""
    work, skipped = [], 0
    for shard in plan.shards:
        uri = manifest_uri(spec.output_uri, shard.shard_id)
        committed = None if overwrite else committed_manifest(uri, spec.storage_options)
        if committed is not None and committed.schema_version != SCHEMA_VERSION:
            if committed.schema_version > SCHEMA_VERSION:
                raise JobSpecError(f"output_uri: manifest '{uri}' has schema version "
                                   f"{committed.schema_version}, newer than this Restora's "
                                   f"{SCHEMA_VERSION}; use a newer Restora or --overwrite")
            _logger().warning(
                "shard %s: its manifest has schema version %d (current %d); re-running the "
                "whole shard", shard.shard_id, committed.schema_version, SCHEMA_VERSION)
            work.append((shard, None))
            continue
        if committed is None or committed.config_hash != info.config_hash:
            work.append((shard, None))
            continue
        if retry_failed:
            old = read_manifest(uri, spec.storage_options, columns=["status", "source_uri"])
            redo = [s for s, st in zip(old["source_uri"].to_pylist(), old["status"].to_pylist())
                    if st == "error"]
            if redo:
                work.append((shard, redo))
                continue
        skipped += 1
    return work, skipped


def _run_shards(work: list[tuple[ShardPlan, list[str] | None]], spec: JobSpec, info: RunInfo,
                pool: ActorPool, progress_id: Any, total: int, done_before: int) -> tuple[list, list]:
    """Submit shard tasks with at most ``max_concurrent_shards`` in flight; track progress."""
    logger = get_run_logger()
    results, failures, pending = [], [], []
    queue = list(work)
    finished = done_before
    while queue or pending:
        while queue and len(pending) < spec.max_concurrent_shards:
            shard, redo = queue.pop(0)
            future = restore_shard.submit(shard.shard_id, shard, spec, info, pool, redo)
            pending.append((shard, future))
        time.sleep(0.1)
        still = []
        for shard, future in pending:
            if not future.state.is_final():
                still.append((shard, future))
                continue
            finished += 1
            try:
                result = future.result()
                results.append(result)
                logger.info("shard %s committed: %d ok, %d error", shard.shard_id,
                            result["ok"], result["error"])
            except Exception as exc:  # noqa: BLE001 - one shard's failure must not stop the others
                failures.append({"shard_id": shard.shard_id, "error": f"{type(exc).__name__}: {exc}"})
                logger.error("shard %s failed: %s", shard.shard_id, exc)
            if progress_id is not None:
                update_progress_artifact(progress_id, progress=100.0 * finished / max(total, 1))
        pending = still
    return results, failures


def _grid_png(spec: JobSpec, rows: list[dict[str, Any]]) -> bytes | None:
    """Before/after grid: per sample, the input (left) beside the restored image (right)."""
    tiles = []
    for row in rows:
        pair = []
        for key in ("before", "after"):
            fs, path = open_fs(row[key], spec.storage_options)
            img = Image.open(io.BytesIO(fs.cat_file(path))).convert("RGB")
            pair.append(np.asarray(img.resize((64, 64), Image.Resampling.NEAREST)))
        tiles.append(np.concatenate([pair[0], np.full((64, 4, 3), 255, np.uint8), pair[1]], axis=1))
    if not tiles:
        return None
    sep = np.full((4, tiles[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for t in tiles for x in (t, sep)][:-1], axis=0)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


def build_summary(plan: Plan, spec: JobSpec, info: RunInfo) -> tuple[dict[str, Any], list[dict]]:
    """Fold every committed manifest into the run summary; also pick a few grid samples."""
    acc = SummaryAccumulator()
    samples: list[dict[str, Any]] = []
    committed = 0
    for shard in plan.shards:
        uri = manifest_uri(spec.output_uri, shard.shard_id)
        if manifest_config_hash(uri, spec.storage_options) is None:
            continue
        committed += 1
        table = read_manifest(uri, spec.storage_options,
                              columns=[*SUMMARY_COLUMNS, "source_uri", "output_uri"])
        acc.add(table)
        if len(samples) < 4 and shard.kind == "images":
            for row in table.filter(pc.equal(table["status"], "ok")).slice(0, 4 - len(samples)).to_pylist():
                samples.append({"before": row["source_uri"], "after": row["output_uri"]})
    summary = acc.result()
    summary["shards"] = {"total": len(plan.shards), "committed": committed}
    return summary, samples


@flow(name="restore-dataset", task_runner=ThreadPoolTaskRunner(max_workers=16),
      flow_run_name="restore {spec.task} -> {spec.output_uri}")
def restore_dataset(spec: JobSpec, retry_failed: bool = False, overwrite: bool = False,
                    ray_address: str | None = None) -> dict[str, Any]:
    """Restore every image of ``spec.input_uri`` into ``spec.output_uri``; return the run summary."""
    # Ray first: the cluster decides the actors' device, which is part of the config hash that
    # tells committed shards from shards to run.
    with ray_connection(ray_address):
        return _restore_dataset(spec, retry_failed, overwrite, ray_address)


def _restore_dataset(spec: JobSpec, retry_failed: bool, overwrite: bool,
                     ray_address: str | None) -> dict[str, Any]:
    logger = get_run_logger()
    started = time.time()
    info = validate_job(spec, device=actor_device(spec))
    plan, reused = load_or_make_plan(spec, replan=overwrite)
    if plan.input_format == "images" and spec.task == "inpaint" and not spec.masks_uri:
        raise JobSpecError("masks_uri: task 'inpaint' on an image folder needs masks_uri")
    work, skipped = shards_to_run(plan, spec, info, retry_failed=retry_failed, overwrite=overwrite)
    logger.info("plan %s: %d shards, %d images; %d to run, %d already committed (config %s)",
                "reused" if reused else "made", len(plan.shards), plan.total_items, len(work),
                skipped, info.config_hash)
    results: list[dict] = []
    failures: list[dict] = []
    progress_id = create_progress_artifact(
        progress=100.0 * skipped / max(len(plan.shards), 1), key="restora-progress",
        description=f"shards committed of {len(plan.shards)}")
    if work:
        with ray_connection(ray_address):
            pool = ActorPool(spec, info)
            try:
                pool.wait_ready()
                results, failures = _run_shards(work, spec, info, pool, progress_id,
                                                len(plan.shards), skipped)
            finally:
                pool.shutdown()
    wall = time.time() - started
    summary, samples = build_summary(plan, spec, info)
    processed = sum(r["processed"] for r in results)
    summary.update({
        "flow_run_id": str(flow_run.get_id() or ""), "config_hash": info.config_hash,
        "model_id": info.model_id, "output_uri": spec.output_uri,
        "images_dir": join(spec.output_uri, "images"), "manifests_dir": manifest_dir(spec.output_uri),
        "summary_uri": summary_uri(spec.output_uri), "seconds": round(wall, 3),
        "processed_this_run": processed,
        "throughput_images_per_s": round(processed / wall, 3) if processed else 0.0,
        "retry_failed": retry_failed, "overwrite": overwrite, "failed_shards": failures,
        "shard_results": results, "spec": spec.model_dump(mode="json", exclude={"storage_options"}),
    })
    summary["shards"].update({"run": len(work), "skipped": skipped, "failed": len(failures)})
    fs, path = open_fs(summary_uri(spec.output_uri), spec.storage_options)
    write_atomic(fs, path, json.dumps(summary, indent=1, default=str).encode())
    create_markdown_artifact(markdown=markdown_summary(summary), key="restora-summary",
                             description="Restora run summary")
    logger.info("summary artifact restora-summary: %d ok, %d error of %d images; %s",
                summary["images"]["ok"], summary["images"]["error"], summary["images"]["total"],
                summary_uri(spec.output_uri))
    grid = _grid_png(spec, samples) if samples else None
    if grid:
        gfs, gpath = open_fs(join(spec.output_uri, GRID_NAME), spec.storage_options)
        write_atomic(gfs, gpath, grid)
        encoded = base64.b64encode(grid).decode()
        create_markdown_artifact(
            markdown=f"## Before / after\n\n![before and after](data:image/png;base64,{encoded})\n",
            key="restora-samples", description="input (left) and restored (right)")
    if failures:
        raise RuntimeError(f"{len(failures)} shard(s) failed ({', '.join(f['shard_id'] for f in failures)});"
                           " committed shards are kept, rerun the same job to resume")
    return summary
