"""In-memory training sets that serve seeded batches: numpy only (no PIL, no pyarrow), so the
training CLI runs on a bare GPU box with nothing but torch, numpy, scipy, safetensors and fsspec.

Two kinds, both saved as a single ``.npz`` of uint8 arrays (``save_npz`` / ``load_npz``):

* :class:`ImageArraySet` — ``images: (N, H, W, C)`` uint8, all the same size (e.g. the 32x32
  digits). A batch takes images in a seeded per-epoch permutation, then an optional random
  crop to the resolution and the enabled dihedral augmentations.
* :class:`CropSourceSet` — a few large source images of any size, cropped on the fly: each
  sample picks a scale ``s`` from ``scales``, an image (uniformly among those large enough,
  or by its number of crop positions with ``weighting="area"``), a ``(res*s)``-square window at a position on the ``s``-grid, and
  block-averages it down to ``res`` (a slice of a precomputed block-mean pyramid, so a batch
  costs a few ms); then flips / rot90. This keeps a photo patch set to a few MB on disk.

Batches are a pure function of ``(seed, step)``: ``batch(step, batch_size)`` returns the same
pixels whenever it is called, which is what makes a resumed training run replay the exact data
order of an uninterrupted one (the checkpoint only has to remember the step).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_SALT_ORDER = 0x0D4A
_SALT_AUG = 0xA06
_SALT_CROP = 0xC409


def block_mean(img: np.ndarray, s: int) -> np.ndarray:
    """Downscale ``img: (H, W, C)`` uint8 by an integer factor ``s`` (mean over s x s blocks,
    rounded half up). ``H`` and ``W`` are cropped to multiples of ``s`` first."""
    if s == 1:
        return img
    h, w, c = img.shape
    h, w = h - h % s, w - w % s
    blocks = img[:h, :w].reshape(h // s, s, w // s, s, c).astype(np.uint32)
    total = blocks.sum(axis=(1, 3))
    return ((total + (s * s) // 2) // (s * s)).astype(np.uint8)


def dihedral(img: np.ndarray, flip: bool, k: int) -> np.ndarray:
    """``img: (..., H, W, C)`` flipped left-right (if ``flip``) then rotated by ``k`` * 90 deg."""
    if flip:
        img = img[..., :, ::-1, :]
    if k % 4:
        img = np.rot90(img, k % 4, axes=(-3, -2))
    return img


def to_model_range(batch: np.ndarray) -> np.ndarray:
    """uint8 ``(..., )`` in [0, 255] -> float32 in [-1, 1]."""
    return batch.astype(np.float32) / 127.5 - 1.0


def sha256_file(path: str, storage_options: dict[str, Any] | None = None) -> str:
    """sha256 hex of a file at any fsspec URI."""
    import fsspec

    h = hashlib.sha256()
    with fsspec.open(path, "rb", **(storage_options or {})) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Augment:
    """Which random dihedral transforms a batch gets (digits: none; photo patches: all)."""

    hflip: bool = False
    rot90: bool = False

    def apply(self, crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``crops: (B, H, W, C)`` -> same shape (H == W when rot90 is on)."""
        b = crops.shape[0]
        flips = rng.random(b) < 0.5 if self.hflip else np.zeros(b, bool)
        ks = rng.integers(0, 4, b) if self.rot90 else np.zeros(b, np.int64)
        if not (flips.any() or ks.any()):
            return crops
        return np.stack([dihedral(c, bool(f), int(k)) for c, f, k in zip(crops, flips, ks)])


@dataclass
class ImageArraySet:
    """Equal-size images ``(N, H, W, C)`` uint8, H, W >= ``resolution``."""

    images: np.ndarray
    resolution: int
    seed: int = 0
    augment: Augment = field(default_factory=Augment)
    labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, C) uint8, got {self.images.shape} "
                             f"{self.images.dtype}")
        n, h, w, _ = self.images.shape
        if n == 0:
            raise ValueError("the training set is empty")
        if min(h, w) < self.resolution:
            raise ValueError(f"images are {h}x{w}, smaller than the resolution {self.resolution}")

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def indices(self, step: int, batch_size: int) -> np.ndarray:
        """Dataset indices of batch ``step``: a seeded permutation per epoch, walked in order."""
        n = len(self)
        pos = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
        out = np.empty(batch_size, np.int64)
        for epoch in np.unique(pos // n):
            perm = np.random.default_rng([self.seed, _SALT_ORDER, int(epoch)]).permutation(n)
            sel = pos // n == epoch
            out[sel] = perm[pos[sel] % n]
        return out

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        """Batch ``step`` as uint8 ``(B, C, res, res)``; a pure function of (seed, step)."""
        rng = np.random.default_rng([self.seed, _SALT_AUG, int(step)])
        imgs = self.images[self.indices(step, batch_size)]
        _, h, w, _ = imgs.shape
        r = self.resolution
        if (h, w) != (r, r):
            ys = rng.integers(0, h - r + 1, batch_size)
            xs = rng.integers(0, w - r + 1, batch_size)
            imgs = np.stack([im[y:y + r, x:x + r] for im, y, x in zip(imgs, ys, xs)])
        imgs = self.augment.apply(imgs, rng)
        return np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))


@dataclass
class CropBox:
    """One crop: source ``image`` index, window ``(y, x)`` of side ``resolution * scale`` in the
    stored source, block-averaged by ``scale``; then ``flip`` and ``rot`` (quarter turns)."""

    image: int
    scale: int
    y: int
    x: int
    flip: bool = False
    rot: int = 0


@dataclass
class CropSourceSet:
    """Large source images ``(H_i, W_i, C)`` uint8, cropped on the fly at several scales."""

    sources: list[np.ndarray]
    resolution: int
    scales: Sequence[int] = (1, 2, 4)
    seed: int = 0
    augment: Augment = field(default_factory=lambda: Augment(hflip=True, rot90=True))
    names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    weighting: str = "uniform"         # image choice: "uniform" or "area" (windows per image)
    source_weights: Sequence[float] | None = None  # per-image multipliers of that choice

    def __post_init__(self):
        if self.weighting not in ("uniform", "area"):
            raise ValueError(f"weighting must be 'uniform' or 'area', got '{self.weighting}'")
        if not self.sources:
            raise ValueError("no source images")
        chans = {s.shape[-1] for s in self.sources}
        if len(chans) != 1 or any(s.ndim != 3 or s.dtype != np.uint8 for s in self.sources):
            raise ValueError("sources must be (H, W, C) uint8 with one channel count")
        self.scales = tuple(int(s) for s in self.scales)
        mult = np.ones(len(self.sources))
        if self.source_weights is not None:
            mult = np.asarray(self.source_weights, np.float64)
            if mult.shape != (len(self.sources),) or (mult < 0).any() or mult.sum() <= 0:
                raise ValueError(f"source_weights must be {len(self.sources)} non-negative "
                                 "numbers, not all zero")
            self.source_weights = tuple(float(v) for v in mult)
        # crop positions (on the s-grid) per (scale, image): the sampling weights
        self._weights = {}
        for s in self.scales:
            w = np.array([self._positions(im, s)[0] * self._positions(im, s)[1]
                          for im in self.sources], np.float64)
            if self.weighting == "uniform":
                w = (w > 0).astype(np.float64)
            w = w * mult
            if w.sum() > 0:
                self._weights[s] = w / w.sum()
        if not self._weights:
            raise ValueError(f"no source image is large enough for a {self.resolution} crop")
        self.scales = tuple(s for s in self.scales if s in self._weights)
        self._levels = {s: [block_mean(im, s) for im in self.sources] for s in self.scales}

    def _positions(self, im: np.ndarray, s: int) -> tuple[int, int]:
        """Number of window origins on the s-grid along y and x."""
        side = self.resolution * s
        return (max(0, (im.shape[0] - side) // s + 1) if im.shape[0] >= side else 0,
                max(0, (im.shape[1] - side) // s + 1) if im.shape[1] >= side else 0)

    @property
    def channels(self) -> int:
        return int(self.sources[0].shape[-1])

    def __len__(self) -> int:
        """Number of distinct crop windows over all scales (an upper bound on 'images')."""
        return int(sum(np.prod(self._positions(im, s)) for s in self.scales
                       for im in self.sources))

    def boxes(self, rng: np.random.Generator, n: int) -> list[CropBox]:
        """Draw ``n`` crop boxes: scale uniform, image uniform among those large enough for it
        (or by its number of windows, ``weighting="area"``), window origin uniform on the
        s-grid."""
        scales = rng.choice(np.array(self.scales), n)
        out = []
        for s in scales:
            s = int(s)
            i = int(rng.choice(len(self.sources), p=self._weights[s]))
            ny, nx = self._positions(self.sources[i], s)
            y = s * int(rng.integers(0, ny))
            x = s * int(rng.integers(0, nx))
            flip = bool(rng.random() < 0.5) if self.augment.hflip else False
            rot = int(rng.integers(0, 4)) if self.augment.rot90 else 0
            out.append(CropBox(i, s, y, x, flip, rot))
        return out

    def crop(self, box: CropBox) -> np.ndarray:
        """The ``(res, res, C)`` uint8 pixels of ``box``: the block mean (by ``scale``) of the
        ``res*scale`` window at ``(y, x)``, flipped and rotated."""
        r, s = self.resolution, box.scale
        if box.y % s == 0 and box.x % s == 0 and s in self._levels:
            level = self._levels[s][box.image]
            small = level[box.y // s:box.y // s + r, box.x // s:box.x // s + r]
        else:
            side = r * s
            small = block_mean(self.sources[box.image][box.y:box.y + side, box.x:box.x + side],
                               s)
        return np.ascontiguousarray(dihedral(small, box.flip, box.rot))

    def batch(self, step: int, batch_size: int) -> np.ndarray:
        """Batch ``step`` as uint8 ``(B, C, res, res)``; a pure function of (seed, step)."""
        rng = np.random.default_rng([self.seed, _SALT_CROP, int(step)])
        crops = np.stack([self.crop(b) for b in self.boxes(rng, batch_size)])
        return np.ascontiguousarray(crops.transpose(0, 3, 1, 2))


TrainingSet = ImageArraySet | CropSourceSet


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed .npz of ``arrays`` whose bytes depend only on the arrays (fixed zip
    timestamps, sorted keys), so rebuilding a dataset reproduces its sha256."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            arr_buf = io.BytesIO()
            np.lib.format.write_array(arr_buf, np.asanyarray(arrays[key]), allow_pickle=False)
            zf.writestr(info, arr_buf.getvalue(), compresslevel=6)
    return buf.getvalue()


def content_sha256(*arrays: np.ndarray) -> str:
    """sha256 over the dtype, shape and bytes of ``arrays`` (independent of the file format)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def resize_square(img: np.ndarray, resolution: int) -> np.ndarray:
    """Centre square of ``img: (H, W, C)`` uint8 resized to ``resolution`` (PIL box/area filter
    when shrinking, bicubic when enlarging)."""
    from PIL import Image

    h, w, c = img.shape
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    sq = img[y:y + side, x:x + side]
    if side == resolution:
        return np.ascontiguousarray(sq)
    pil = Image.fromarray(sq[..., 0] if c == 1 else sq)
    resample = Image.Resampling.BOX if side > resolution else Image.Resampling.BICUBIC
    out = np.asarray(pil.resize((resolution, resolution), resample), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def save_npz(dataset: TrainingSet, path: str, storage_options: dict[str, Any] | None = None) -> str:
    """Write ``dataset`` as a compressed .npz at any fsspec URI; returns its sha256.

    Layout: ``kind`` ("images" | "crops"), ``meta`` (JSON string); "images": ``images``
    (N, H, W, C) uint8 and optional ``labels``; "crops": ``source_0000``... (H_i, W_i, C) uint8,
    ``names`` and ``scales``.
    """
    from ..storage import write_uri_atomic

    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(dataset.meta, sort_keys=True))}
    if isinstance(dataset, ImageArraySet):
        arrays["kind"] = np.array("images")
        arrays["images"] = dataset.images
        if dataset.labels is not None:
            arrays["labels"] = np.asarray(dataset.labels)
    else:
        arrays["kind"] = np.array("crops")
        arrays["scales"] = np.array(dataset.scales, np.int64)
        arrays["weighting"] = np.array(dataset.weighting)
        if dataset.source_weights is not None:
            arrays["sampling_weights"] = np.asarray(dataset.source_weights, np.float64)
        arrays["names"] = np.array(dataset.names or [f"source_{i}" for i in
                                                     range(len(dataset.sources))])
        for i, s in enumerate(dataset.sources):
            arrays[f"source_{i:04d}"] = s
    data = npz_bytes(arrays)
    write_uri_atomic(path, data, storage_options)
    return hashlib.sha256(data).hexdigest()


def load_npz(
    path: str,
    resolution: int,
    *,
    seed: int = 0,
    augment: Augment | None = None,
    scales: Sequence[int] | None = None,
    channels: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> TrainingSet:
    """Read a training set written by :func:`save_npz`, or a plain array file.

    Plain ``.npy`` / ``.npz`` with one array (or an ``images`` / ``x`` key) of shape (N, H, W),
    (N, H, W, C) or (N, C, H, W) is accepted too: uint8 as is, floats in [0, 1] or [-1, 1] are
    rescaled to uint8. ``channels`` converts gray <-> RGB if given. ``augment`` defaults to none
    for image arrays and flips + rot90 for crop sets.
    """
    import fsspec

    with fsspec.open(path, "rb", **(storage_options or {})) as f:
        raw = f.read()
    loaded = np.load(io.BytesIO(raw), allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        z = {"images": loaded}
    else:
        z = {k: loaded[k] for k in loaded.files}
    meta = json.loads(str(z["meta"])) if "meta" in z else {}
    kind = str(z["kind"]) if "kind" in z else "images"
    if kind == "crops":
        keys = sorted(k for k in z if k.startswith("source_") and k[7:].isdigit())
        sources = [_channels(z[k], channels) for k in keys]
        return CropSourceSet(
            sources=sources, resolution=resolution,
            scales=tuple(scales) if scales is not None else tuple(int(s) for s in z["scales"]),
            seed=seed, augment=augment if augment is not None else Augment(True, True),
            names=[str(n) for n in z.get("names", [])], meta=meta,
            weighting=str(z["weighting"]) if "weighting" in z else "uniform",
            source_weights=z["sampling_weights"].tolist() if "sampling_weights" in z else None)
    if "images" in z:
        arr = z["images"]
    elif "x" in z:
        arr = z["x"]
    else:
        cands = [v for v in z.values() if v.ndim in (3, 4)]
        if len(cands) != 1:
            raise ValueError(f"'{path}' has no 'images' array and {len(cands)} candidates")
        arr = cands[0]
    images = _channels(_as_nhwc_uint8(arr), channels)
    return ImageArraySet(images=images, resolution=resolution, seed=seed,
                         augment=augment if augment is not None else Augment(),
                         labels=z.get("labels"), meta=meta)


def _as_nhwc_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"expected (N, H, W[, C]) images, got shape {arr.shape}")
    if arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        if a.min() < 0:
            a = (a + 1.0) / 2.0
        arr = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _channels(img: np.ndarray, channels: int | None) -> np.ndarray:
    """Gray <-> RGB on the last axis (RGB -> gray by ITU-R 601 luma, rounded)."""
    c = img.shape[-1]
    if channels is None or channels == c:
        return img
    if c == 1 and channels == 3:
        return np.ascontiguousarray(np.repeat(img, 3, axis=-1))
    if c == 3 and channels == 1:
        luma = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    raise ValueError(f"cannot convert {c} channels to {channels}")
