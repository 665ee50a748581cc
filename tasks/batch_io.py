"""The I/O stages around the device: read+decode a batch, encode+write its results, and commit
a shard's manifest.

Reading goes through the request's input reader (``tasks.readers``); everything after the bytes
(ids, decoding, seeds) is the same for every format. Writing goes through the run's output writer
(``tasks.writers``): image files are written as each batch is restored; the one-file formats
(Parquet, WebDataset) get their shard's PNGs at the commit, which writes the shard file whole and
then the manifest.

All three run as Ray tasks (on any node, never in the flow process). This module and what it
imports stay free of torch, Prefect and Ray, so the I/O workers stay small: these imports take
~100 MiB in a plain interpreter, ~280 MiB with torch (tests/pipeline/test_io_workers.py holds
it). The first two exchange ``dict[str, np.ndarray]`` batches with the restoration actor.
Per-row columns are object or numeric arrays; ``image``/``mask`` hold one (C, H, W) float32
array per row (None for a failed row). A bad image becomes ``status="error"`` with a
cause-prefixed message; a transient storage error is raised so that the shard task retries.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc

from restora_core.degradations import get_task
from restora_core.seeding import image_seed

from .decode import (
    ImageError,
    decode_image,
    decode_mask,
    encode_mask_png,
    encode_png,
    encode_std_png,
    safe_id,
)
from .geometry import size_message
from .lease import ensure_still_held
from .manifest import (
    MANIFEST_COLUMNS,
    concat,
    manifest_uri,
    params_json,
    read_manifest,
    rows_to_table,
    write_manifest,
)
from .preview import PREVIEW_ROWS, preview_relpath, preview_strip
from .readers import SourceRow, get_reader
from .storage import open_fs, write_atomic
from .writers import get_writer, side_relpath

if TYPE_CHECKING:  # annotations only: reading and writing batches needs no pydantic
    from .spec import JobSpec, RunInfo

# bits: the input's sample depth (8 or 16), the depth its restored PNG is written at.
ROW_COLUMNS = ("id", "source_uri", "mask_uri", "status", "error", "task_params", "seed",
               "width", "height", "bits", "start_time")


def _decode_row(row: SourceRow, params: dict[str, Any], spec: JobSpec,
                info: RunInfo) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int]]:
    """Decode a row's image (and mask when the task takes one); errors name the row's member if
    it has one. Task parameters that are unknown, malformed or do not fit the prior are a
    ``bad-params`` error of the row."""
    if row.error is not None:
        raise row.error
    try:
        try:
            size = info.input_size(spec, params)
        except ValueError as exc:
            raise ImageError("bad-params", f"task_params: {exc}") from None
        if row.image is None:
            raise ImageError("unreadable", "the row holds no image")
        image, geo = decode_image(
            row.image, channels=info.channels, resolution=size,
            size_policy=spec.size_policy, max_pixels=spec.max_pixels,
            size_message=lambda w, h: size_message(spec, info, params, w, h))
        mask = None
        if get_task(spec.task).side_input == "mask":
            if row.mask is None:
                raise ImageError("mask-missing", f"task '{spec.task}' needs a mask for this image"
                                 + ("" if row.has_mask_ref else " and none was found"))
            mask = decode_mask(row.mask, geo, max_pixels=spec.max_pixels)
    except ImageError as exc:
        if row.where is None:
            raise
        raise ImageError(exc.cause, f"{row.where}: {exc.detail}") from None
    return image, mask, (geo.width, geo.height, geo.bits)


def load_batch(request: dict[str, Any], spec: JobSpec, info: RunInfo) -> dict[str, np.ndarray]:
    """Read (through the request's reader) and decode one batch request."""
    reader = get_reader(request["kind"])
    out: dict[str, list[Any]] = {k: [] for k in (*ROW_COLUMNS, "relpath", "preview", "image", "mask")}
    rows = iter(reader.read(request, spec))
    while True:
        start = time.time()
        row = next(rows, None)
        if row is None:
            break
        image = mask = relpath = None
        width = height = bits = None
        status, error, params = "ok", None, {**spec.task_params, **row.params}
        row_id = str(row.raw_id) if row.raw_id is not None else ""
        try:
            row_id = safe_id(row_id)
            relpath = reader.output_relpath(row_id, _shard_name(request))
            image, mask, (width, height, bits) = _decode_row(row, params, spec, info)
        except ImageError as exc:
            status, error = "error", str(exc)
        out["id"].append(row_id)
        out["source_uri"].append(row.source_uri)
        out["mask_uri"].append(row.mask_uri)
        out["status"].append(status)
        out["error"].append(error)
        out["task_params"].append(params_json(params))
        out["seed"].append(image_seed(spec.seed, row_id))
        out["width"].append(width)
        out["height"].append(height)
        out["bits"].append(bits)
        out["start_time"].append(start)
        out["relpath"].append(relpath)
        out["preview"].append(bool(request.get("preview")) and len(out["preview"]) < PREVIEW_ROWS)
        out["image"].append(image)
        out["mask"].append(mask)
    batch = {k: object_array(v) for k, v in out.items()}
    batch["seed"] = np.asarray(out["seed"], dtype=np.int64)
    batch["start_time"] = np.asarray(out["start_time"], dtype=np.float64)
    batch["shard_id"] = object_array([request["shard_id"]] * len(out["id"]))
    batch["shard_name"] = object_array([_shard_name(request)] * len(out["id"]))
    return batch


def _shard_name(request: dict[str, Any]) -> str:
    """What the shard's outputs are named after: its source's name, else (plans made before
    shards had names) its id."""
    return request.get("shard_name") or request["shard_id"]


def object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (numpy would otherwise stack equal-shaped arrays)."""
    arr = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        arr[i] = v
    return arr


def write_batch(batch: dict[str, np.ndarray], spec: JobSpec, info: RunInfo) -> dict[str, list]:
    """Encode and store the restored images of a batch through the run's writer; return its
    manifest columns plus ``png``: the bytes the shard's commit still has to write (one-file
    formats), else None."""
    ensure_still_held(spec.output_uri, spec.storage_options, info.lease_generation,
                      f"the batch starting at {batch['id'][0]!r}" if len(batch["id"]) else "a batch")
    fs, root = open_fs(spec.output_uri, spec.storage_options)
    writer = get_writer(info.output_format)
    n = len(batch["id"])
    cols: dict[str, list[Any]] = {k: [] for k in (*MANIFEST_COLUMNS, "png")}
    for i in range(n):
        status, error, output, kept = batch["status"][i], batch["error"][i], None, None
        if status == "ok":
            try:
                png = encode_png(batch["restored"][i], _bits(batch, i))
            except (ValueError, TypeError) as exc:
                status, error = "error", f"encode-failed: {exc}"
            else:
                output, kept = writer.put(fs, root, spec.output_uri, batch["shard_name"][i],
                                          batch["relpath"][i], png)
                rel = side_relpath(output, spec.output_uri)
                if spec.save_inputs:
                    write_atomic(fs, posixpath.join(root, "inputs", rel), encode_png(batch["observed"][i]))
                    if batch["obs_mask"][i] is not None:
                        write_atomic(fs, posixpath.join(root, "masks", rel),
                                     encode_mask_png(batch["obs_mask"][i]))
                if batch["preview"][i]:
                    strip = preview_strip(batch["observed"][i], batch["restored"][i],
                                          batch["reference"][i], _column(batch, "window_boxes", i))
                    write_atomic(fs, posixpath.join(root, preview_relpath(batch["shard_id"][i], i)),
                                 strip)
                if spec.save_uncertainty and batch["uncertainty_map"][i] is not None:
                    write_atomic(fs, posixpath.join(root, "uncertainty", rel),
                                 encode_std_png(batch["uncertainty_map"][i]))
        end = time.time()
        row = {
            "id": batch["id"][i] or f"<invalid id #{i}>", "source_uri": batch["source_uri"][i],
            "mask_uri": batch["mask_uri"][i], "output_uri": output, "status": status,
            "error": error, "task": spec.task, "task_params": batch["task_params"][i],
            "method": spec.method, "samples": spec.samples,
            "flag": batch["flag"][i] if status == "ok" else None, "seed": int(batch["seed"][i]),
            "model_id": info.model_id, "config_hash": info.config_hash,
            "width": batch["width"][i], "height": batch["height"][i],
            "seconds": end - float(batch["start_time"][i]),
            "worker_node": batch["worker_node"][i], "device": batch["device"][i],
            "start_time": float(batch["start_time"][i]), "end_time": end,
        }
        # Sampler settings as the worker used them; an image that was not restored has none.
        for used in ("nfe", "steps", "corrections", "method_params", "windows", "tiles",
                     "known_fraction", "consistency", "psnr", "ssim", "psnr_hole", "lpips",
                     "uncertainty_mean", "uncertainty_p95"):
            row[used] = _column(batch, used, i) if status == "ok" else None
        for k, v in row.items():
            cols[k].append(v)
        cols["png"].append(kept)
    return cols


def _column(batch: dict[str, np.ndarray], name: str, i: int) -> Any:
    """Row ``i`` of an optional column (batches built before it existed lack it)."""
    return batch[name][i] if name in batch else None


def _bits(batch: dict[str, np.ndarray], i: int) -> int:
    """The depth row ``i``'s restored PNG is written at: its input's (8 when unknown)."""
    return int(_column(batch, "bits", i) or 8)


def write_batch_parts(batch: dict[str, np.ndarray], spec: JobSpec,
                      info: RunInfo) -> tuple[dict[str, list], list[bytes | None]]:
    """``write_batch`` as (manifest columns, PNGs for the commit): two Ray objects, so that the
    flow process fetches the columns and only passes the PNGs on to the commit."""
    cols = write_batch(batch, spec, info)
    return cols, cols.pop("png")


def commit_shard(shard_id: str, columns: list[dict[str, list]], redo_sources: list[str] | None,
                 spec: JobSpec, info: RunInfo, *pngs: list[bytes | None],
                 shard_name: str | None = None) -> dict[str, int]:
    """Complete the shard through the run's writer (the one-file formats write the shard file),
    then write its manifest (merged with the kept rows of the old one for --retry-failed).

    ``pngs``: per part of ``columns``, the PNGs ``write_batch_parts`` split off (without them, the
    parts' own ``png`` columns are used); ``shard_name`` names the shard's file (default: its id)."""
    merged: dict[str, list] = {}
    for part in columns:
        for key, values in part.items():
            merged.setdefault(key, []).extend(values)
    table = rows_to_table(merged)
    restored = _pngs_by_uri(merged["output_uri"],
                            _flatten(pngs) if pngs else merged.get("png", []))
    uri = manifest_uri(spec.output_uri, shard_id)
    ensure_still_held(spec.output_uri, spec.storage_options, info.lease_generation,
                      f"the manifest of {shard_id}")
    if redo_sources is not None:
        old = read_manifest(uri, spec.storage_options)
        keep = pc.invert(pc.is_in(old["source_uri"], value_set=table["source_uri"]))
        table = concat([old.filter(keep), table])
    table = get_writer(info.output_format).commit(table, restored, shard_name or shard_id, spec)
    write_manifest(table, uri, shard_id=shard_id, config_hash=info.config_hash,
                   storage_options=spec.storage_options)
    status = table["status"].to_pylist()
    return {"rows": len(status), "ok": status.count("ok"), "error": status.count("error")}


def _flatten(parts: Iterable[list[bytes | None]]) -> list[bytes | None]:
    return [png for part in parts for png in part]


def _pngs_by_uri(uris: list[str | None], pngs: list[bytes | None]) -> dict[str, bytes]:
    """output_uri -> PNG of the rows that have both."""
    return {u: p for u, p in zip(uris, pngs) if u is not None and p is not None}
