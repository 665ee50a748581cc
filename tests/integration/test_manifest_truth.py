"""The manifest says what ran: sampler settings from the result, the resolved config hash, and a
schema version that an older output is checked against on rerun."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from restora_core import method_nfe
from restora_core.samplers import get_method, params_dict
from tasks.manifest import MANIFEST_COLUMNS, SCHEMA_VERSION, committed_manifest
from tasks.spec import JobSpec

from .conftest import image_folder

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

# Corrections each sampler runs with (only restora_flow corrects; 1 is its box default).
CORRECTIONS = {"restora_flow": 1, "mask_ode": 0, "ot_ode": 0, "pnp_flow": 0}


def test_manifest_rows_record_the_settings_each_sampler_used(pipeline, tmp_path, tiny_prior):
    src = image_folder(tmp_path / "in", 3, seed=11)
    (src / "broken.png").write_bytes(b"not a png")
    for method, corrections in CORRECTIONS.items():
        out = tmp_path / method
        spec = JobSpec(input_uri=str(src), output_uri=str(out), task="box", prior=tiny_prior,
                       method=method, steps=4, batch_size=4, num_actors=1)
        params = params_dict(get_method(method).make_params("box", {"steps": 4}))
        summary = pipeline(spec=spec)
        assert summary["images"] == {"total": 4, "ok": 3, "error": 1}, method
        table = pq.read_table(out / "manifests")
        rows = {r["id"]: r for r in table.select(list(MANIFEST_COLUMNS)).to_pylist()}
        for i in range(3):
            row = rows[f"img{i}"]
            assert (row["steps"], row["corrections"]) == (4, corrections), method
            assert row["nfe"] == method_nfe(method, steps=4, task="box"), method
            assert json.loads(row["method_params"]) == params, method
        broken = rows["broken"]  # never restored: no sampler settings to report
        assert broken["status"] == "error"
        assert [broken[k] for k in ("steps", "corrections", "nfe", "method_params")] == [None] * 4
        # This cluster has no GPU: the hash is that of CPU actors at the precision auto became.
        model_id = table["model_id"][0].as_py()
        assert summary["config_hash"] == spec.config_hash(model_id, "cpu", "fp32")
        committed = committed_manifest(str(out / "manifests" / "shard-00000.parquet"))
        assert committed.schema_version == SCHEMA_VERSION
        assert committed.config_hash == summary["config_hash"]


def test_a_rerun_over_an_older_schema_reruns_that_shard_and_keeps_the_others(pipeline, tmp_path,
                                                                              tiny_prior):
    src = image_folder(tmp_path / "in", 4, seed=12)
    spec = JobSpec(input_uri=str(src), output_uri=str(tmp_path / "out"), task="box",
                   prior=tiny_prior, steps=4, shard_size=2, batch_size=2, num_actors=1)
    pipeline(spec=spec)
    manifests = tmp_path / "out" / "manifests"
    old = manifests / "shard-00000.parquet"
    table = pq.read_table(old)
    meta = {k: v for k, v in table.schema.metadata.items() if k != b"restora.schema_version"}
    pq.write_table(table.drop_columns(["method_params"]).replace_schema_metadata(meta), old)
    assert committed_manifest(str(old)).schema_version == 1
    kept = (manifests / "shard-00001.parquet").stat().st_mtime_ns

    again = pipeline(spec=spec)

    assert again["shards"]["run"] == 1 and again["shards"]["skipped"] == 1
    assert again["images"] == {"total": 4, "ok": 4, "error": 0}
    assert committed_manifest(str(old)).schema_version == SCHEMA_VERSION
    assert pq.read_table(old)["method_params"].null_count == 0
    assert (manifests / "shard-00001.parquet").stat().st_mtime_ns == kept
