"""The I/O stages around the device: read+decode a batch, and encode+write its results.

Both run as Ray tasks (on any node, never in the flow process) and exchange
``dict[str, np.ndarray]`` batches with the restoration actor. Per-row columns are object or numeric
arrays; ``image``/``mask`` hold one (C, H, W) float32 array per row (None for a failed row).
A bad image becomes ``status="error"`` with a cause-prefixed message; a transient storage error
is raised so that the shard task retries.
"""

from __future__ import annotations

import bisect
import json
import posixpath
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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
from .manifest import MANIFEST_COLUMNS, params_json
from .spec import JobSpec, RunInfo
from .storage import is_transient_storage_error, join, open_fs, write_atomic

ROW_COLUMNS = ("id", "source_uri", "mask_uri", "status", "error", "task_params", "seed",
               "width", "height", "start_time")


def _read(uri: str, storage_options: dict[str, Any], what: str) -> bytes:
    try:
        fs, path = open_fs(uri, storage_options)
        return fs.cat_file(path)
    except Exception as exc:
        if is_transient_storage_error(exc):
            raise
        cause = "mask-missing" if what == "mask" else "unreadable"
        raise ImageError(cause, f"cannot read {what} '{uri}': {type(exc).__name__}: {exc}") from None


def _parquet_rows(uri: str, rows: list[int], spec: JobSpec) -> list[dict[str, Any]]:
    """The requested rows of a Parquet shard as dicts (only the columns the job uses)."""
    fs, path = open_fs(uri, spec.storage_options)
    with fs.open(path, "rb") as handle:
        # pyarrow 26 threads reading a Python file object can abort the process at exit.
        pf = pq.ParquetFile(handle)
        names = set(pf.schema_arrow.names)
        wanted = [c for c in (spec.id_column, spec.image_column, spec.mask_column, "task_params")
                  if c in names]
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        starts = [sum(sizes[:g]) for g in range(len(sizes))]
        group_of = {r: bisect.bisect_right(starts, r) - 1 for r in rows}
        bad = [r for r in rows if r < 0 or r >= sum(sizes)]
        if bad:
            raise ValueError(f"rows {bad[:5]} are outside the {sum(sizes)} rows of '{uri}'")
        groups = sorted(set(group_of.values()))
        at, acc = {}, 0
        for g in groups:
            at[g] = acc
            acc += sizes[g]
        table = pa.concat_tables([pf.read_row_group(g, columns=wanted, use_threads=False) for g in groups])
        index = [at[group_of[r]] + r - starts[group_of[r]] for r in rows]
        return table.take(pa.array(index, type=pa.int64())).to_pylist()


def _cell_bytes(value: Any, file_uri: str, spec: JobSpec, what: str) -> bytes | None:
    """Bytes of an image cell: raw bytes, or the Hugging Face {bytes, path} struct."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path"):
            ref = value["path"]
            if "://" not in ref and not ref.startswith("/"):
                ref = join(file_uri.rsplit("/", 1)[0], ref)
            return _read(ref, spec.storage_options, what)
    raise ImageError("not-an-image", f"{what} cell holds {type(value).__name__}, not bytes "
                                     "or a {bytes, path} struct")


def _row_params(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ImageError("bad-params", f"task_params is not JSON: {exc}") from None
    if isinstance(value, list):  # a Parquet map arrives as [(key, value), ...]
        value = dict(value)
    if not isinstance(value, dict):
        raise ImageError("bad-params", f"task_params must be an object, got {type(value).__name__}")
    return {k: v for k, v in value.items() if v is not None}


def _decode_row(image_bytes: bytes | None, mask_bytes: bytes | None, has_mask_ref: bool,
                params: dict[str, Any], spec: JobSpec, info: RunInfo) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    if image_bytes is None:
        raise ImageError("unreadable", "the row holds no image")
    image, geo = decode_image(image_bytes, channels=info.channels,
                              resolution=info.input_resolution(spec, params),
                              size_policy=spec.size_policy, max_pixels=spec.max_pixels)
    mask = None
    if spec.task == "inpaint":
        if mask_bytes is None:
            raise ImageError("mask-missing", "task 'inpaint' needs a mask for this image"
                             + ("" if has_mask_ref else " and none was found"))
        mask = decode_mask(mask_bytes, geo, max_pixels=spec.max_pixels)
    return image, mask, (geo.width, geo.height)


def load_batch(request: dict[str, Any], spec: JobSpec, info: RunInfo) -> dict[str, np.ndarray]:
    """Read and decode one batch request ({kind: images, items} or {kind: parquet, file, rows})."""
    rows: list[dict[str, Any]] = []
    if request["kind"] == "images":
        for item in request["items"]:
            rows.append({"raw_id": item["id"], "source_uri": item["source"],
                         "mask_uri": item.get("mask"), "fetch": item})
    else:
        file_uri = request["file"]
        records = _parquet_rows(file_uri, request["rows"], spec)
        for r, rec in zip(request["rows"], records):
            has_mask = rec.get(spec.mask_column) is not None
            rows.append({"raw_id": rec.get(spec.id_column, str(r)),
                         "source_uri": f"{file_uri}#row={r}",
                         "mask_uri": f"{file_uri}#row={r}&column={spec.mask_column}" if has_mask else None,
                         "record": rec, "file": file_uri})
    out: dict[str, list[Any]] = {k: [] for k in (*ROW_COLUMNS, "image", "mask")}
    for row in rows:
        start = time.time()
        image = mask = None
        width = height = None
        status, error, params = "ok", None, dict(spec.task_params)
        raw_id = row["raw_id"]
        row_id = str(raw_id) if raw_id is not None else ""
        try:
            row_id = safe_id(row_id)
            if "record" in row:
                rec = row["record"]
                params.update(_row_params(rec.get("task_params")))
                img_b = _cell_bytes(rec.get(spec.image_column), row["file"], spec, "image")
                mask_b = _cell_bytes(rec.get(spec.mask_column), row["file"], spec, "mask")
                has_ref = mask_b is not None
            else:
                img_b = _read(row["source_uri"], spec.storage_options, "image")
                has_ref = row["mask_uri"] is not None
                mask_b = _read(row["mask_uri"], spec.storage_options, "mask") if (
                    has_ref and spec.task == "inpaint") else None
            image, mask, (width, height) = _decode_row(img_b, mask_b, has_ref, params, spec, info)
        except ImageError as exc:
            status, error = "error", str(exc)
        out["id"].append(row_id)
        out["source_uri"].append(row["source_uri"])
        out["mask_uri"].append(row["mask_uri"])
        out["status"].append(status)
        out["error"].append(error)
        out["task_params"].append(params_json(params))
        out["seed"].append(image_seed(spec.seed, row_id))
        out["width"].append(width)
        out["height"].append(height)
        out["start_time"].append(start)
        out["image"].append(image)
        out["mask"].append(mask)
    batch = {k: object_array(v) for k, v in out.items()}
    batch["seed"] = np.asarray(out["seed"], dtype=np.int64)
    batch["start_time"] = np.asarray(out["start_time"], dtype=np.float64)
    batch["shard_id"] = object_array([request["shard_id"]] * len(rows))
    batch["layout"] = object_array([request["kind"]] * len(rows))
    return batch


def object_array(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (numpy would otherwise stack equal-shaped arrays)."""
    arr = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        arr[i] = v
    return arr


def output_relpath(row_id: str, shard_id: str, layout: str) -> str:
    """Relative output path of an image: same layout for folders, <shard>/<id> for Parquet."""
    return f"{row_id}.png" if layout == "images" else f"{shard_id}/{row_id}.png"


def write_batch(batch: dict[str, np.ndarray], spec: JobSpec, info: RunInfo) -> dict[str, list]:
    """Encode and write the restored images of a batch; return its manifest columns."""
    fs, root = open_fs(spec.output_uri, spec.storage_options)
    n = len(batch["id"])
    cols: dict[str, list[Any]] = {k: [] for k in MANIFEST_COLUMNS}
    ran = spec.resolved_params  # what restore() ran: the task's defaults plus the spec's values
    for i in range(n):
        status, error, output = batch["status"][i], batch["error"][i], None
        rel = output_relpath(batch["id"][i], batch["shard_id"][i], batch["layout"][i])
        if status == "ok":
            try:
                png = encode_png(batch["restored"][i])
            except (ValueError, TypeError) as exc:
                status, error = "error", f"encode-failed: {exc}"
            else:
                path = posixpath.join(root, "images", rel)
                write_atomic(fs, path, png)
                output = join(spec.output_uri, "images", rel)
                if spec.save_inputs:
                    write_atomic(fs, posixpath.join(root, "inputs", rel), encode_png(batch["observed"][i]))
                    if batch["obs_mask"][i] is not None:
                        write_atomic(fs, posixpath.join(root, "masks", rel),
                                     encode_mask_png(batch["obs_mask"][i]))
                if spec.save_uncertainty and batch["uncertainty_map"][i] is not None:
                    write_atomic(fs, posixpath.join(root, "uncertainty", rel),
                                 encode_std_png(batch["uncertainty_map"][i]))
        end = time.time()
        row = {
            "id": batch["id"][i] or f"<invalid id #{i}>", "source_uri": batch["source_uri"][i],
            "mask_uri": batch["mask_uri"][i], "output_uri": output, "status": status,
            "error": error, "task": spec.task, "task_params": batch["task_params"][i],
            "method": spec.method, "steps": ran["steps"], "corrections": ran.get("corrections", 0),
            "method_params": params_json(ran),
            "nfe": batch["nfe"][i] if status == "ok" else None, "samples": spec.samples,
            "flag": batch["flag"][i] if status == "ok" else None, "seed": int(batch["seed"][i]),
            "model_id": info.model_id, "config_hash": info.config_hash,
            "width": batch["width"][i], "height": batch["height"][i],
            "seconds": end - float(batch["start_time"][i]),
            "worker_node": batch["worker_node"][i], "device": batch["device"][i],
            "start_time": float(batch["start_time"][i]), "end_time": end,
        }
        for metric in ("known_fraction", "consistency", "psnr", "ssim", "psnr_hole", "lpips",
                       "uncertainty_mean", "uncertainty_p95"):
            row[metric] = batch[metric][i] if status == "ok" else None
        for k, v in row.items():
            cols[k].append(v)
    return cols
