"""Keyed per-sample randomness: a worker's part of a step is a slice of the one-worker batch, and
every random draw is a function of (seed, step, global sample index) alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restora_core.training.keyed import (
    KeyedImages,
    SampleRule,
    keyed_sample,
    local_slice,
    prepare_image,
)


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(12, 30)), int(rng.integers(12, 30)), 1),
                         dtype=np.uint8) for _ in range(n)]


RULE = SampleRule(resolution=16, channels=1, mode="crop", hflip=True)


@pytest.mark.parametrize("world", [2, 4])
def test_the_workers_parts_of_a_step_are_the_one_worker_batch(world):
    data = images(10)
    one = KeyedImages(data, RULE, seed=3, batch_size=8)
    parts = [KeyedImages(data, RULE, seed=3, batch_size=8, rank=r, world_size=world)
             for r in range(world)]
    for step in (0, 1, 5):  # 5 crosses an epoch boundary (10 images, 8 per step)
        whole = one.batch(step)
        pieces = [p.batch(step) for p in parts]
        for name in ("x_t", "t", "u_t"):
            joined = torch.cat([getattr(b, name) for b in pieces])
            assert torch.equal(joined, getattr(whole, name))


def test_an_epoch_shows_every_image_once_in_a_seeded_order():
    data = [np.full((16, 16, 1), 10 * i, np.uint8) for i in range(6)]
    src = KeyedImages(data, SampleRule(16, 1), seed=1, batch_size=3)
    seen = []
    for step in range(2):
        b = src.batch(step)
        x1 = b.x_t + (1 - b.t.view(-1, 1, 1, 1)) * b.u_t
        seen += [round(float((x1[i].mean() + 1) * 127.5) / 10) for i in range(3)]
    assert sorted(seen) == list(range(6)) and seen != list(range(6))


def test_a_sample_depends_only_on_its_key():
    img = prepare_image(images(1)[0], RULE)
    a = keyed_sample(img, RULE, 0, step=4, index=37)
    b = keyed_sample(img, RULE, 0, step=4, index=37)
    c = keyed_sample(img, RULE, 0, step=4, index=38)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])


def test_small_images_are_enlarged_to_fit_a_crop_and_resize_takes_the_centre():
    small = np.zeros((8, 20, 1), np.uint8)
    assert prepare_image(small, RULE).shape[:2] == (16, 40)
    assert prepare_image(small, SampleRule(16, 1, mode="resize")).shape == (16, 16, 1)
    with pytest.raises(ValueError, match="does not split evenly"):
        local_slice(0, 10, 0, 3)
    with pytest.raises(ValueError, match="mode"):
        SampleRule(16, 1, mode="zoom")
