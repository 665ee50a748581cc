"""Plan a run once: list the inputs, cut them into shards, store the plan beside the outputs.

A rerun reads the stored plan instead of listing again, so it sees the same shards even if the
input listing changed. Layout under the output prefix: ``plan/plan.json`` (the shard list) and,
for folder inputs, ``plan/<shard_id>.json`` (that shard's items), so the flow process only ever
holds the shard list, never every item.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow.parquet as pq

from .decode import IMAGE_SUFFIXES
from .spec import JobSpec, JobSpecError
from .storage import full_uri, join, list_files, open_fs, write_atomic

PLAN_VERSION = 1


@dataclass(frozen=True)
class ShardPlan:
    """One shard: a unit of work, retry and resume."""

    shard_id: str
    kind: str  # "images" or "parquet"
    count: int
    items_uri: str | None = None  # images: JSON list of {id, source, mask}
    file_uri: str | None = None  # parquet: the shard file


@dataclass
class Plan:
    """The shards of a run, as listed when the run was first planned."""

    input_uri: str
    input_format: str
    masks_uri: str | None
    shards: list[ShardPlan] = field(default_factory=list)
    created: str = ""
    version: int = PLAN_VERSION

    @property
    def total_items(self) -> int:
        """Images over all shards."""
        return sum(s.count for s in self.shards)

    def to_json(self) -> str:
        """Plan as JSON text."""
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Plan from JSON text written by ``to_json``."""
        data = json.loads(text)
        shards = [ShardPlan(**s) for s in data.pop("shards")]
        return cls(shards=shards, **data)


def plan_uri(output_uri: str) -> str:
    """Where the run's plan is stored."""
    return join(output_uri, "plan", "plan.json")


def _detect_format(spec: JobSpec, fs: Any, root: str) -> str:
    if spec.input_format != "auto":
        return spec.input_format
    if root.endswith(".parquet"):
        return "parquet"
    return "parquet" if list_files(fs, root, (".parquet",)) and not list_files(
        fs, root, IMAGE_SUFFIXES) else "images"


def _image_ids(rel_paths: list[str]) -> list[str]:
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


def _plan_images(spec: JobSpec, fs: Any, root: str) -> list[tuple[ShardPlan, list[dict]]]:
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
        shard = ShardPlan(shard_id, "images", len(chunk),
                          items_uri=join(spec.output_uri, "plan", f"{shard_id}.json"))
        shards.append((shard, chunk))
    return shards


def _plan_parquet(spec: JobSpec, fs: Any, root: str) -> list[ShardPlan]:
    files = [root] if root.endswith(".parquet") else [
        posixpath.join(root, rel) for rel in list_files(fs, root, (".parquet",))]
    shards = []
    for index, path in enumerate(files):
        with fs.open(path, "rb") as handle:
            rows = pq.read_metadata(handle).num_rows
        shards.append(ShardPlan(f"shard-{index:05d}", "parquet", rows,
                                file_uri=full_uri(fs, path)))
    return shards


def make_plan(spec: JobSpec) -> Plan:
    """List the inputs, cut shards, and store the plan (and per-shard item lists) in the output."""
    fs, root = open_fs(spec.input_uri, spec.storage_options)
    if not fs.exists(root):
        raise JobSpecError(f"input_uri: '{spec.input_uri}' does not exist")
    fmt = _detect_format(spec, fs, root)
    plan = Plan(spec.input_uri, fmt, spec.masks_uri,
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    out_fs, _ = open_fs(spec.output_uri, spec.storage_options)
    if fmt == "images":
        for shard, chunk in _plan_images(spec, fs, root):
            write_atomic(out_fs, open_fs(shard.items_uri, spec.storage_options)[1],
                         json.dumps(chunk).encode())
            plan.shards.append(shard)
    else:
        plan.shards.extend(_plan_parquet(spec, fs, root))
    if not plan.shards:
        raise JobSpecError(f"input_uri: no {fmt} found under '{spec.input_uri}'")
    _, path = open_fs(plan_uri(spec.output_uri), spec.storage_options)
    write_atomic(out_fs, path, plan.to_json().encode())
    return plan


def load_plan(spec: JobSpec) -> Plan | None:
    """The stored plan of this output, or None when there is none yet."""
    fs, path = open_fs(plan_uri(spec.output_uri), spec.storage_options)
    if not fs.exists(path):
        return None
    return Plan.from_json(fs.cat_file(path).decode())


def load_or_make_plan(spec: JobSpec, *, replan: bool = False) -> tuple[Plan, bool]:
    """(plan, reused): reuse the stored plan unless ``replan``; refuse one made for other inputs."""
    if not replan:
        plan = load_plan(spec)
        if plan is not None:
            if (plan.input_uri, plan.masks_uri) != (spec.input_uri, spec.masks_uri):
                raise JobSpecError(
                    f"output_uri: '{spec.output_uri}' holds a plan for input '{plan.input_uri}' "
                    f"(masks {plan.masks_uri}); use another output or --overwrite")
            return plan, True
    return make_plan(spec), False


def shard_items(shard: ShardPlan, storage_options: dict[str, Any] | None = None) -> list[dict]:
    """A folder shard's items: [{id, source, mask}] (read from its stored item list)."""
    if shard.kind != "images" or not shard.items_uri:
        raise ValueError(f"shard {shard.shard_id} is a {shard.kind} shard; it has no item list")
    fs, path = open_fs(shard.items_uri, storage_options)
    return json.loads(fs.cat_file(path).decode())
