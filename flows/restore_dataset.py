"""The `restore-dataset` Prefect flow: plan, skip committed shards, restore the rest, summarise."""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model from
# real annotations when a deployment loads this module by entrypoint.
import base64
import heapq
import io
import itertools
import json
import logging
import posixpath
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from restora_core.degradations import get_task
from tasks.cleanup import remove_previous_outputs
from tasks.damaged import DamagedManifestError, MovedManifest, check_manifest, move_aside
from tasks.lease import OutputLease, describe_takeover, lease_dir
from tasks.manifest import (
    SCHEMA_VERSION,
    manifest_dir,
    manifest_uri,
    read_manifest,
)
from tasks.planning import Plan, ShardPlan, check_first_images, load_or_make_plan
from tasks.pool import ActorPool, actor_device
from tasks.preview import PREVIEW_ROWS, TILE, preview_dir, preview_grid, tile_grid
from tasks.progress import RunProgress
from tasks.shard import restore_shard
from tasks.spec import JobSpec, JobSpecError, RunInfo
from tasks.storage import join, list_files, open_fs, write_atomic
from tasks.summary import SUMMARY_COLUMNS, SummaryAccumulator, markdown_summary
from tasks.validate import validate_job
from tasks.writers import get_writer, read_output, resolve_output_format, side_relpath

from .ray_runtime import ray_connection

SUMMARY_NAME = "summary.json"
GRID_NAME = "preview.png"
# The progress artifact follows batches at most this often; the log gets a line this often.
ARTIFACT_INTERVAL_S = 1.0
LOG_INTERVAL_S = 15.0
UNCERTAIN_GRID_NAME = "most_uncertain.png"
MOST_UNCERTAIN = 8  # rows in the most-uncertain table and preview


def summary_uri(output_uri: str) -> str:
    """Where the run summary JSON lives (beside the manifests folder)."""
    return join(output_uri, SUMMARY_NAME)


def _logger() -> Any:
    """The Prefect run logger inside a flow run, else a plain one (unit tests, scripts)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("restora")


class SummaryFold:
    """The run summary folded in one committed manifest at a time: counts, errors, metric means
    and, with several samples per image, the most uncertain rows (a bounded heap)."""

    def __init__(self, samples: int):
        """Start empty; ``samples`` is the spec's (above 1, the uncertainty columns are kept)."""
        self.samples = samples
        self.acc = SummaryAccumulator()
        self.uncertain: list[tuple[float, int, dict[str, Any]]] = []  # a bounded min-heap
        self.order = itertools.count()  # breaks ties without comparing rows
        self.shards: set[str] = set()

    def columns(self) -> list[str]:
        """The manifest columns the fold reads."""
        extra = ("output_uri", "uncertainty_mean", "uncertainty_p95") if self.samples > 1 else ()
        return [*SUMMARY_COLUMNS, *(c for c in extra if c not in SUMMARY_COLUMNS)]

    def add(self, shard_id: str, table: pa.Table) -> None:
        """Fold in one shard's committed manifest (any table with ``columns()``)."""
        self.shards.add(shard_id)
        self.acc.add(table.select(list(SUMMARY_COLUMNS)))
        if self.samples > 1:
            for row in table.select(["id", "output_uri", "uncertainty_mean", "uncertainty_p95",
                                     "flag"]).to_pylist():
                if row["uncertainty_mean"] is not None:
                    heapq.heappush(self.uncertain, (row["uncertainty_mean"], next(self.order), row))
                    if len(self.uncertain) > MOST_UNCERTAIN:
                        heapq.heappop(self.uncertain)

    def summary(self, total_shards: int) -> dict[str, Any]:
        """The run summary of what is folded in, out of ``total_shards``."""
        summary = self.acc.result()
        summary["shards"] = {"total": total_shards, "committed": len(self.shards)}
        if self.samples > 1:
            summary["most_uncertain"] = [row for _, _, row in sorted(self.uncertain, reverse=True)]
        return summary


def shards_to_run(plan: Plan, spec: JobSpec, info: RunInfo, *, retry_failed: bool, overwrite: bool,
                  fold: SummaryFold | None = None
                  ) -> tuple[list[tuple[ShardPlan, list[str] | None]], int, list[MovedManifest]]:
    """([(shard, redo_sources or None for all)], skipped count, damaged manifests moved aside)
    from the committed manifests; a damaged manifest is never trusted: its shard runs again.
    Each skipped shard's manifest, already read whole to check it, is folded into ``fold``."""
    work, skipped, damaged = [], 0, []
    for shard in plan.shards:
        uri = manifest_uri(spec.output_uri, shard.shard_id)
        try:
            committed = None if overwrite else check_manifest(uri, shard.shard_id, shard.count,
                                                               spec.storage_options)
        except DamagedManifestError as exc:
            moved = move_aside(uri, spec.output_uri, shard.shard_id, str(exc), spec.storage_options)
            _logger().warning("shard %s: damaged manifest (%s) moved to %s; re-running the shard",
                              shard.shard_id, exc, moved.moved_to)
            damaged.append(moved)
            committed = None
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
            old = committed.table
            redo = [s for s, st in zip(old["source_uri"].to_pylist(), old["status"].to_pylist())
                    if st == "error"]
            if redo:
                work.append((shard, redo))
                continue
        skipped += 1
        if fold is not None:
            fold.add(shard.shard_id, committed.table)
    return work, skipped, damaged


def shards_without_manifest(plan: Plan, spec: JobSpec) -> list[str]:
    """The plan's shards that have no committed manifest (one listing of the manifests)."""
    fs, root = open_fs(manifest_dir(spec.output_uri), spec.storage_options)
    fs.invalidate_cache(root)
    committed = set(list_files(fs, root, (".parquet",)))
    return [s.shard_id for s in plan.shards if f"{s.shard_id}.parquet" not in committed]


class _ProgressPublisher:
    """Publishes a run's image progress: the Prefect progress artifact and a log line, throttled."""

    def __init__(self, progress: RunProgress, artifact_id: Any, logger: Any):
        self.progress, self.artifact_id, self.logger = progress, artifact_id, logger
        self._seen = -1
        self._artifact_at = self._logged_at = time.monotonic()

    def publish(self, *, force: bool = False) -> None:
        """Update the artifact (at most every ARTIFACT_INTERVAL_S) and log (every LOG_INTERVAL_S)."""
        now = time.monotonic()
        if self.progress.version == self._seen and not force:
            return
        if not force and now - self._artifact_at < ARTIFACT_INTERVAL_S:
            return
        self._seen = self.progress.version
        snap = self.progress.snapshot()
        self._artifact_at = now
        if self.artifact_id is not None:
            update_progress_artifact(self.artifact_id, progress=snap.percent,
                                     description=snap.describe())
        if force or now - self._logged_at >= LOG_INTERVAL_S:
            self._logged_at = now
            self.logger.info("progress: %s", snap.describe())


def _run_shards(work: list[tuple[ShardPlan, list[str] | None]], spec: JobSpec, info: RunInfo,
                pool: ActorPool, progress: RunProgress, publisher: _ProgressPublisher,
                lease: OutputLease) -> tuple[list, list]:
    """Submit shard tasks with at most ``max_concurrent_shards`` in flight; publish progress.
    Once the output's lease is lost to another run, no further shard is submitted."""
    logger = get_run_logger()
    results, failures, pending = [], [], []
    queue = list(work)
    while queue or pending:
        if queue and lease.lost.is_set():
            logger.error("lost the output's lease to another run: %d shard(s) not started",
                         len(queue))
            failures += [{"shard_id": shard.shard_id, "error": "LeaseLost: another run took "
                          f"over {spec.output_uri}"} for shard, _ in queue]
            queue = []
        while queue and len(pending) < spec.max_concurrent_shards:
            shard, redo = queue.pop(0)
            future = restore_shard.submit(shard.shard_id, shard, spec, info, pool, redo,
                                          progress.report)
            pending.append((shard, future))
        time.sleep(0.1)
        publisher.publish()
        still = []
        for shard, future in pending:
            if not future.state.is_final():
                still.append((shard, future))
                continue
            try:
                result = future.result()
                results.append(result)
                progress.report(shard.shard_id, result["processed"])
                logger.info("shard %s committed: %d ok, %d error; %s", shard.shard_id,
                            result["ok"], result["error"], progress.snapshot().describe())
            except Exception as exc:  # noqa: BLE001 - one shard's failure must not stop the others
                progress.report(shard.shard_id, 0)  # nothing of it was committed
                failures.append({"shard_id": shard.shard_id, "error": f"{type(exc).__name__}: {exc}"})
                logger.error("shard %s failed: %s", shard.shard_id, exc)
        pending = still
    return results, failures


def _already_done(plan: Plan, work: list[tuple[ShardPlan, list[str] | None]]) -> int:
    """Images committed before this run: skipped shards whole, kept rows of --retry-failed shards."""
    running = {shard.shard_id: redo for shard, redo in work}
    done = 0
    for shard in plan.shards:
        if shard.shard_id not in running:
            done += shard.count
        elif running[shard.shard_id] is not None:
            done += shard.count - len(running[shard.shard_id])
    return done


def _preview_png(plan: Plan, spec: JobSpec) -> bytes | None:
    """Grid of up to PREVIEW_ROWS strips saved by the write stage, from the plan's first shards."""
    fs, root = open_fs(spec.output_uri, spec.storage_options)
    strips: list[bytes] = []
    for shard in plan.shards:
        folder = posixpath.join(root, preview_dir(shard.shard_id))
        for rel in list_files(fs, folder, (".png",)):
            strips.append(fs.cat_file(posixpath.join(folder, rel)))
            if len(strips) == PREVIEW_ROWS:
                return preview_grid(strips)
    return preview_grid(strips)


def _png_tile(spec: JobSpec, uri: str, scale_16bit: bool = False) -> np.ndarray:
    img = Image.open(io.BytesIO(read_output(uri, spec.storage_options)))
    if scale_16bit:  # an uncertainty map: stretch to its own maximum so it is visible
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray((255 * arr / max(arr.max(), 1.0)).astype(np.uint8))
    elif img.mode.startswith("I"):  # a 16-bit gray restoration (of a 16-bit input)
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).astype(np.uint8))
    return np.asarray(img.convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST))


def _uncertain_grid_png(spec: JobSpec, rows: list[dict[str, Any]]) -> bytes | None:
    """Per row, the restored image (left) beside its uncertainty map (right, own scale)."""
    pairs = []
    for row in rows:
        rel = side_relpath(row.get("output_uri") or "", spec.output_uri)
        if rel:
            pairs.append([_png_tile(spec, row["output_uri"]),
                          _png_tile(spec, join(spec.output_uri, "uncertainty", rel),
                                    scale_16bit=True)])
    return tile_grid(pairs)


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


def build_summary(plan: Plan, spec: JobSpec, info: RunInfo,
                  fold: SummaryFold | None = None) -> dict[str, Any]:
    """Fold every committed manifest into the run summary; with several samples per image, also
    the most uncertain rows (``summary["most_uncertain"]``). Shards already in ``fold`` (those
    resume found committed and left alone) are not read again."""
    fold = fold or SummaryFold(spec.samples)
    for shard in plan.shards:
        if shard.shard_id in fold.shards:
            continue
        uri = manifest_uri(spec.output_uri, shard.shard_id)
        try:
            table = read_manifest(uri, spec.storage_options, columns=fold.columns())
        except FileNotFoundError:  # the shard failed this run and has no commit
            continue
        fold.add(shard.shard_id, table)
    return fold.summary(len(plan.shards))


@flow(name="restore-dataset", task_runner=ThreadPoolTaskRunner(max_workers=16),
      flow_run_name="restore {spec.task} -> {spec.output_uri}")
def restore_dataset(spec: JobSpec, retry_failed: bool = False, overwrite: bool = False,
                    ray_address: str | None = None, wait_lease_s: float = 0.0) -> dict[str, Any]:
    """Restore every image of ``spec.input_uri`` into ``spec.output_uri``; return the run summary.

    The run holds the output's lease while it writes (``tasks.lease``): when another live run
    holds it, this one waits up to ``wait_lease_s`` and then refuses, naming that run."""
    # Ray first: the cluster decides the actors' device, which is part of the config hash that
    # tells committed shards from shards to run.
    with ray_connection(ray_address):
        info = validate_job(spec, device=actor_device(spec))
        lease = OutputLease(spec.output_uri, spec.storage_options,
                            run_id=str(flow_run.get_id() or "") or None)
        try:
            lease.acquire(wait_s=wait_lease_s)
        except PermissionError as exc:  # the first write to the output: say which, not a trace
            raise JobSpecError(f"output_uri: access denied to '{spec.output_uri}' (taking its "
                               f"lease under {lease_dir(spec.output_uri)}): {exc}") from None
        info = replace(info, lease_generation=lease.generation)
        try:
            get_run_logger().info("holding the output's lease %s as run %s", lease.uri,
                                  lease.run_id)
            return _restore_dataset(spec, info, lease, retry_failed, overwrite, ray_address)
        finally:
            lease.release()


def _restore_dataset(spec: JobSpec, info: RunInfo, lease: OutputLease, retry_failed: bool,
                     overwrite: bool, ray_address: str | None) -> dict[str, Any]:
    logger = get_run_logger()
    started = time.time()
    if overwrite:
        removed = remove_previous_outputs(spec.output_uri, spec.storage_options)
        logger.info("overwrite: removed %d manifest(s) and the %d image(s) they listed; moved %d "
                    "unreadable manifest(s) to damaged/", removed["manifests"], removed["files"],
                    removed["damaged"])
    plan, reused = load_or_make_plan(spec, replan=overwrite)
    info = info.writing(spec, resolve_output_format(spec.output_format, plan.input_format))
    if plan.input_format == "images" and get_task(spec.task).side_input == "mask" \
            and not spec.masks_uri:
        raise JobSpecError(f"masks_uri: task '{spec.task}' on an image folder needs masks_uri")
    check_first_images(plan, spec, info)
    if lease.took_over is not None:
        logger.warning(describe_takeover(lease.took_over, shards_without_manifest(plan, spec)))
    fold = SummaryFold(spec.samples)
    work, skipped, damaged = shards_to_run(plan, spec, info, retry_failed=retry_failed,
                                           overwrite=overwrite, fold=fold)
    logger.info("plan %s: %d shards, %d images; %d to run, %d already committed (config %s)",
                "reused" if reused else "made", len(plan.shards), plan.total_items, len(work),
                skipped, info.config_hash)
    results: list[dict] = []
    failures: list[dict] = []
    progress = RunProgress(plan.total_items, _already_done(plan, work))
    progress_id = create_progress_artifact(progress=progress.snapshot().percent,
                                           key="restora-progress",
                                           description=progress.snapshot().describe())
    publisher = _ProgressPublisher(progress, progress_id, logger)
    if work:
        with ray_connection(ray_address):
            pool = ActorPool(spec, info)
            try:
                pool.wait_ready()
                progress.restart_clock()
                results, failures = _run_shards(work, spec, info, pool, progress, publisher,
                                                lease)
            finally:
                pool.shutdown()
        publisher.publish(force=True)
    wall = time.time() - started
    summary = build_summary(plan, spec, info, fold)
    writer = get_writer(info.output_format)
    writer.finish(spec.output_uri, [manifest_uri(spec.output_uri, s.shard_id) for s in plan.shards],
                  spec.storage_options)
    processed = sum(r["processed"] for r in results)
    summary.update({
        "flow_run_id": str(flow_run.get_id() or ""), "config_hash": info.config_hash,
        "model_id": info.model_id, "output_uri": spec.output_uri,
        "output_format": info.output_format,
        "images_dir": join(spec.output_uri, writer.folder),
        "manifests_dir": manifest_dir(spec.output_uri),
        "summary_uri": summary_uri(spec.output_uri), "seconds": round(wall, 3),
        "processed_this_run": processed,
        "throughput_images_per_s": round(processed / wall, 3) if processed else 0.0,
        "run_id": lease.run_id, "lease_uri": lease.uri,
        "retry_failed": retry_failed, "overwrite": overwrite, "failed_shards": failures,
        "damaged_manifests": [asdict(d) for d in damaged],
        "shard_results": results, "spec": spec.model_dump(mode="json", exclude={"storage_options"}),
    })
    summary["shards"].update({"run": len(work), "skipped": skipped, "failed": len(failures),
                              "damaged": len(damaged)})
    fs, path = open_fs(summary_uri(spec.output_uri), spec.storage_options)
    write_atomic(fs, path, json.dumps(summary, indent=1, default=str).encode())
    create_markdown_artifact(markdown=markdown_summary(summary), key="restora-summary",
                             description="Restora run summary")
    logger.info("summary artifact restora-summary: %d ok, %d error of %d images; %s",
                summary["images"]["ok"], summary["images"]["error"], summary["images"]["total"],
                summary_uri(spec.output_uri))
    if summary.get("most_uncertain"):
        _report_most_uncertain(spec, summary["most_uncertain"])
    grid = _preview_png(plan, spec)
    if grid:
        gfs, gpath = open_fs(join(spec.output_uri, GRID_NAME), spec.storage_options)
        write_atomic(gfs, gpath, grid)
        encoded = base64.b64encode(grid).decode()
        columns = "degraded input | restored" + (" | reference" if spec.uses_references else "")
        create_markdown_artifact(
            markdown=(f"## Before / after\n\nColumns: {columns}\n\n"
                      f"![{columns}](data:image/png;base64,{encoded})\n"),
            key="restora-samples", description=columns)
    if failures:
        raise RuntimeError(f"{len(failures)} shard(s) failed ({', '.join(f['shard_id'] for f in failures)});"
                           " committed shards are kept, rerun the same job to resume")
    return summary
