"""The device stage runs the spec's method with the task's published defaults, and the manifest
records every parameter as it ran."""

from __future__ import annotations

import json

import numpy as np
import pytest

from restora_core.samplers import get_method
from tasks.batch_io import load_batch, write_batch
from tasks.manifest import rows_to_table
from tasks.spec import parse_spec
from tasks.validate import validate_job
from tasks.worker import RestoreWorker, worker_kwargs

from .conftest import png_bytes


@pytest.mark.parametrize(("method", "task"), [("ot_ode", "box"), ("flower", "denoise"),
                                              ("pnp_flow", "random"), ("restora_flow", "superres")])
def test_worker_runs_the_method_at_the_task_defaults_and_the_manifest_says_so(
        tmp_path, tiny_prior_path, method, task):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        (src / f"img{i}.png").write_bytes(png_bytes(rng.integers(0, 255, (16, 16), dtype=np.uint8)))
    spec = parse_spec({"input_uri": str(src), "output_uri": str(tmp_path / "out"), "task": task,
                       "method": method, "prior": tiny_prior_path, "inputs": "clean",
                       "method_params": {"steps": 3}})
    info = validate_job(spec)
    items = [{"id": f"img{i}", "source": str(src / f"img{i}.png"), "mask": None} for i in range(2)]
    request = {"kind": "images", "shard_id": "shard-00000", "items": items}
    batch = load_batch(request, spec.input, spec.restoration, info)
    restored = RestoreWorker(**worker_kwargs(spec, info), threads=1)(batch)
    assert list(restored["status"]) == ["ok", "ok"], list(restored["error"])
    table = rows_to_table(write_batch(restored, spec.output, info))
    ran = json.loads(table["method_params"][0].as_py())
    assert ran == get_method(method).defaults(task) | {"steps": 3}
    assert table["steps"].to_pylist() == [3, 3]
    assert table["nfe"].to_pylist() == [get_method(method).cost(task, {"steps": 3})] * 2
