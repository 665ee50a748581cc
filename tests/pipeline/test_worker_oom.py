"""Running out of memory on a batch halves it until it fits; it never blames an image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.batch_io import load_batch
from tasks.spec import RunInfo, parse_spec
from tasks.worker import BatchOutOfMemory, RestoreWorker, is_out_of_memory

from .conftest import png_bytes


def _batch(tmp_path, tiny_prior_path, n: int):
    rng = np.random.default_rng(3)
    items = []
    for i in range(n):
        path = tmp_path / "in" / f"im{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png_bytes(rng.integers(0, 256, (16, 16), dtype=np.uint8)))
        items.append({"id": path.stem, "source": str(path)})
    spec = parse_spec({"input_uri": str(tmp_path / "in"), "output_uri": str(tmp_path / "out"),
                       "task": "box", "steps": 2, "prior": tiny_prior_path, "batch_size": n})
    from restora_core import load_prior

    prior = load_prior(tiny_prior_path)
    info = RunInfo(prior.model_id, spec.config_hash(prior.model_id, "cpu", "fp32"), 1, 16, "cpu",
                   "fp32")
    return spec, info, load_batch({"kind": "images", "shard_id": "s", "items": items}, spec, info)


class _FitsAtMost(RestoreWorker):
    """A worker whose device holds at most ``limit`` images per pass (the allocation fails
    above it, as a CUDA allocation would)."""

    limit = 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.attempts: list[int] = []

    def _restore_group(self, rows, batch, params, out):
        self.attempts.append(len(rows))
        if len(rows) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        super()._restore_group(rows, batch, params, out)


def test_a_batch_that_runs_out_of_memory_is_halved_until_it_fits(tmp_path, tiny_prior_path):
    spec, info, batch = _batch(tmp_path, tiny_prior_path, 5)
    plain = RestoreWorker(spec, info, threads=1)(batch)
    worker = _FitsAtMost(spec, info, threads=1)

    out = worker(batch)

    assert list(out["status"]) == ["ok"] * 5
    assert worker.attempts == [5, 2, 3, 1, 2] and worker.oom_splits == 2
    for a, b in zip(plain["restored"], out["restored"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)  # each image's noise is its own


def test_one_image_that_does_not_fit_fails_the_batch_and_blames_no_image(tmp_path,
                                                                          tiny_prior_path):
    spec, info, batch = _batch(tmp_path, tiny_prior_path, 4)
    worker = _FitsAtMost(spec, info, threads=1)
    worker.limit = 0

    with pytest.raises(BatchOutOfMemory, match=r"one image \(im0\) on cpu.*lower --samples"):
        worker(batch)
    assert worker.attempts == [4, 2, 1]


def test_other_sampler_failures_still_become_error_rows_of_the_images_that_fail(
        tmp_path, tiny_prior_path):
    spec, info, batch = _batch(tmp_path, tiny_prior_path, 3)

    class _FailsOnIm1(RestoreWorker):
        def _restore_group(self, rows, batch, params, out):
            if any(batch["id"][i] == "im1" for i in rows):
                raise ValueError("NaN in the velocity")
            super()._restore_group(rows, batch, params, out)

    out = _FailsOnIm1(spec, info, threads=1)(batch)
    assert list(out["status"]) == ["ok", "error", "ok"]
    assert out["error"][1] == "restore-failed: NaN in the velocity"


@pytest.mark.parametrize(("exc", "expected"), [
    (torch.OutOfMemoryError("CUDA out of memory."), True),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"), True),
    (RuntimeError("HIP out of memory"), True),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_is_told_from_other_failures(exc, expected):
    assert is_out_of_memory(exc) is expected
