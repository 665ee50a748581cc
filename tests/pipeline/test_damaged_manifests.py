"""Damaged manifests on resume: detected, moved aside, their shards re-run; never trusted."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.cleanup import remove_previous_outputs
from tasks.damaged import DamagedManifestError, check_manifest
from tasks.manifest import (
    MANIFEST_COLUMNS,
    SCHEMA_VERSION,
    CommittedManifest,
    manifest_uri,
    rows_to_table,
    write_manifest,
)
from tasks.spec import parse_spec
from tasks.validate import validate_job

from .test_spec_and_manifest import BASE, _row


def _good(uri: str, shard_id: str = "shard-00000", rows: int = 2, config_hash: str = "h") -> None:
    table = rows_to_table({k: [_row(i)[k] for i in range(rows)] for k in MANIFEST_COLUMNS})
    write_manifest(table, uri, shard_id=shard_id, config_hash=config_hash)


def _damage(kind: str, uri: str, shard_id: str = "shard-00000") -> None:
    """Replace shard ``shard_id``'s manifest at ``uri`` by one kind of damage."""
    if kind == "truncated":
        _good(uri, shard_id)
        data = Path(uri).read_bytes()
        Path(uri).write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        Path(uri).write_bytes(b"")
    elif kind == "text":
        Path(uri).write_text("id,status\nimg0,ok\n")
    elif kind == "foreign_parquet":
        pq.write_table(pa.table({"id": ["img0", "img1"], "status": ["ok", "ok"]}), uri)
    elif kind == "other_shard":
        _good(uri, shard_id="shard-00007")
    elif kind == "short":
        _good(uri, shard_id, rows=1)
    elif kind == "bad_status":
        table = rows_to_table({k: [{**_row(i), "status": "maybe"}[k] for i in range(2)]
                               for k in MANIFEST_COLUMNS})
        write_manifest(table, uri, shard_id=shard_id, config_hash="h")
    elif kind == "bad_version":
        _good(uri, shard_id)
        table = pq.read_table(uri)
        pq.write_table(table.replace_schema_metadata(
            {**table.schema.metadata, b"restora.schema_version": b"two"}), uri)
    else:
        raise AssertionError(kind)


KINDS = ["truncated", "empty", "text", "foreign_parquet", "other_shard", "short", "bad_status",
         "bad_version"]


def test_a_sound_manifest_is_trusted_and_a_missing_one_is_none(tmp_path):
    uri = str(tmp_path / "shard-00000.parquet")
    assert check_manifest(uri, "shard-00000", 2) is None
    _good(uri)
    assert check_manifest(uri, "shard-00000", 2) == CommittedManifest("h", SCHEMA_VERSION)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_damage_is_detected_with_a_reason(tmp_path, kind):
    uri = str(tmp_path / "shard-00000.parquet")
    _damage(kind, uri)
    with pytest.raises(DamagedManifestError) as err:
        check_manifest(uri, "shard-00000", 2)
    assert str(err.value)


def test_resume_moves_damaged_manifests_aside_and_reruns_their_shards(tmp_path, tiny_prior_path):
    from flows.restore_dataset import shards_to_run
    from tasks.planning import Plan, ShardPlan

    (tmp_path / "in").mkdir()  # an output beside the input, not inside it
    spec = parse_spec({**BASE, "input_uri": str(tmp_path / "in"), "output_uri": str(tmp_path / "out"),
                       "prior": tiny_prior_path})
    info = validate_job(spec)
    shards = [ShardPlan(shard_id=f"shard-{i:05d}", kind="images", count=2)
              for i in range(len(KINDS) + 1)]
    plan = Plan(input_uri=spec.input_uri, input_format="images", masks_uri=None, shards=shards)
    (tmp_path / "out" / "manifests").mkdir(parents=True)
    uris = [manifest_uri(spec.output_uri, s.shard_id) for s in shards]
    _good(uris[0], config_hash=info.config_hash)
    for i, kind in enumerate(KINDS, start=1):
        _damage(kind, uris[i], shards[i].shard_id)

    work, skipped, damaged = shards_to_run(plan, spec, info, retry_failed=False, overwrite=False)

    assert skipped == 1
    assert [s.shard_id for s, _ in work] == [s.shard_id for s in shards[1:]]
    assert [d.shard_id for d in damaged] == [s.shard_id for s in shards[1:]]
    left = sorted(p.name for p in (tmp_path / "out" / "manifests").iterdir())
    assert left == ["shard-00000.parquet"]
    aside = sorted(p.name for p in (tmp_path / "out" / "damaged").iterdir())
    assert len(aside) == len(KINDS)
    assert all(name.startswith(f"shard-{i:05d}.parquet.") for i, name in enumerate(aside, start=1))
    assert {d.moved_to for d in damaged} == {str(tmp_path / "out" / "damaged" / n) for n in aside}
    reasons = {d.shard_id: d.reason for d in damaged}
    assert "unreadable Parquet" in reasons["shard-00001"]
    assert "not a Restora manifest" in reasons["shard-00004"]
    assert "written for shard 'shard-00007'" in reasons["shard-00005"]
    assert "1 row(s) for a shard of 2" in reasons["shard-00006"]
    # Run again: nothing is damaged any more, the moved files are not looked at.
    _, _, again = shards_to_run(plan, spec, info, retry_failed=False, overwrite=False)
    assert again == []


def test_overwrite_moves_an_unreadable_manifest_aside_instead_of_crashing(tmp_path):
    out = tmp_path / "out"
    (out / "manifests").mkdir(parents=True)
    _good(str(out / "manifests" / "shard-00000.parquet"))
    (out / "manifests" / "shard-00001.parquet").write_bytes(b"PAR1 not really")
    removed = remove_previous_outputs(str(out))
    assert removed["manifests"] == 1 and removed["damaged"] == 1
    assert not (out / "manifests").exists() or not list((out / "manifests").iterdir())
    assert [p.name.split(".parquet.")[0] for p in (out / "damaged").iterdir()] == ["shard-00001"]
