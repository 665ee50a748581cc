"""Image folders: every image file under a prefix is one row; masks share its relative path."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from restora_core.degradations import get_task

from ..decode import IMAGE_SUFFIXES, ImageError
from ..storage import full_uri, join, list_files, open_fs
from .base import ShardPlan, SourceRow, item_list_requests, read_uri

if TYPE_CHECKING:
    from ..spec import JobSpec


def _image_ids(rel_paths: list[str]) -> list[str]:
    """Relative path without extension; the full relative path where two stems collide."""
    stems = [posixpath.splitext(p)[0] for p in rel_paths]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [stem if counts[stem] == 1 else rel for stem, rel in zip(stems, rel_paths)]


def _mask_lookup(spec: JobSpec) -> dict[str, str]:
    """Map image relative path (and its stem) -> mask URI, from one listing of the masks prefix."""
    if not spec.masks_uri:
        return {}
    fs, root = open_fs(spec.masks_uri, spec.storage_options)
    lookup: dict[str, str] = {}
    for rel in list_files(fs, root, IMAGE_SUFFIXES):
        uri = full_uri(fs, posixpath.join(root, rel))
        lookup[rel] = uri
        lookup.setdefault("stem:" + posixpath.splitext(rel)[0], uri)
    return lookup


class ImageFolderReader:
    """A folder/prefix of image files, cut into shards of ``spec.shard_size``."""

    name = "images"
    suffixes = IMAGE_SUFFIXES

    def plan(self, spec: JobSpec, fs: Any, root: str) -> list[tuple[ShardPlan, list[dict] | None]]:
        """Shards of ``shard_size`` images, each with its item list [{id, source, mask}]."""
        rels = list_files(fs, root, IMAGE_SUFFIXES)
        masks = _mask_lookup(spec)
        items = []
        for rel, image_id in zip(rels, _image_ids(rels)):
            mask = masks.get(rel) or masks.get("stem:" + posixpath.splitext(rel)[0])
            items.append({"id": image_id, "source": full_uri(fs, posixpath.join(root, rel)),
                          "mask": mask})
        shards = []
        for index, start in enumerate(range(0, len(items), spec.shard_size)):
            chunk = items[start:start + spec.shard_size]
            shard_id = f"shard-{index:05d}"
            shards.append((ShardPlan(shard_id, self.name, len(chunk),
                                     items_uri=join(spec.output_uri, "plan", f"{shard_id}.json")),
                           chunk))
        return shards

    def requests(self, shard: ShardPlan, spec: JobSpec,
                 wanted: set[str] | None) -> Iterator[dict[str, Any]]:
        """Batches of the shard's items."""
        return item_list_requests(shard, spec, wanted)

    def read(self, request: dict[str, Any], spec: JobSpec) -> Iterator[SourceRow]:
        """Read each image (and its mask when the task uses one)."""
        for item in request["items"]:
            row = SourceRow(item["id"], item["source"], item.get("mask"),
                            has_mask_ref=item.get("mask") is not None)
            try:
                row.image = read_uri(row.source_uri, spec.storage_options, "image")
                if row.has_mask_ref and get_task(spec.task).side_input == "mask":
                    row.mask = read_uri(row.mask_uri, spec.storage_options, "mask")
            except ImageError as exc:
                row.error = exc
            yield row

    def output_relpath(self, row_id: str, shard_name: str) -> str:
        """The input's own relative layout."""
        return f"{row_id}.png"
