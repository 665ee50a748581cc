"""Image folders: every image file under a prefix is one row; masks share its relative path."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..decode import IMAGE_SUFFIXES, ImageError
from ..storage import full_uri, join, list_files, open_fs
from .base import ShardPlan, SourceRow, item_list_requests, read_uri

if TYPE_CHECKING:
    from ..spec import InputSpec


def _image_ids(rel_paths: list[str]) -> list[str]:
    """Relative path without extension; the full relative path where two stems collide."""
    stems = [posixpath.splitext(p)[0] for p in rel_paths]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    return [stem if counts[stem] == 1 else rel for stem, rel in zip(stems, rel_paths)]


def _mask_lookup(source: InputSpec) -> dict[str, str]:
    """Map image relative path (and its stem) -> mask URI, from one listing of the masks prefix."""
    if not source.masks_uri:
        return {}
    fs, root = open_fs(source.masks_uri, source.storage_options)
    lookup: dict[str, str] = {}
    for rel in list_files(fs, root, IMAGE_SUFFIXES):
        uri = full_uri(fs, posixpath.join(root, rel))
        lookup[rel] = uri
        lookup.setdefault("stem:" + posixpath.splitext(rel)[0], uri)
    return lookup


class ImageFolderReader:
    """A folder/prefix of image files, cut into shards of ``shard_size``."""

    name = "images"
    suffixes = IMAGE_SUFFIXES

    def plan(self, source: InputSpec, fs: Any, root: str,
             plan_dir: str) -> list[tuple[ShardPlan, list[dict] | None]]:
        """Shards of ``shard_size`` images, each with its item list [{id, source, mask}]."""
        rels = list_files(fs, root, IMAGE_SUFFIXES)
        masks = _mask_lookup(source)
        items = []
        for rel, image_id in zip(rels, _image_ids(rels)):
            mask = masks.get(rel) or masks.get("stem:" + posixpath.splitext(rel)[0])
            items.append({"id": image_id, "source": full_uri(fs, posixpath.join(root, rel)),
                          "mask": mask})
        shards = []
        for index, start in enumerate(range(0, len(items), source.shard_size)):
            chunk = items[start:start + source.shard_size]
            shard_id = f"shard-{index:05d}"
            shards.append((ShardPlan(shard_id, self.name, len(chunk),
                                     items_uri=join(plan_dir, f"{shard_id}.json")),
                           chunk))
        return shards

    def requests(self, shard: ShardPlan, source: InputSpec,
                 wanted: set[str] | None) -> Iterator[dict[str, Any]]:
        """Batches of the shard's items."""
        return item_list_requests(shard, source, wanted)

    def read(self, request: dict[str, Any], source: InputSpec) -> Iterator[SourceRow]:
        """Read each image and its mask (only tasks that take masks may set masks_uri)."""
        for item in request["items"]:
            row = SourceRow(item["id"], item["source"], item.get("mask"),
                            has_mask_ref=item.get("mask") is not None)
            try:
                row.image = read_uri(row.source_uri, source.storage_options, "image")
                if row.has_mask_ref:
                    row.mask = read_uri(row.mask_uri, source.storage_options, "mask")
            except ImageError as exc:
                row.error = exc
            yield row

    def output_relpath(self, row_id: str, shard_name: str) -> str:
        """The input's own relative layout."""
        return f"{row_id}.png"
