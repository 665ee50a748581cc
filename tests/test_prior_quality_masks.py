"""The irregular holes of the prior-quality benchmark: 15-25% of the pixels, not a rectangle,
reproducible from the seed, and on the foreground when asked."""

from __future__ import annotations

import numpy as np

from benchmarks.prior_quality import HOLE_RANGE, irregular_mask


def test_holes_cover_15_to_25_percent_and_are_not_boxes():
    img = np.full((64, 64, 3), 128, np.uint8)
    for i in range(20):
        mask = irregular_mask(img, np.random.default_rng([7, i]), foreground=False)
        hole = mask == 0
        assert HOLE_RANGE[0] <= hole.mean() <= HOLE_RANGE[1]
        rows, cols = np.nonzero(hole)
        box_area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert hole.sum() < 0.9 * box_area  # strokes, not a filled rectangle
    again = irregular_mask(img, np.random.default_rng([7, 0]), foreground=False)
    assert np.array_equal(again, irregular_mask(img, np.random.default_rng([7, 0]),
                                                foreground=False))


def test_foreground_strokes_start_on_the_object():
    img = np.zeros((64, 64, 1), np.uint8)
    img[20:44, 20:44] = 200  # the object; the rest is black background
    hits = []
    for i in range(10):
        hole = irregular_mask(img, np.random.default_rng([3, i]), foreground=True) == 0
        hits.append(hole[20:44, 20:44].any())
    assert all(hits)
