"""The I/O stages run in processes that never import torch, Prefect or Ray's task code.

Ray runs ``load_batch``, ``write_batch`` and ``commit_shard`` (with every output writer of
``tasks.writers``) in its pooled I/O workers; each
worker imports what unpickling the function and its arguments needs. With torch that is ~280 MiB
per worker, without it ~100 MiB, and a node runs up to 4 of them per CPU.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks.batch_io import load_batch
from tasks.worker import RestoreWorker
from tasks.writers import writer_names

from .conftest import png_job

REPO = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: unpickle the stage arguments, run the three stages, report.
_CHILD = """
import json, pickle, sys
from tasks.batch_io import commit_shard, load_batch, write_batch
from tasks.writers import get_writer
request, spec, info, restored = pickle.loads(open(sys.argv[1], "rb").read())
loaded = load_batch(request, spec, info)
written = write_batch(restored, spec, info)
counts = commit_shard("shard-00000", [written], None, spec, info)
get_writer(info.output_format).finish(spec.output_uri, [], {})
print(json.dumps({"loaded": [str(s) for s in loaded["status"]], "counts": counts,
                  "imported": sorted(m for m in ("torch", "prefect", "ray", "restora_core.samplers")
                                     if m in sys.modules)}))
"""


@pytest.mark.parametrize("fmt", writer_names())
def test_load_write_and_commit_run_without_torch_prefect_or_ray(tmp_path, tiny_prior_path, fmt):
    spec, info, items = png_job(tmp_path, tiny_prior_path, 3, seed=5, steps=2, batch_size=3,
                                output_format=fmt)
    info = info.writing(spec, fmt)
    request = {"kind": "images", "shard_id": "shard-00000", "items": items, "preview": True}
    restored = RestoreWorker(spec, info, threads=1)(load_batch(request, spec, info))
    args = tmp_path / "args.pkl"
    args.write_bytes(pickle.dumps((request, spec, info, restored)))

    proc = subprocess.run([sys.executable, "-c", _CHILD, str(args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)

    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["imported"] == [], f"the I/O stages imported {report['imported']}"
    assert report["loaded"] == ["ok"] * 3
    assert report["counts"] == {"rows": 3, "ok": 3, "error": 0}
    manifest = pq.read_table(tmp_path / "out" / "manifests" / "shard-00000.parquet")
    assert manifest["status"].to_pylist() == ["ok"] * 3
    written = {"images": "images", "parquet": "data/shard-00000.parquet",
               "webdataset": "data/shard-00000.tar"}[fmt]
    assert (tmp_path / "out" / written).exists()
    if fmt == "images":
        assert sorted(p.name for p in (tmp_path / "out" / "images").glob("*.png")) == [
            "im0.png", "im1.png", "im2.png"]
