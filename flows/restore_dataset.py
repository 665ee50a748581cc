"""The `restore-dataset` Prefect flow: plan, skip committed shards, restore the rest, summarise."""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from
# real annotations when a deployment loads this module by entrypoint.
import base64
import heapq
import io
import itertools
import json
import posixpath
import time
from typing import Any

import numpy as np
import pyarrow.compute as pc
from PIL import Image
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.manifest import manifest_config_hash, manifest_dir, manifest_uri, read_manifest
from tasks.planning import Plan, ShardPlan, load_or_make_plan
from tasks.pool import ActorPool
from tasks.shard import restore_shard
from tasks.spec import JobSpec, JobSpecError, RunInfo
from tasks.storage import join, open_fs, write_atomic
from tasks.summary import SUMMARY_COLUMNS, SummaryAccumulator, markdown_summary
from tasks.validate import validate_job

from .ray_runtime import ray_connection

SUMMARY_NAME = "summary.json"
GRID_NAME = "preview.png"
UNCERTAIN_GRID_NAME = "most_uncertain.png"
MOST_UNCERTAIN = 8  # rows in the most-uncertain table and preview


def summary_uri(output_uri: str) -> str:
    """Where the run summary JSON lives (beside the manifests folder)."""
    return join(output_uri, SUMMARY_NAME)


def shards_to_run(plan: Plan, spec: JobSpec, info: RunInfo, *, retry_failed: bool,
                  overwrite: bool) -> tuple[list[tuple[ShardPlan, list[str] | None]], int]:
    """([(shard, redo_sources or None for all)], skipped count) from the committed manifests."""
    work, skipped = [], 0
    for shard in plan.shards:
        uri = manifest_uri(spec.output_uri, shard.shard_id)
        committed = None if overwrite else manifest_config_hash(uri, spec.storage_options)
        if committed != info.config_hash:
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


def _pairs_png(pairs: list[tuple[np.ndarray, np.ndarray]]) -> bytes | None:
    """Rows of (left, right) 64x64 RGB tiles as one PNG, white gaps between them."""
    tiles = [np.concatenate([a, np.full((64, 4, 3), 255, np.uint8), b], axis=1) for a, b in pairs]
    if not tiles:
        return None
    sep = np.full((4, tiles[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([x for t in tiles for x in (t, sep)][:-1], axis=0)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


def _grid_png(spec: JobSpec, rows: list[dict[str, Any]]) -> bytes | None:
    """Before/after grid: per sample, the input (left) beside the restored image (right)."""
    return _pairs_png([(_png_tile(spec, row["before"]), _png_tile(spec, row["after"]))
                       for row in rows])


def _png_tile(spec: JobSpec, uri: str, scale_16bit: bool = False) -> np.ndarray:
    fs, path = open_fs(uri, spec.storage_options)
    img = Image.open(io.BytesIO(fs.cat_file(path)))
    if scale_16bit:  # an uncertainty map: stretch to its own maximum so it is visible
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((255 * arr / max(arr.max(), 1.0)).astype(np.uint8))
    return np.asarray(img.convert("RGB").resize((64, 64), Image.Resampling.NEAREST))


def _uncertain_grid_png(spec: JobSpec, rows: list[dict[str, Any]]) -> bytes | None:
    """Per row, the restored image (left) beside its uncertainty map (right, own scale)."""
    pairs = []
    for row in rows:
        if row.get("output_uri"):
            rel = posixpath.relpath(row["output_uri"], join(spec.output_uri, "images"))
            pairs.append((_png_tile(spec, row["output_uri"]),
                          _png_tile(spec, join(spec.output_uri, "uncertainty", rel),
                                    scale_16bit=True)))
    return _pairs_png(pairs)


def _report_most_uncertain(spec: JobSpec, rows: list[dict[str, Any]]) -> None:
    """Table artifact of the most uncertain rows and, with saved maps, their preview."""
    create_table_artifact(table=rows, key="restora-most-uncertain",
                          description=f"the {len(rows)} rows with the highest uncertainty_mean")
    grid = _uncertain_grid_png(spec, rows) if spec.save_uncertainty else None
    if grid:
        fs, path = open_fs(join(spec.output_uri, UNCERTAIN_GRID_NAME), spec.storage_options)
        write_atomic(fs, path, grid)
        encoded = base64.b64encode(grid).decode()
        create_markdown_artifact(
            markdown="## Most uncertain restorations\n\n"
                     f"![restored and uncertainty](data:image/png;base64,{encoded})\n",
            key="restora-uncertain-preview",
            description="restored (left) and per-pixel std (right, scaled to its maximum)")


def build_summary(plan: Plan, spec: JobSpec, info: RunInfo) -> tuple[dict[str, Any], list[dict]]:
    """Fold every committed manifest into the run summary; also pick a few grid samples and,
    with several samples per image, the most uncertain rows (``summary["most_uncertain"]``)."""
    acc = SummaryAccumulator()
    samples: list[dict[str, Any]] = []
    uncertain: list[tuple[float, int, dict[str, Any]]] = []  # a bounded min-heap
    order = itertools.count()  # breaks ties without comparing rows
    committed = 0
    for shard in plan.shards:
        uri = manifest_uri(spec.output_uri, shard.shard_id)
        if manifest_config_hash(uri, spec.storage_options) is None:
            continue
        committed += 1
        table = read_manifest(uri, spec.storage_options)
        # A manifest committed before a column existed lacks it (the hash of one sample per
        # image did not change when the uncertainty columns came).
        table = table.select([c for c in (*SUMMARY_COLUMNS, "source_uri", "output_uri",
                                          "uncertainty_p95") if c in table.column_names])
        acc.add(table)
        if spec.samples > 1:
            for row in table.select(["id", "output_uri", "uncertainty_mean", "uncertainty_p95",
                                     "flag"]).to_pylist():
                if row["uncertainty_mean"] is not None:
                    heapq.heappush(uncertain, (row["uncertainty_mean"], next(order), row))
                    if len(uncertain) > MOST_UNCERTAIN:
                        heapq.heappop(uncertain)
        if len(samples) < 4 and shard.kind == "images":
            for row in table.filter(pc.equal(table["status"], "ok")).slice(0, 4 - len(samples)).to_pylist():
                samples.append({"before": row["source_uri"], "after": row["output_uri"]})
    summary = acc.result()
    summary["shards"] = {"total": len(plan.shards), "committed": committed}
    if spec.samples > 1:
        summary["most_uncertain"] = [row for _, _, row in sorted(uncertain, reverse=True)]
    return summary, samples


@flow(name="restore-dataset", task_runner=ThreadPoolTaskRunner(max_workers=16),
      flow_run_name="restore {spec.task} -> {spec.output_uri}")
def restore_dataset(spec: JobSpec, retry_failed: bool = False, overwrite: bool = False,
                    ray_address: str | None = None) -> dict[str, Any]:
    """Restore every image of ``spec.input_uri`` into ``spec.output_uri``; return the run summary."""
    logger = get_run_logger()
    started = time.time()
    info = validate_job(spec)
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
    if summary.get("most_uncertain"):
        _report_most_uncertain(spec, summary["most_uncertain"])
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
