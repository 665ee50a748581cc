"""Plan a run once: list the inputs, cut them into shards, store the plan beside the outputs.

A rerun reads the stored plan instead of listing again, so it sees the same shards even if the
input listing changed. Layout under the output prefix: ``plan/plan.json`` (the shard list) and,
for formats with item lists (image folders, tar shards), ``plan/<shard_id>.json`` (that shard's
items), so the flow process only ever holds the shard list, never every item. The formats
themselves live in ``tasks.readers``.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from .decode import ImageError, image_size
from .geometry import fits, size_message
from .readers import InputFormatError, ShardPlan, detect_format, get_reader
from .spec import JobSpec, JobSpecError, RunInfo
from .storage import join, open_fs, write_atomic

__all__ = ["Plan", "ShardPlan", "check_first_images", "load_or_make_plan", "load_plan",
           "make_plan", "plan_uri"]

PLAN_VERSION = 1
# Images whose headers ``check_first_images`` reads: enough that one odd image at the start of
# a mixed-size dataset does not refuse the job, few enough to cost nothing.
PROBE_IMAGES = 4


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
    try:
        planned = get_reader(fmt).plan(spec, fs, root)
    except InputFormatError as exc:
        raise JobSpecError(f"input_uri: {exc}") from None
    for shard, items in planned:
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


def check_first_images(plan: Plan, spec: JobSpec, info: RunInfo) -> None:
    """JobSpecError when none of the first ``PROBE_IMAGES`` readable images of the plan has a
    size the job accepts (their headers only): a mistake that hits every image, found before
    any actor starts. Unreadable images are left to their rows; any size passes resize/crop."""
    if spec.size_policy != "error" or not plan.shards:
        return
    probe = spec.model_copy(update={"batch_size": PROBE_IMAGES})
    shard = plan.shards[0]
    reader = get_reader(shard.kind)
    request = next(iter(reader.requests(shard, probe, None)), None)
    refused = []
    for row in itertools.islice(reader.read(request, probe), PROBE_IMAGES) if request else ():
        if row.error is not None or row.image is None:
            continue
        try:
            width, height = image_size(row.image, max_pixels=spec.max_pixels)
        except ImageError:
            continue
        params = {**spec.task_params, **row.params}
        if fits(spec, info, params, width, height):
            return
        refused.append((row.source_uri, size_message(spec, info, params, width, height)))
    if refused:
        first, why = refused[0]
        raise JobSpecError(f"input_uri: none of the first {len(refused)} image(s) of "
                           f"'{spec.input_uri}' fits this job ('{first}': {why})")
