"""Training images from the same sources the restoration flows read, on local disk or ``s3://``:

* a folder or prefix of image files (``.png .jpg .jpeg .bmp .tif .tiff .webp``), listed
  recursively and sorted, so the order is deterministic;
* Parquet shards (one ``.parquet`` file, or a folder/prefix of them) with the image bytes in a
  binary column or in a Hugging Face ``{bytes, path}`` image struct.

:func:`build_training_set` decodes everything into memory and returns an
:class:`~restora_core.datasets.arrays.ImageArraySet` (``mode="resize"``: a centre square resized
to the resolution) or a :class:`~restora_core.datasets.arrays.CropSourceSet` (``mode="crop"``:
random multi-scale crops drawn per batch). Save it with ``save_npz`` to train on a machine that
has neither PIL nor pyarrow.

PIL and pyarrow are imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .arrays import Augment, CropSourceSet, ImageArraySet, TrainingSet, block_mean

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _fs(uri: str, storage_options: dict[str, Any] | None):
    import fsspec

    return fsspec.core.url_to_fs(uri, **(storage_options or {}))


def _full(fs, path: str) -> str:
    return fs.unstrip_protocol(path) if fs.protocol not in ("file", ("file", "local")) else path


def list_image_files(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Sorted image files under a folder or prefix (recursive), as full URIs."""
    fs, root = _fs(uri, storage_options)
    if fs.isfile(root):
        return [_full(fs, root)]
    files = [p for p in fs.find(root) if p.lower().endswith(IMAGE_EXTENSIONS)]
    return [_full(fs, p) for p in sorted(files)]


def list_parquet_files(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Sorted Parquet shards: ``uri`` itself if it is one, else the ``*.parquet`` under it."""
    fs, root = _fs(uri, storage_options)
    if fs.isfile(root):
        return [_full(fs, root)]
    return [_full(fs, p) for p in sorted(fs.find(root)) if p.endswith(".parquet")]


def _image_column(schema) -> tuple[str, bool]:
    """(column name, is_struct) of the image bytes in a Parquet schema."""
    import pyarrow as pa

    for preferred in ("image", "img", "jpg", "png", "bytes"):
        if preferred in schema.names:
            t = schema.field(preferred).type
            if pa.types.is_struct(t):
                return preferred, True
            if pa.types.is_binary(t) or pa.types.is_large_binary(t):
                return preferred, False
    for f in schema:
        if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0:
            return f.name, True
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            return f.name, False
    raise ValueError(f"no image-bytes column in Parquet schema {schema.names}")


def iter_image_bytes(
    uri: str, storage_options: dict[str, Any] | None = None, limit: int | None = None
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(key, encoded image bytes)`` from a folder/prefix of images or Parquet shards.

    ``key`` is the file URI, or ``<shard>#<row>`` for Parquet rows. A source is treated as
    Parquet when ``uri`` ends in ``.parquet`` or the folder holds ``.parquet`` files and no
    images.
    """
    count = 0
    images = [] if uri.endswith(".parquet") else list_image_files(uri, storage_options)
    if images:
        fs, _ = _fs(uri, storage_options)
        for path in images:
            with fs.open(path, "rb") as f:
                yield path, f.read()
            count += 1
            if limit is not None and count >= limit:
                return
        return
    import pyarrow.parquet as pq

    shards = list_parquet_files(uri, storage_options)
    if not shards:
        raise FileNotFoundError(f"no images or Parquet shards under '{uri}'")
    fs, _ = _fs(uri, storage_options)
    for shard in shards:
        with fs.open(shard, "rb") as f:
            table = pq.read_table(f, use_threads=False)  # threaded reads of file objects abort at exit
        col, is_struct = _image_column(table.schema)
        values = table.column(col).to_pylist()
        for row, v in enumerate(values):
            data = v.get("bytes") if is_struct and v is not None else v
            if data is None:
                continue
            yield f"{shard}#{row}", data
            count += 1
            if limit is not None and count >= limit:
                return


def decode_image(data: bytes, channels: int) -> np.ndarray:
    """Encoded bytes -> ``(H, W, channels)`` uint8 (1 = gray 'L', 3 = RGB)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


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


def build_training_set(
    uri: str,
    resolution: int,
    channels: int,
    *,
    mode: str = "resize",
    scales: Sequence[int] = (1, 2, 4),
    hflip: bool = False,
    rot90: bool = False,
    downscale: int = 1,
    seed: int = 0,
    limit: int | None = None,
    storage_options: dict[str, Any] | None = None,
    on_error: str = "skip",
) -> TrainingSet:
    """Decode the images at ``uri`` into an in-memory training set.

    ``mode="resize"``: each image's centre square resized to ``resolution`` -> ImageArraySet.
    ``mode="crop"``: whole images (block-averaged by ``downscale`` first) cropped at random per
    batch at ``scales`` -> CropSourceSet. Undecodable images are skipped (``on_error="skip"``,
    counted in ``meta["skipped"]``) or raise (``"raise"``).
    """
    if mode not in ("resize", "crop"):
        raise ValueError(f"mode must be 'resize' or 'crop', got '{mode}'")
    decoded, keys, skipped = [], [], []
    for key, data in iter_image_bytes(uri, storage_options, limit):
        try:
            img = decode_image(data, channels)
        except Exception as e:  # PIL raises many types for corrupt files
            if on_error == "raise":
                raise ValueError(f"cannot decode '{key}': {e}") from e
            skipped.append(key)
            continue
        if mode == "crop":
            img = block_mean(img, downscale)
        else:
            img = resize_square(img, resolution)
        decoded.append(img)
        keys.append(key)
    if not decoded:
        raise ValueError(f"no decodable images under '{uri}'")
    meta = {"source": uri, "count": len(decoded), "skipped": len(skipped), "mode": mode}
    augment = Augment(hflip=hflip, rot90=rot90)
    if mode == "resize":
        return ImageArraySet(np.stack(decoded), resolution, seed=seed, augment=augment, meta=meta)
    return CropSourceSet(decoded, resolution, scales=scales, seed=seed, augment=augment,
                         names=keys, meta=meta)
