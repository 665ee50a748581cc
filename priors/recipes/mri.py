"""mri64: 64x64 gray axial slices of the MNI152 T1 template that ships with nilearn.

The template (ICBM 2009a symmetric, 1 mm, 197 x 233 x 189, intensities in [0, 1]) is read from
nilearn's package data (``load_mni152_template(resolution=1)``, no download). Axial slice ``z``
is shown upright (anterior at the top), cut to a 200 mm square around the centre of the head's
bounding box and resized (anti-aliased) to 70 x 70 px, i.e. 2.86 mm per pixel; training takes random 64 x 64 crops
(shifts of up to +-3 px) and left-right flips, evaluation the central 64 x 64 crop.

Slices with content (more than 2% of pixels above 5% of the maximum) are numbered 0..n-1 from
the bottom; every 8th from the 4th is held out for evaluation, and its two neighbours (1 mm
away) are dropped from training as a guard band, so the nearest training slice to an evaluation
slice is 2 mm away (0.7 px at this scale): one brain, so this measures filling a slice between
seen ones, not generalising to new subjects.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from restora_core.datasets.arrays import Augment, ImageArraySet, content_sha256

from .common import version

STORED = 70
RESOLUTION = 64
EVAL_EVERY, EVAL_OFFSET, GUARD = 8, 4, 1
FOV_MM = 200


def template_volume() -> np.ndarray:
    """nilearn's MNI152 T1 template at 1 mm as float64 ``(x, y, z)`` in [0, 1]."""
    from nilearn.datasets import load_mni152_template

    return np.asarray(load_mni152_template(resolution=1).get_fdata(), np.float64)


def field_of_view(volume: np.ndarray) -> tuple[int, int]:
    """(row, column) of the centre of the head's bounding box in the upright axial view."""
    rows, cols = np.nonzero((volume > 0.05 * volume.max()).any(axis=2)[:, ::-1].T)
    return (int(rows.min() + rows.max()) // 2, int(cols.min() + cols.max()) // 2)


def axial_slice(volume: np.ndarray, z: int, size: int = STORED) -> np.ndarray:
    """Axial slice ``z`` as a ``(size, size)`` uint8 image, anterior at the top: a ``FOV_MM``
    square around the head's centre, resized."""
    from skimage.transform import resize

    img = volume[:, ::-1, z].T  # rows: anterior -> posterior, columns: x
    cy, cx = field_of_view(volume)
    half = FOV_MM // 2
    padded = np.pad(img, half)
    sq = padded[cy:cy + 2 * half, cx:cx + 2 * half]
    small = resize(sq, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(small * 255.0), 0, 255).astype(np.uint8)


def content_slices(volume: np.ndarray) -> list[int]:
    """Axial indices whose slice has more than 2% of pixels above 5% of the maximum."""
    thr = 0.05 * volume.max()
    return [z for z in range(volume.shape[2]) if (volume[:, :, z] > thr).mean() > 0.02]


def build_mri() -> tuple[ImageArraySet, dict[str, Any], dict[str, Any]]:
    """(training set of 70x70 slices, evaluation arrays {images, slice}, provenance)."""
    vol = template_volume()
    zs = content_slices(vol)
    eval_pos = list(range(EVAL_OFFSET, len(zs), EVAL_EVERY))
    guard = {p + d for p in eval_pos for d in range(-GUARD, GUARD + 1)}
    train_z = [z for i, z in enumerate(zs) if i not in guard]
    eval_z = [zs[p] for p in eval_pos]
    train_x = np.stack([axial_slice(vol, z) for z in train_z])[..., None]
    lo = (STORED - RESOLUTION) // 2
    eval_x = np.stack([axial_slice(vol, z)[lo:lo + RESOLUTION, lo:lo + RESOLUTION]
                       for z in eval_z])[..., None]
    origin = (f"nilearn=={version('nilearn')} datasets.load_mni152_template(resolution=1) "
              "(nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz)")
    train = ImageArraySet(train_x, RESOLUTION, augment=Augment(hflip=True), meta={
        "name": "mri64_train", "content_sha256": content_sha256(train_x),
        "built_by": "scripts/build_datasets.py (priors/recipes/mri.py build_mri); provenance "
                    "in restora_core/data/mri64_eval.json",
        "sources": [origin]})
    provenance = {
        "name": "mri64",
        "description": "64x64 gray uint8 axial slices of the MNI152 T1 template",
        "source": {"origin": origin, "shape": list(vol.shape),
                   "volume_sha256": content_sha256(vol)},
        "framing": f"slice volume[:, ::-1, z].T, a {FOV_MM} mm square around the centre of "
                   f"the head's bounding box (zero-padded), resized to "
                   f"{STORED}x{STORED} (skimage resize, order 1, anti-aliased); training: "
                   f"random {RESOLUTION}-crops + left-right flips; evaluation: central crop",
        "train": {"count": len(train_z), "slices_z": train_z,
                  "content_sha256": content_sha256(train_x)},
        "eval": {"count": len(eval_z), "slices_z": eval_z,
                 "selection": f"content slices (>2% of pixels above 5% of max) numbered from "
                              f"the bottom; positions {EVAL_OFFSET}, {EVAL_OFFSET}+{EVAL_EVERY},"
                              f" ... held out; their +-{GUARD} neighbours not trained on",
                 "content_sha256": content_sha256(eval_x)},
    }
    return train, {"images": eval_x, "slice": np.asarray(eval_z, np.int64)}, provenance
