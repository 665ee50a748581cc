"""Training images read the way restoration reads its inputs: every format of ``tasks.readers``
(image folders, Parquet shards, WebDataset tars) on any fsspec store.

The driver plans the shards once (:func:`plan_training_data`: item lists under the run's
checkpoint folder, a fingerprint of the shard list and sizes, the held-out split, whether to
stream); every worker then opens its batch source from that plan (:func:`open_training_source`):
the decoded images in memory (``KeyedImages``) or, for data larger than memory, shards streamed
while training (``tasks.training_stream``). An image that cannot be read or decoded is skipped
and named, so one broken file never stops a training run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
from restora_core.storage import open_fs
from restora_core.training import TrainConfig
from restora_core.training.keyed import KeyedImages, SampleRule
from restora_core.training.parallel import BatchSource

from .decode import ImageError
from .readers import ShardPlan, get_reader
from .readers.base import shard_items
from .spec import InputSpec

# Skipped images named in the model card (all of them are counted).
SKIPPED_LISTED = 20
HOLDOUT_RULE = ("held out when int(sha256('restora-holdout' NUL key)[:8 bytes], little) / 2**64 "
                "< holdout; key = the image's source URI (file, file#row=N, tar member)")


def held_out(key: str, fraction: float) -> bool:
    """Whether the image with this key belongs to the held-out split (stable across runs)."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(b"restora-holdout\x00" + key.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0 ** 64 < fraction


@dataclass
class DecodedImages:
    """Decoded training images, (H, W, C) uint8 each, with what was skipped and why."""

    images: list[np.ndarray]
    keys: list[str]
    input_format: str
    shards: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    held_out: int = 0


@dataclass
class TrainingData:
    """The planned training data, made once by the driver and sent to every worker."""

    source: InputSpec
    input_format: str
    shards: list[ShardPlan]
    stream: bool
    info: dict[str, Any]

    def for_workers(self) -> TrainingData:
        """This plan without the held-out key list (which only the driver writes out)."""
        if "holdout" not in self.info:
            return self
        split = {k: v for k, v in self.info["holdout"].items() if k != "keys"}
        return dataclasses.replace(self, info={**self.info, "holdout": split})


def shard_keys(shard: ShardPlan, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The keys (source URIs) of a shard's images, without reading any image."""
    if shard.items_uri:
        return [item["source"] for item in shard_items(shard, storage_options)]
    return [f"{shard.file_uri}#row={r}" for r in range(shard.count)]


def iter_decoded(shards: list[ShardPlan], source: InputSpec, input_format: str, channels: int,
                 holdout: float = 0.0):
    """``(key, pixels or None, reason)`` for every row of ``shards`` in order: held-out rows come
    undecoded (None, None), unreadable ones with pixels None and the reason."""
    from .training_stream import row_key, row_pixels

    reader = get_reader(input_format)
    for shard in shards:
        for request in reader.requests(shard, source, None):
            for row in reader.read(request, source):
                key = row_key(row)
                if held_out(key, holdout):
                    yield key, None, None
                    continue
                try:
                    pixels = row_pixels(row, channels, source.max_pixels)
                except ImageError as exc:
                    yield key, None, f"{row.where or key}: {exc}"
                    continue
                yield key, pixels, None


def read_images(data_uri: str, channels: int, *, storage_options: dict[str, Any] | None = None,
                holdout: float = 0.0, data: TrainingData | None = None) -> DecodedImages:
    """Every image under ``data_uri`` (any reader format; or the planned ``data``), decoded to
    (H, W, ``channels``) uint8, held-out images left out."""
    from .training_stream import plan_input

    with tempfile.TemporaryDirectory(prefix="restora-train-plan-") as scratch:
        if data is None:  # only the shards: no fingerprint, no size listing
            shards, source, fmt = plan_input(data_uri, scratch, storage_options=storage_options)
        else:
            shards, source, fmt = data.shards, data.source, data.input_format
        out = DecodedImages([], [], fmt, [{"shard": s.shard_id, "count": s.count} for s in shards])
        for key, pixels, reason in iter_decoded(shards, source, fmt, channels, holdout):
            if pixels is None:
                if reason is None:
                    out.held_out += 1
                else:
                    out.skipped.append(reason)
                continue
            out.images.append(pixels)
            out.keys.append(key)
    return out


def _shard_bytes(data_source: InputSpec, shards: list[ShardPlan]) -> list[int]:
    # One listing of the input for item-list shards (folders, tars listed per member), one
    # size lookup per file shard: no image is opened.
    fs, root = open_fs(data_source.input_uri, data_source.storage_options)
    sizes: dict[str, int] | None = None
    out = []
    for shard in shards:
        if shard.file_uri:
            out.append(int(fs.size(open_fs(shard.file_uri, data_source.storage_options)[1])))
            continue
        if sizes is None:
            listing = fs.find(root, detail=True) if fs.isdir(root) else {root: fs.info(root)}
            sizes = {fs._strip_protocol(k): int(v.get("size") or 0) for k, v in listing.items()}
        total = 0
        for item in shard_items(shard, data_source.storage_options):
            path = fs._strip_protocol(item["source"]).split("#", 1)[0]
            total += sizes.get(path, 0)
        out.append(total)
    return out


def plan_training_data(cfg: TrainConfig, plan_dir: str) -> TrainingData:
    """Plan ``cfg.data``'s shards (item lists under ``plan_dir``), fingerprint them and decide
    whether to stream; JobSpecError for an input that cannot be read."""
    from .training_stream import plan_input

    shards, source, input_format = plan_input(cfg.data, plan_dir,
                                              storage_options=cfg.storage_options)
    sizes = _shard_bytes(source, shards)
    listing = [{"shard": s.name or s.shard_id, "count": s.count, "bytes": b}
               for s, b in zip(shards, sizes)]
    fingerprint = hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()
    total = sum(sizes)
    stream = (total > cfg.stream_above_mb * 2 ** 20) if cfg.stream is None else bool(cfg.stream)
    info: dict[str, Any] = {
        "source": cfg.data, "format": input_format, "shards": listing,
        "fingerprint": fingerprint,
        "fingerprint_of": "sha256 of the shard list: name, image count and bytes of each shard",
        "images_listed": sum(s.count for s in shards), "bytes": total,
        "mode": data_mode(cfg),
        "stream": stream, "augment": {"hflip": bool(cfg.hflip), "rot90": bool(cfg.rot90)}}
    if cfg.holdout > 0:
        keys = [k for s in shards for k in shard_keys(s, cfg.storage_options)]
        held = [k for k in keys if held_out(k, cfg.holdout)]
        info["holdout"] = {"fraction": cfg.holdout, "rule": HOLDOUT_RULE, "count": len(held),
                           "keys_sha256": hashlib.sha256("\n".join(held).encode()).hexdigest(),
                           "keys": held}
    return TrainingData(source, input_format, shards, stream, info)


def data_mode(cfg: TrainConfig) -> str:
    """``cfg.data_mode`` with "auto" resolved: image sources train on random crops."""
    return "crop" if cfg.data_mode == "auto" else cfg.data_mode


def sample_rule(cfg: TrainConfig) -> SampleRule:
    """How images become training samples under ``cfg`` (keyed modes only)."""
    mode = data_mode(cfg)
    if mode not in ("crop", "resize"):
        raise ValueError(f"data_mode '{cfg.data_mode}' is not a keyed mode (crop or resize)")
    if cfg.rot90:
        raise ValueError("rot90 is not offered for image sources (flips are: hflip)")
    return SampleRule(cfg.resolution, cfg.channels, mode, bool(cfg.hflip))


def open_training_source(cfg: TrainConfig, data: TrainingData, *, rank: int = 0,
                         world_size: int = 1) -> tuple[BatchSource, dict[str, Any]]:
    """This worker's batch source over the planned data and the card's data description
    (counts of decoded, skipped and held-out images)."""
    rule = sample_rule(cfg)
    info = dict(data.for_workers().info)
    if data.stream:
        from .training_stream import StreamingImages

        src = StreamingImages(data.shards, data.source, data.input_format, rule, cfg.seed,
                              batch_size=cfg.batch_size, rank=rank, world_size=world_size,
                              streams=cfg.data_streams, ot=cfg.ot_coupling,
                              decode_threads=cfg.decode_threads,
                              held_out=(lambda key: held_out(key, cfg.holdout))
                              if cfg.holdout > 0 else None,
                              max_pixels=data.source.max_pixels)
        info.update({"kind": "StreamingImages", "count": data.info["images_listed"]
                     - info.get("holdout", {}).get("count", 0),
                     "count_note": "listed minus held out; unreadable images are skipped as "
                                   "they are met"})
        return src, info
    decoded = read_images(cfg.data, cfg.channels, holdout=cfg.holdout, data=data)
    if not decoded.images:
        reasons = "; ".join(decoded.skipped[:3]) or "the input holds no images"
        raise ValueError(f"--data: no decodable images under '{cfg.data}' ({reasons})")
    src = KeyedImages(decoded.images, rule, cfg.seed, batch_size=cfg.batch_size, rank=rank,
                      world_size=world_size, ot=cfg.ot_coupling)
    info.update({"kind": "KeyedImages", "count": len(decoded.images),
                 "skipped": len(decoded.skipped),
                 "skipped_examples": decoded.skipped[:SKIPPED_LISTED],
                 "sha256": content_sha256(*decoded.images) if len(decoded.images) < 100_000
                 else None, "sha256_of": "decoded uint8 pixels (content_sha256)"})
    return src, info


def build_training_set(cfg: TrainConfig) -> tuple[TrainingSet, dict[str, Any]]:
    """The in-memory set of ``cfg.data`` for the on-device batch path (``data_mode`` "resize":
    ``ImageArraySet``; "multiscale": ``CropSourceSet``) and its description for the card."""
    decoded = read_images(cfg.data, cfg.channels, storage_options=cfg.storage_options,
                          holdout=cfg.holdout)
    if not decoded.images:
        reasons = "; ".join(decoded.skipped[:3]) or "the input holds no images"
        raise ValueError(f"--data: no decodable images under '{cfg.data}' ({reasons})")
    mode = cfg.data_mode
    if mode not in ("resize", "multiscale"):
        raise ValueError(f"the on-device set takes data_mode resize or multiscale, got '{mode}'")
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
            "skipped_examples": decoded.skipped[:SKIPPED_LISTED], "held_out": decoded.held_out,
            "augment": {"hflip": augment.hflip, "rot90": augment.rot90}}
    if hasattr(ds, "scales"):
        info["scales"] = list(ds.scales)
    return ds, info


def write_holdout(data: TrainingData, cfg: TrainConfig) -> str:
    """Write the held-out keys beside the prior (``<prior>_holdout.txt``); returns the URI."""
    from restora_core.storage import write_uri_atomic

    uri = cfg.output.rsplit(".safetensors", 1)[0] + "_holdout.txt"
    keys = data.info["holdout"]["keys"]
    write_uri_atomic(uri, ("\n".join(keys) + "\n" if keys else "").encode(), cfg.storage_options)
    return uri
