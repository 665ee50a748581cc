"""photo32 / photo64: crops of photographs that ship inside packages.

Training (one set for both resolutions, ``photos_train.npz``): RGB photographs from skimage,
scikit-learn, PyWavelets and matplotlib, stored once block-averaged by 2 and cropped at random
per batch at scales 1, 2, 4 (photo32) or 1, 2 (photo64) of that, with flips and quarter turns.
Gray pictures are replicated to RGB and drawn half as often as colour ones (the evaluation
images are in colour; 9 of the 20 sources are gray). The retina's black surround is cut off
(central square of side 0.7). Left out: skimage ``camera`` (the same picture as pywt's),
``lfw_subset`` (25x25 faces, smaller than a crop), ``page``/``text``/``horse`` (documents and a
silhouette, not photographs), the right view of ``stereo_motorcycle`` (a near copy of the left).

Evaluation: 64 fixed crops (no flips) of sporco's five images (barbara, kodim23, monarch, sail,
tulips), block-averaged by 2 and then by 1 or 2, i.e. at 1/2 and 1/4 of their original
resolution, inside the training scales. None of sporco's images is trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from restora_core.datasets.arrays import Augment, CropBox, CropSourceSet, block_mean, content_sha256

from .common import EVAL_COUNT, sha256_path, to_rgb, version

SOURCE_DOWNSCALE = 2
TRAIN_SCALES = {32: (1, 2, 4), 64: (1, 2)}
EVAL_SCALES = (1, 2)
EVAL_SEEDS = {32: 20240302, 64: 20240303}
GRAY_WEIGHT = 0.5
EVAL_SOURCES = ("barbara", "kodim23", "monarch", "sail", "tulips")

Loader = Callable[[], tuple[np.ndarray, str]]


def _skimage(name: str) -> Loader:
    def load():
        import skimage.data

        img = getattr(skimage.data, name)()
        if name == "stereo_motorcycle":
            img = img[0]
        return img, f"scikit-image=={version('scikit-image')} skimage.data.{name}()" + (
            "[0] (left view)" if name == "stereo_motorcycle" else "")
    return load


def _sklearn(fname: str) -> Loader:
    def load():
        from sklearn.datasets import load_sample_image

        return (load_sample_image(fname),
                f"scikit-learn=={version('scikit-learn')} load_sample_image('{fname}')")
    return load


def _pywt(name: str) -> Loader:
    def load():
        import pywt.data

        return (getattr(pywt.data, name)(),
                f"PyWavelets=={version('PyWavelets')} pywt.data.{name}() (gray, replicated)")
    return load


def _grace_hopper() -> tuple[np.ndarray, str]:
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        img = np.asarray(Image.open(f).convert("RGB"))
    return img, f"matplotlib=={version('matplotlib')} mpl-data/sample_data/grace_hopper.jpg"


TRAIN_SOURCES: dict[str, Loader] = {
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
    "grace_hopper": _grace_hopper,
    "aero": _pywt("aero"),
    "ascent": _pywt("ascent"),
    "camera": _pywt("camera"),
    # gray textures and scenes in skimage (offline): fabric-like and granular detail
    "brick": _skimage("brick"),
    "grass": _skimage("grass"),
    "gravel": _skimage("gravel"),
    "moon": _skimage("moon"),
    "coins": _skimage("coins"),
    "cell": _skimage("cell"),
}


def load_photo_sources() -> tuple[list[np.ndarray], list[str], list[dict[str, Any]], list[float]]:
    """The training photographs (RGB uint8, block-averaged by 2), names, provenance records and
    per-source sampling weights (gray pictures ``GRAY_WEIGHT``)."""
    sources, names, records, weights = [], [], [], []
    for name, load in TRAIN_SOURCES.items():
        raw, origin = load()
        gray = np.asarray(raw).ndim == 2
        img = to_rgb(raw)
        record = {"name": name, "origin": origin, "original_shape": list(img.shape),
                  "original_sha256": content_sha256(img), "gray": gray}
        if name == "retina":
            h, w = img.shape[:2]
            side = int(0.7 * min(h, w))
            y, x = (h - side) // 2, (w - side) // 2
            img = img[y:y + side, x:x + side]
            record["crop_box_yxhw"] = [y, x, side, side]
        img = block_mean(img, SOURCE_DOWNSCALE)
        record["stored_shape"] = list(img.shape)
        sources.append(img)
        names.append(name)
        records.append(record)
        weights.append(GRAY_WEIGHT if gray else 1.0)
    return sources, names, records, weights


def load_sporco_images() -> list[tuple[str, np.ndarray, str]]:
    """(name, RGB uint8, file sha256) of sporco's five evaluation images."""
    import sporco
    from PIL import Image

    root = Path(sporco.__file__).parent / "data"
    out = []
    for name in EVAL_SOURCES:
        path = root / f"{name}.png"
        out.append((name, to_rgb(np.asarray(Image.open(path).convert("RGB"))), sha256_path(path)))
    return out


def build_photo_train() -> tuple[CropSourceSet, list[dict[str, Any]]]:
    """The training crop set and its source records. One file serves every resolution: the
    resolution and scales are set when it is loaded (the recipe's ``resolution``, ``scales``);
    it is stored with photo32's."""
    sources, names, records, weights = load_photo_sources()
    train = CropSourceSet(sources, 32, scales=TRAIN_SCALES[32],
                          augment=Augment(hflip=True, rot90=True), names=names,
                          source_weights=weights)
    train.meta = {"name": "photos_train", "content_sha256": content_sha256(*sources),
                  "built_by": "scripts/build_datasets.py (priors/recipes/photos.py); provenance "
                              "in restora_core/data/photo32_eval.json and photo64_eval.json",
                  "sources": [r["origin"] for r in records]}
    return train, records


def build_photo(resolution: int = 32) -> tuple[CropSourceSet, dict[str, Any], dict[str, Any]]:
    """(training crop set, evaluation arrays {images}, provenance) for photo32 or photo64."""
    if resolution not in TRAIN_SCALES:
        raise ValueError(f"photo priors come in {sorted(TRAIN_SCALES)}, not {resolution}")
    train, records = build_photo_train()
    sporco = load_sporco_images()
    eval_set = CropSourceSet([block_mean(img, SOURCE_DOWNSCALE) for _, img, _ in sporco],
                             resolution, scales=EVAL_SCALES, augment=Augment(),
                             names=[n for n, _, _ in sporco])
    seed = EVAL_SEEDS[resolution]
    rng = np.random.default_rng(seed)
    boxes: list[CropBox] = []
    for i in range(EVAL_COUNT):
        image = i % len(sporco)
        scale = EVAL_SCALES[(i // len(sporco)) % len(EVAL_SCALES)]
        side = resolution * scale
        h, w = eval_set.sources[image].shape[:2]
        boxes.append(CropBox(image, scale, int(rng.integers(0, h - side + 1)),
                             int(rng.integers(0, w - side + 1))))
    eval_images = np.stack([eval_set.crop(b) for b in boxes])
    provenance = {
        "name": f"photo{resolution}",
        "description": f"{resolution}x{resolution} RGB uint8 patches of photographs shipped "
                       "inside packages",
        "train": {
            "file": "photos_train.npz (shared by photo32 and photo64)",
            "sources": records,
            "stored_downscale": SOURCE_DOWNSCALE,
            "scales": list(TRAIN_SCALES[resolution]),
            "scales_note": "set by the recipe when the shared file is loaded",
            "sampling": f"per crop: scale uniform over scales; image drawn among the sources at "
                        f"least {resolution}*scale px on each side with weight 1 (colour) or "
                        f"{GRAY_WEIGHT} (gray); window origin uniform on the scale-grid; block "
                        "mean by scale; hflip p=0.5; k*90 deg, k uniform in 0..3",
            "gray_images": "replicated to RGB",
            "excluded": {"sporco (all five)": "evaluation set",
                         "skimage camera": "same picture as pywt camera",
                         "skimage lfw_subset": "25x25 gray faces, smaller than a crop",
                         "skimage page, text, horse": "documents and a silhouette",
                         "stereo_motorcycle right view": "a near copy of the left view"},
            "content_sha256": train.meta["content_sha256"],
        },
        "eval": {
            "count": EVAL_COUNT, "seed": seed,
            "sources": [{"name": n, "origin": f"sporco=={version('sporco')} "
                         f"sporco/data/{n}.png", "file_sha256": sha, "shape": list(img.shape)}
                        for n, img, sha in sporco],
            "selection": f"crop i: image i mod 5, scale (1, 2)[(i // 5) mod 2] of the image "
                         f"block-averaged by 2; y, x = rng.integers(0, h - {resolution}*scale + "
                         f"1), rng.integers(0, w - {resolution}*scale + 1), numpy "
                         "default_rng(seed)",
            "boxes": [{"image": EVAL_SOURCES[b.image], "scale_of_stored": b.scale,
                       "downscale_of_original": b.scale * SOURCE_DOWNSCALE,
                       "y": b.y, "x": b.x} for b in boxes],
            "content_sha256": content_sha256(eval_images),
        },
    }
    return train, {"images": eval_images}, provenance
