"""Running out of memory on a batch halves it until it fits; it never blames an image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.batch_io import load_batch
from tasks.worker import BatchOutOfMemory, RestoreWorker, is_out_of_memory, worker_kwargs

from .conftest import png_job


def _batch(tmp_path, tiny_prior_path, n: int):
    spec, info, items = png_job(tmp_path, tiny_prior_path, n, seed=3, steps=2, batch_size=n)
    request = {"kind": "images", "shard_id": "s", "items": items}
    return spec, info, load_batch(request, spec.input, spec.restoration, info)


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
    plain = RestoreWorker(**worker_kwargs(spec, info), threads=1)(batch)
    worker = _FitsAtMost(**worker_kwargs(spec, info), threads=1)

    out = worker(batch)

    assert list(out["status"]) == ["ok"] * 5
    assert worker.attempts == [5, 2, 3, 1, 2] and worker.oom_splits == 2
    for a, b in zip(plain["restored"], out["restored"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)  # each image's noise is its own


def test_one_image_that_does_not_fit_fails_the_batch_and_blames_no_image(tmp_path,
                                                                          tiny_prior_path):
    spec, info, batch = _batch(tmp_path, tiny_prior_path, 4)
    worker = _FitsAtMost(**worker_kwargs(spec, info), threads=1)
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

    out = _FailsOnIm1(**worker_kwargs(spec, info), threads=1)(batch)
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
