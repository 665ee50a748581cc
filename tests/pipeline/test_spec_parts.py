"""The job spec in parts: each stage's signature names only the part it reads, the config hash
follows the restoration part alone, and the two batch sizes are two settings."""

from __future__ import annotations

import inspect
import json
import pickle
import re

import pytest

from tasks import batch_io, geometry, planning, pool, shard
from tasks.readers import READERS, base
from tasks.spec import InputSpec, JobSpec, OutputSpec, RestorationSpec, RuntimeSpec, parse_spec
from tasks.worker import RestoreWorker
from tasks.writers import WRITERS

BASE = {"input_uri": "in", "output_uri": "out", "task": "box"}
ON_CPU = ("m", "cpu", "fp32")  # config_hash's model id, device kind and resolved precision
PARTS = (InputSpec, OutputSpec, RestorationSpec, RuntimeSpec)
_SPEC_TYPES = re.compile(r"\b(JobSpec|InputSpec|OutputSpec|RestorationSpec|RuntimeSpec)\b")


def _parts_named(function) -> set[str]:
    """The spec types a function's parameters are annotated with (annotations are strings)."""
    params = inspect.signature(function).parameters.values()
    return {name for p in params for name in _SPEC_TYPES.findall(str(p.annotation))}


# stage -> the parts it may take; a JobSpec anywhere here would hide what the stage reads.
STAGES = {
    **{f"{name} reader .{m}": (getattr(r, m), {"InputSpec"})
       for name, r in READERS.items() for m in ("plan", "requests", "read")},
    "item_list_requests": (base.item_list_requests, {"InputSpec"}),
    **{f"{name} writer .{m}": (getattr(w, m), {"OutputSpec"})
       for name, w in WRITERS.items() for m in ("commit", "finish")},
    "load_batch": (batch_io.load_batch, {"InputSpec", "RestorationSpec"}),
    "write_batch": (batch_io.write_batch, {"OutputSpec"}),
    "write_batch_parts": (batch_io.write_batch_parts, {"OutputSpec"}),
    "commit_shard": (batch_io.commit_shard, {"OutputSpec"}),
    "RestoreWorker": (RestoreWorker.__init__, {"RestorationSpec"}),
    "ActorPool": (pool.ActorPool.__init__, {"RuntimeSpec"}),
    "actor_resources": (pool.actor_resources, {"RuntimeSpec"}),
    "actor_device": (pool.actor_device, {"RuntimeSpec"}),
    "batch_requests": (shard.batch_requests, {"InputSpec"}),
    "make_plan": (planning.make_plan, {"InputSpec", "OutputSpec"}),
    "load_or_make_plan": (planning.load_or_make_plan, {"InputSpec", "OutputSpec"}),
    "load_plan": (planning.load_plan, {"OutputSpec"}),
    "check_first_images": (planning.check_first_images, {"InputSpec", "RestorationSpec"}),
    "input_size": (geometry.input_size, {"RestorationSpec"}),
    "fits": (geometry.fits, {"RestorationSpec"}),
    "size_message": (geometry.size_message, {"RestorationSpec"}),
}


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_takes_only_its_part_of_the_spec(stage):
    function, expected = STAGES[stage]
    assert _parts_named(function) == expected


def test_every_flat_field_belongs_to_one_part_and_keeps_that_parts_default():
    owners: dict[str, list[str]] = {}
    for part in PARTS:
        for name in part.model_fields:
            owners.setdefault(name, []).append(part.__name__)
    shared = {name: parts for name, parts in owners.items() if len(parts) > 1}
    assert shared == {"storage_options": ["InputSpec", "OutputSpec", "RestorationSpec"]}
    assert set(JobSpec.model_fields) == {*owners, "batch_size"}
    for part in PARTS:
        for name, field in part.model_fields.items():
            assert JobSpec.model_fields[name].default == field.default, name


def test_the_flat_spec_hands_each_stage_a_frozen_part_with_its_values():
    spec = parse_spec({**BASE, "read_batch": 3, "num_actors": 2, "save_inputs": True,
                       "seed": 7, "storage_options": {"anon": True}})
    assert spec.input == InputSpec(input_uri="in", read_batch=3, storage_options={"anon": True})
    assert spec.output == OutputSpec(output_uri="out", save_inputs=True,
                                     storage_options={"anon": True})
    assert (spec.restoration.seed, spec.restoration.task) == (7, "box")
    assert spec.runtime == RuntimeSpec(num_actors=2)
    for part in (spec.input, spec.output, spec.restoration, spec.runtime):
        assert pickle.loads(pickle.dumps(part)) == part
        with pytest.raises(ValueError, match="frozen"):
            setattr(part, next(iter(type(part).model_fields)), None)


@pytest.mark.parametrize("change", [
    {"read_batch": 64}, {"network_batch": 2}, {"shard_size": 3}, {"num_actors": 8},
    {"cpus_per_actor": 2.0}, {"gpus_per_actor": 1.0}, {"max_inflight_batches": 9},
    {"max_concurrent_shards": 5}, {"precision": "fp32"}, {"storage_options": {"anon": True}},
    {"save_inputs": True}, {"batch_size": 7},
])
def test_runtime_and_batching_changes_keep_the_config_hash(change):
    # precision enters resolved, as config_hash's argument; the request alone changes nothing
    assert parse_spec({**BASE, **change}).config_hash(*ON_CPU) == \
        parse_spec(BASE).config_hash(*ON_CPU)


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"prior": "photo32"}, {"size_policy": "resize"}, {"inputs": "clean"},
    {"steps": 9}, {"task_params": {"box_size": 5}}, {"max_pixels": 1000},
])
def test_what_changes_pixels_or_rows_changes_the_config_hash(change):
    assert parse_spec({**BASE, **change}).config_hash(*ON_CPU) != \
        parse_spec(BASE).config_hash(*ON_CPU)


def test_batch_size_is_a_deprecated_alias_that_sets_both_batch_sizes():
    old = parse_spec({**BASE, "batch_size": 8})
    assert (old.read_batch, old.network_batch) == (8, 8)
    mixed = parse_spec({**BASE, "batch_size": 8, "network_batch": 2})
    assert (mixed.read_batch, mixed.network_batch) == (8, 2)  # the named setting wins
    dumped = old.model_dump(mode="json")
    assert "batch_size" not in dumped
    assert parse_spec(dumped).model_dump(mode="json") == dumped  # the dump says it in new names
    assert JobSpec.model_json_schema()["properties"]["batch_size"]["deprecated"] is True


def test_read_and_network_batch_are_flags_and_batch_size_still_works(tmp_path):
    from flows.cli import build_parser, spec_from_args

    parser = build_parser()
    where = ["restore", "--input", "in", "--output", "out", "--task", "box"]
    spec = spec_from_args(parser.parse_args([*where, "--read-batch", "3", "--network-batch", "5"]))
    assert (spec.read_batch, spec.network_batch) == (3, 5)
    old_file = tmp_path / "old.json"
    old_file.write_text(json.dumps({**BASE, "batch_size": 6}))
    spec = spec_from_args(parser.parse_args(["restore", "--spec", str(old_file)]))
    assert (spec.read_batch, spec.network_batch) == (6, 6)
    new_file = tmp_path / "new.json"
    new_file.write_text(json.dumps({**BASE, "read_batch": 6, "network_batch": 6}))
    spec = spec_from_args(parser.parse_args(["restore", "--spec", str(new_file),
                                             "--batch-size", "4"]))
    assert (spec.read_batch, spec.network_batch) == (4, 4)  # the flag wins over the file
    restore = next(a for a in parser._subparsers._group_actions[0].choices["restore"]._actions
                   if a.dest == "batch_size")
    assert "DEPRECATED" in restore.help and "--read-batch" in restore.help


def test_network_batch_bounds_the_rows_per_pass_and_read_batch_the_request(
        tmp_path, tiny_prior_path, monkeypatch):
    from tasks import worker as worker_module
    from tasks.batch_io import load_batch
    from tasks.worker import worker_kwargs

    from .conftest import png_job

    spec, info, _ = png_job(tmp_path, tiny_prior_path, 5, seed=2, steps=2, read_batch=5,
                            network_batch=2)
    (plan_shard,) = planning.make_plan(spec.input, spec.output).shards
    (request,) = list(shard.batch_requests(plan_shard, spec.input))
    assert len(request["items"]) == 5
    passes = []

    def recording(*args, **kwargs):
        passes.append(kwargs["max_batch"])
        return restore(*args, **kwargs)

    restore = worker_module.restore
    monkeypatch.setattr(worker_module, "restore", recording)
    out = RestoreWorker(**worker_kwargs(spec, info), threads=1)(
        load_batch(request, spec.input, spec.restoration, info))
    assert list(out["status"]) == ["ok"] * 5 and passes == [2]
