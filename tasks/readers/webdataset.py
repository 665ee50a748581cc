"""WebDataset tar shards, as img2dataset writes them: each .tar is a shard, each key a sample.

Members group into samples by key as WebDataset does: the key is the member path up to the first
'.' of its file name, the rest is the (lower-cased) extension. A sample holds one image member
(``key.png``, ``key.jpg``, ... any image extension), and optionally ``key.mask.<image ext>`` (its
mask: 0 = missing, non-zero = known) and ``key.json`` (img2dataset's metadata; a ``task_params``
object in it sets that row's task parameters). Other members (``key.txt``, ...) are ignored.
Row ids are ``<tar path without .tar>/<key>``. Planning reads each tar's headers once (which on an
object store streams the tar: the headers sit between the members) and stores every sample's
byte ranges, so a batch fetches its members with one ranged read.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from restora_core.degradations import get_task

from ..decode import IMAGE_SUFFIXES, ImageError
from ..storage import full_uri, is_transient_storage_error, join, list_files, open_fs
from .base import ShardPlan, SourceRow, item_list_requests, parse_params

if TYPE_CHECKING:
    from ..spec import JobSpec

_IMAGE_EXTS = tuple(s.lstrip(".") for s in IMAGE_SUFFIXES)
_MASK_EXTS = tuple(f"mask.{e}" for e in _IMAGE_EXTS)
# One ranged read per batch unless the batch's members are spread over much more than they hold.
_SPAN_SLACK_BYTES = 1 << 20
_INDEX_THREADS = 8


def _index_tar(fs: Any, path: str) -> tuple[list[tuple[str, int, int]], str | None]:
    """(name, data offset, size) of each regular member, and why listing stopped early if it did."""
    members: list[tuple[str, int, int]] = []
    try:
        with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            for info in tar:  # reads each header and seeks past the data
                if info.isfile():
                    members.append((info.name, info.offset_data, info.size))
    except Exception as exc:
        if is_transient_storage_error(exc):
            raise
        return members, f"{type(exc).__name__}: {exc}"
    return members, None


def _split(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name the WebDataset way; None for names it skips."""
    while name.startswith("./"):
        name = name[2:]
    folder, base = posixpath.split(name)
    if base.startswith(".") or "." not in base:
        return None
    stem, ext = base.split(".", 1)
    return (posixpath.join(folder, stem) if folder else stem), ext.lower()


def _sample_item(key: str, parts: dict[str, tuple[str, int, int]], dupes: list[str],
                 tar_uri: str, tar_label: str, prefix: str, tar_size: int) -> dict[str, Any]:
    """The stored item of one sample: id, source, member ranges, or the error that it is."""
    item: dict[str, Any] = {"id": f"{prefix}/{key}", "source": f"{tar_uri}#{key}", "member": None,
                            "image": None, "mask": None, "mask_source": None, "json": None,
                            "error": None}
    images = [e for e in parts if e in _IMAGE_EXTS]
    masks = [e for e in parts if e in _MASK_EXTS]
    names = ", ".join(sorted(p[0] for p in parts.values()))
    if len(images) == 1:
        name, offset, size = parts[images[0]]
        item.update(source=f"{tar_uri}#{name}", member=name, image=[offset, size])
    if len(masks) == 1:
        name, offset, size = parts[masks[0]]
        item.update(mask_source=f"{tar_uri}#{name}", mask=[offset, size])
    if "json" in parts:
        item["json"] = list(parts["json"][1:])
    ends = [(p[0], p[1] + p[2]) for p in parts.values() if p[1] + p[2] > tar_size]
    if dupes:
        item["error"] = f"duplicate-member: {', '.join(dupes)} appear(s) twice in {tar_label}"
    elif not images:
        item["error"] = f"image-missing: sample '{key}' of {tar_label} has {names} but no image member"
    elif len(images) > 1:
        item["error"] = f"ambiguous-image: sample '{key}' of {tar_label} has several images: {names}"
    elif len(masks) > 1:
        item["error"] = f"ambiguous-mask: sample '{key}' of {tar_label} has several masks: {names}"
    elif ends:
        item["error"] = (f"truncated: member '{ends[0][0]}' of {tar_label} ends at byte "
                         f"{ends[0][1]}, past the end of the file ({tar_size} bytes)")
    return item


def tar_items(fs: Any, path: str, prefix: str) -> list[dict[str, Any]]:
    """Every sample of one tar as a stored item; a tar that cannot be listed adds an error item."""
    tar_uri = full_uri(fs, path)
    label = f"'{posixpath.basename(path)}'"
    members, broken = _index_tar(fs, path)
    size = fs.size(path)
    samples: dict[str, dict[str, tuple[str, int, int]]] = {}
    dupes: dict[str, list[str]] = {}
    for name, offset, length in members:
        split = _split(name)
        if split is None:
            continue
        key, ext = split
        parts = samples.setdefault(key, {})
        if ext in parts:
            dupes.setdefault(key, []).append(name)
        parts[ext] = (name, offset, length)
    items = [_sample_item(key, parts, dupes.get(key, []), tar_uri, label, prefix, size)
             for key, parts in samples.items()]
    if broken or not items:
        why = (f"not-a-tar: {label} cannot be read as a tar after {len(members)} member(s): {broken}"
               if broken else f"empty-shard: {label} holds no samples")
        items.append({"id": prefix, "source": tar_uri, "member": None, "image": None, "mask": None,
                      "mask_source": None, "json": None, "error": why})
    return items


def _fetch(fs: Any, path: str, ranges: list[list[int]]) -> list[bytes]:
    """Bytes of each [offset, size] range of one file: one read when they lie close together."""
    if not ranges:
        return []
    start = min(r[0] for r in ranges)
    end = max(r[0] + r[1] for r in ranges)
    if end - start <= 2 * sum(r[1] for r in ranges) + _SPAN_SLACK_BYTES:
        span = fs.cat_file(path, start=start, end=end)
        return [span[r[0] - start:r[0] - start + r[1]] for r in ranges]
    return fs.cat_ranges([path] * len(ranges), [r[0] for r in ranges],
                         [r[0] + r[1] for r in ranges])


class WebDatasetReader:
    """Tar shards of samples; one Restora shard per tar."""

    name = "webdataset"
    suffixes = (".tar",)

    def plan(self, spec: JobSpec, fs: Any, root: str) -> list[tuple[ShardPlan, list[dict] | None]]:
        """One shard per tar with its sample list (read from the tar headers)."""
        if fs.isfile(root):
            tars = [(root, posixpath.basename(root))]
        else:
            tars = [(posixpath.join(root, rel), rel) for rel in list_files(fs, root, self.suffixes)]
        # Listing a tar reads it once (headers sit between the members); list several at a time.
        with ThreadPoolExecutor(max_workers=_INDEX_THREADS) as pool:
            listed = list(pool.map(lambda t: tar_items(fs, t[0], prefix=t[1][: -len(".tar")]), tars))
        shards = []
        for index, ((path, rel), items) in enumerate(zip(tars, listed)):
            shard_id = f"shard-{index:05d}"
            shards.append((ShardPlan(shard_id, self.name, len(items),
                                     items_uri=join(spec.output_uri, "plan", f"{shard_id}.json"),
                                     file_uri=full_uri(fs, path), name=rel[: -len(".tar")]),
                           items))
        return shards

    def requests(self, shard: ShardPlan, spec: JobSpec,
                 wanted: set[str] | None) -> Iterator[dict[str, Any]]:
        """Batches of consecutive samples of the tar."""
        return item_list_requests(shard, spec, wanted, file=shard.file_uri)

    def read(self, request: dict[str, Any], spec: JobSpec) -> Iterator[SourceRow]:
        """Fetch the batch's members with one ranged read, then yield a row per sample."""
        items = request["items"]
        wanted = [(i, part) for i, it in enumerate(items) if not it["error"]
                  for part in ("image", "mask", "json") if it[part] is not None
                  and (part != "mask" or get_task(spec.task).side_input == "mask")]
        fs, path = open_fs(request["file"], spec.storage_options)
        fetched: dict[tuple[int, str], bytes] = {}
        failure = None
        try:
            data = _fetch(fs, path, [items[i][part] for i, part in wanted])
            fetched = {key: blob for key, blob in zip(wanted, data)}
        except Exception as exc:
            if is_transient_storage_error(exc):
                raise
            failure = ImageError("unreadable", f"cannot read '{request['file']}': "
                                               f"{type(exc).__name__}: {exc}")
        for i, item in enumerate(items):
            row = SourceRow(item["id"], item["source"], item["mask_source"],
                            has_mask_ref=item["mask_source"] is not None,
                            where=f"member '{item['member']}'" if item["member"] else None)
            try:
                if item["error"]:
                    cause, detail = item["error"].split(": ", 1)
                    raise ImageError(cause, detail)
                if failure is not None:
                    raise failure
                row.image = fetched[(i, "image")]
                row.mask = fetched.get((i, "mask"))
                if (i, "json") in fetched:
                    row.params = _json_params(fetched[(i, "json")], item)
            except ImageError as exc:
                row.error = exc
            yield row

    def output_relpath(self, row_id: str, shard_name: str) -> str:
        """``<tar path>/<key>.png``: the ids already name their tar."""
        return f"{row_id}.png"


def _json_params(blob: bytes, item: dict[str, Any]) -> dict[str, Any]:
    """task_params from a sample's JSON metadata (other fields are img2dataset's, and ignored)."""
    try:
        meta = json.loads(blob.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        member = item["source"].rsplit("#", 1)[-1]
        raise ImageError("bad-json", f"the JSON member beside '{member}' is not JSON: {exc}") from None
    return parse_params(meta.get("task_params")) if isinstance(meta, dict) else {}
