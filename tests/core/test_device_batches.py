"""Batches drawn on the training device: a pure function of (seed, step), an epoch visits every
image once, crops are real windows of the sources at a training scale (up to the dihedral
transforms), zero-weight sources are never drawn, and the OT pairing is the exact optimum."""

from __future__ import annotations

import numpy as np
import torch

from restora_core.datasets import Augment, CropSourceSet, ImageArraySet, block_mean
from restora_core.training.device_batches import DeviceBatches
from restora_core.training.flow_matching import ot_permutation


def numbered_images(n: int, size: int = 4) -> np.ndarray:
    """Image i is filled with the value i (so a batch tells which images it holds)."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None],
                           (n, size, size, 1)).copy()


def to_u8(x: torch.Tensor) -> np.ndarray:
    return np.rint((x.numpy() + 1.0) * 127.5).astype(np.uint8)


def test_a_step_draws_the_same_batch_every_time_and_steps_differ():
    ds = ImageArraySet(np.random.default_rng(0).integers(0, 256, (20, 8, 8, 1), np.uint8), 6,
                       augment=Augment(hflip=True, rot90=True))
    a = DeviceBatches(ds, "cpu", seed=3).draw(5, 8, ot=True)
    b = DeviceBatches(ds, "cpu", seed=3).draw(5, 8, ot=True)
    c = DeviceBatches(ds, "cpu", seed=3).draw(6, 8, ot=True)
    assert torch.equal(a.x1, b.x1) and torch.equal(a.x0, b.x0) and torch.equal(a.t, b.t)
    assert not torch.equal(a.x1, c.x1)
    assert a.x1.shape == (8, 1, 6, 6) and a.x1.min() >= -1 and a.x1.max() <= 1


def test_an_epoch_visits_every_image_exactly_once():
    n, b = 24, 8
    batches = DeviceBatches(ImageArraySet(numbered_images(n), 4), "cpu", seed=1)
    seen = np.concatenate([to_u8(batches.images(k, b))[:, 0, 0, 0] for k in range(n // b)])
    assert sorted(seen.tolist()) == list(range(n))
    # a batch straddling two epochs ends the first (the 2 images batch 0 left) and starts the
    # next with distinct images
    small = DeviceBatches(ImageArraySet(numbered_images(10), 4), "cpu")
    first = set(to_u8(small.images(0, 8))[:, 0, 0, 0].tolist())
    straddle = to_u8(small.images(1, 8))[:, 0, 0, 0].tolist()
    assert set(straddle[:2]) == set(range(10)) - first
    assert len(set(straddle[2:])) == 6


def _windows(sources: list[np.ndarray], res: int, scales: tuple[int, ...]) -> set[bytes]:
    """Every crop the set may produce: all grid windows of every level, in all 8 symmetries."""
    out = set()
    for s in scales:
        for src in sources:
            lv = block_mean(src, s)
            for y in range(lv.shape[0] - res + 1):
                for x in range(lv.shape[1] - res + 1):
                    w = lv[y:y + res, x:x + res].transpose(2, 0, 1)
                    for f in (False, True):
                        v = w[:, :, ::-1] if f else w
                        for k in range(4):
                            out.add(np.ascontiguousarray(np.rot90(v, k, (1, 2))).tobytes())
    return out


def test_crops_are_windows_of_the_sources_at_a_training_scale():
    rng = np.random.default_rng(2)
    sources = [rng.integers(0, 256, (12, 10, 3), np.uint8), rng.integers(0, 256, (9, 14, 3),
                                                                         np.uint8)]
    ds = CropSourceSet(sources, 4, scales=(1, 2), augment=Augment(hflip=True, rot90=True))
    allowed = _windows(sources, 4, (1, 2))
    batches = DeviceBatches(ds, "cpu", seed=0)
    crops = np.concatenate([to_u8(batches.images(k, 16)) for k in range(4)])
    assert crops.shape == (64, 3, 4, 4)
    assert all(c.tobytes() in allowed for c in crops)


def test_a_zero_weight_source_is_never_drawn():
    sources = [np.full((16, 16, 1), 10, np.uint8), np.full((16, 16, 1), 200, np.uint8)]
    ds = CropSourceSet(sources, 4, scales=(1, 2), source_weights=[0.0, 1.0])
    x = to_u8(DeviceBatches(ds, "cpu").images(0, 64))
    assert (x == 200).all()


def test_ot_pairing_reaches_the_exact_minimum_cost():
    ds = ImageArraySet(np.random.default_rng(4).integers(0, 256, (32, 4, 4, 1), np.uint8), 4)
    batches = DeviceBatches(ds, "cpu", seed=5)
    pending = batches.draw(0, 16, ot=True)
    batch = batches.finish(pending)
    x0 = pending.x1 - batch.u_t  # the noise as paired
    best = pending.x0[ot_permutation(pending.x0, pending.x1)]
    assert torch.allclose(((x0 - pending.x1) ** 2).sum(), ((best - pending.x1) ** 2).sum())
    assert torch.allclose(batch.x_t, pending.t[:, None, None, None] * pending.x1
                          + (1 - pending.t[:, None, None, None]) * x0, atol=1e-6)


def test_assignment_in_the_worker_thread_gives_the_same_batch():
    ds = ImageArraySet(np.random.default_rng(6).integers(0, 256, (40, 4, 4, 1), np.uint8), 4)
    inline = DeviceBatches(ds, "cpu", seed=1, overlap=False)
    threaded = DeviceBatches(ds, "cpu", seed=1, overlap=True)
    try:
        for k in range(3):
            a = inline.finish(inline.draw(k, 16, ot=True))
            b = threaded.finish(threaded.draw(k, 16, ot=True))
            assert torch.equal(a.x_t, b.x_t) and torch.equal(a.u_t, b.u_t)
    finally:
        threaded.close()
