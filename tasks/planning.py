"""Plan a run once: list the inputs, cut them into shards, store the plan beside the outputs.

A rerun reads the stored plan instead of listing again, so it sees the same shards even if the
input listing changed. Layout under the output prefix: ``plan/plan.json`` (the shard list) and,
for formats with item lists (image folders, tar shards), ``plan/<shard_id>.json`` (that shard's
items), so the flow process only ever holds the shard list, never every item. The formats
themselves live in ``tasks.readers``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from .readers import ShardPlan, detect_format, get_reader
from .spec import JobSpec, JobSpecError
from .storage import join, open_fs, write_atomic

__all__ = ["Plan", "ShardPlan", "load_or_make_plan", "load_plan", "make_plan", "plan_uri"]

PLAN_VERSION = 1


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


def make_plan(spec: JobSpec) -> Plan:
    """List the inputs, cut shards, and store the plan (and per-shard item lists) in the output."""
    fs, root = open_fs(spec.input_uri, spec.storage_options)
    if not fs.exists(root):
        raise JobSpecError(f"input_uri: '{spec.input_uri}' does not exist")
    fmt = detect_format(fs, root) if spec.input_format == "auto" else spec.input_format
    plan = Plan(spec.input_uri, fmt, spec.masks_uri,
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    out_fs, _ = open_fs(spec.output_uri, spec.storage_options)
    for shard, items in get_reader(fmt).plan(spec, fs, root):
        if items is not None:
            write_atomic(out_fs, open_fs(shard.items_uri, spec.storage_options)[1],
                         json.dumps(items).encode())
        plan.shards.append(shard)
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
