"""The worker runs two calls at once (one samples while the next prepares) without changing pixels,
and it is importable without Ray, Prefect or pydantic (the GPU benchmark drives it in-process)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tasks.batch_io import load_batch
from tasks.worker import RestoreWorker, worker_kwargs

from .conftest import png_job

REPO = Path(__file__).resolve().parents[2]


def test_worker_and_batch_io_import_without_ray_prefect_or_pydantic():
    code = ("import sys, tasks.worker, tasks.batch_io; "
            "print(sorted(m for m in ('ray', 'prefect', 'pydantic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == "[]"


def test_concurrent_worker_calls_give_the_same_pixels_as_sequential_ones(tmp_path, tiny_prior_path):
    spec, info, sources = png_job(tmp_path, tiny_prior_path, 6, seed=0, steps=3)
    batches = [load_batch({"kind": "images", "shard_id": "s", "items": sources[i:i + 2]},
                          spec.input, spec.restoration, info)
               for i in range(0, 6, 2)]
    worker = RestoreWorker(**worker_kwargs(spec, info), threads=1)
    sequential = [worker(b) for b in batches]
    with ThreadPoolExecutor(2) as pool:
        concurrent = list(pool.map(worker, batches))
    for a, b in zip(sequential, concurrent, strict=True):
        assert list(a["status"]) == ["ok", "ok"]
        for x, y in zip(a["restored"], b["restored"], strict=True):
            np.testing.assert_array_equal(x, y)
