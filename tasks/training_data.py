"""Training images read the way restoration reads its inputs: every format of ``tasks.readers``
(image folders, Parquet shards, WebDataset tars) on any fsspec store, decoded into an in-memory
training set of ``restora_core.datasets``.

The readers plan shards into a scratch folder (their item lists) and hand over undecoded bytes;
an image that cannot be read or decoded is skipped and named in the result, so one broken file
never stops a training run.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from restora_core.datasets import (
    Augment,
    CropSourceSet,
    ImageArraySet,
    TrainingSet,
    content_sha256,
    resize_square,
)
from restora_core.training import TrainConfig

from .decode import ImageError, decode_pixels
from .planning import make_plan
from .readers import get_reader
from .spec import JobSpec, JobSpecError

# Skipped images named in the model card (all of them are counted).
SKIPPED_LISTED = 20


@dataclass
class DecodedImages:
    """Decoded training images, (H, W, C) uint8 each, with what was skipped and why."""

    images: list[np.ndarray]
    keys: list[str]
    input_format: str
    shards: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)


def _input_spec(data_uri: str, scratch: str, storage_options: dict[str, Any]) -> JobSpec:
    # Readers take a job spec; only its input fields matter here. A mask-free task keeps the
    # readers from looking for masks.
    try:
        return JobSpec(input_uri=data_uri, output_uri=scratch, task="box",
                       storage_options=storage_options)
    except ValueError as exc:
        raise JobSpecError(f"--data: {exc}") from None


def read_images(data_uri: str, channels: int, *, storage_options: dict[str, Any] | None = None,
                limit: int | None = None) -> DecodedImages:
    """Every image under ``data_uri`` (any reader format), decoded to (H, W, ``channels``) uint8."""
    with tempfile.TemporaryDirectory(prefix="restora-train-plan-") as scratch:
        spec = _input_spec(data_uri, scratch, dict(storage_options or {}))
        plan = make_plan(spec)
        reader = get_reader(plan.input_format)
        out = DecodedImages([], [], plan.input_format,
                            [{"shard": s.shard_id, "count": s.count} for s in plan.shards])
        for shard in plan.shards:
            for request in reader.requests(shard, spec, None):
                for row in reader.read(request, spec):
                    key = f"{row.source_uri}#{row.raw_id}" if row.where else str(row.source_uri)
                    try:
                        if row.error is not None:
                            raise row.error
                        if row.image is None:
                            raise ImageError("unreadable", "the row holds no image")
                        pixels = decode_pixels(row.image, channels=channels,
                                               max_pixels=spec.max_pixels)
                    except ImageError as exc:
                        out.skipped.append(f"{row.where or key}: {exc}")
                        continue
                    out.images.append(np.round(pixels * 255.0).astype(np.uint8))
                    out.keys.append(key)
                    if limit is not None and len(out.images) >= limit:
                        return out
    return out


def build_training_set(cfg: TrainConfig) -> tuple[TrainingSet, dict[str, Any]]:
    """The training set of ``cfg.data`` (a folder, Parquet or WebDataset source) and its
    description for the model card; ValueError when no image decodes."""
    decoded = read_images(cfg.data, cfg.channels, storage_options=cfg.storage_options)
    if not decoded.images:
        reasons = "; ".join(decoded.skipped[:3]) or "the input holds no images"
        raise ValueError(f"--data: no decodable images under '{cfg.data}' ({reasons})")
    mode = "resize" if cfg.data_mode == "auto" else cfg.data_mode
    if mode not in ("resize", "crop"):
        raise ValueError(f"data_mode must be auto, resize or crop, got '{cfg.data_mode}'")
    augment = Augment(hflip=bool(cfg.hflip), rot90=bool(cfg.rot90))
    meta = {"source": cfg.data, "count": len(decoded.images), "skipped": len(decoded.skipped),
            "mode": mode}
    if mode == "resize":
        stack = np.stack([resize_square(img, cfg.resolution) for img in decoded.images])
        ds: TrainingSet = ImageArraySet(stack, cfg.resolution, seed=cfg.seed, augment=augment,
                                        meta=meta)
        arrays = [stack]
    else:
        scales = {"scales": cfg.scales} if cfg.scales else {}  # else the set's own default
        ds = CropSourceSet(decoded.images, cfg.resolution, seed=cfg.seed, augment=augment,
                           names=decoded.keys, meta=meta, **scales)
        arrays = decoded.images
    info = {"source": cfg.data, "format": decoded.input_format, "shards": decoded.shards,
            "sha256": content_sha256(*arrays),
            "sha256_of": "decoded uint8 pixels (content_sha256)", "kind": type(ds).__name__,
            "count": len(ds), "mode": mode, "skipped": len(decoded.skipped),
            "skipped_examples": decoded.skipped[:SKIPPED_LISTED],
            "augment": {"hflip": augment.hflip, "rot90": augment.rot90}}
    if hasattr(ds, "scales"):
        info["scales"] = list(ds.scales)
    return ds, info
