"""Bytes -> arrays for the prior: image and mask decoding, size policy, bomb cap, safe ids.

Arrays are float32 (C, H, W): images in [-1, 1], masks in {0, 1} with 1 = known pixel.
Size policy ``tile`` keeps an image at its own size (it is restored in prior-sized tiles);
``Geometry.bits`` records whether its samples had 8 or 16 bits, so that the restored image is
written at that depth and its known pixels come back exactly.
Mask files follow one convention: pixel value 0 = missing, any non-zero value = known; a mask
whose size differs from its image's is an error for that image. Every failure raises
``ImageError`` whose message starts with a short cause (``truncated: ...``) that the run summary
groups by.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
_SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


class ImageError(ValueError):
    """One image cannot be used; ``cause`` is a short tag, the message says why."""

    def __init__(self, cause: str, detail: str):
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail


@dataclass(frozen=True)
class Geometry:
    """How a source of size (width, height) maps onto the grid the task takes: ``resolution``
    is its side, or its (height, width) when it is not square (an outpainting input); policy
    ``tile`` keeps the source's own size. ``bits``: 8, or 16 for a source of more than 8 bits."""

    width: int
    height: int
    resolution: int | tuple[int, int]
    policy: str
    bits: int = 8

    @property
    def target(self) -> tuple[int, int]:
        """(height, width) the source is decoded to."""
        if self.policy == "tile":
            return self.height, self.width
        r = self.resolution
        return (r, r) if isinstance(r, int) else (int(r[0]), int(r[1]))

    def crop_box(self) -> tuple[int, int, int, int] | None:
        """Box of the centred region with the target's aspect ratio to keep, in source pixels
        (center-crop only)."""
        th, tw = self.target
        if self.policy != "center-crop" or self.width * th == self.height * tw:
            return None
        if self.width * th > self.height * tw:  # wider than the target: keep the full height
            w, h = round(self.height * tw / th), self.height
        else:
            w, h = self.width, round(self.width * th / tw)
        left = (self.width - w) // 2
        top = (self.height - h) // 2
        return (left, top, left + w, top + h)


def safe_id(raw: object) -> str:
    """Return ``raw`` if it is a relative '/'-separated id that cannot escape the output prefix."""
    if not isinstance(raw, str) or not raw:
        raise ImageError("unsafe-id", f"id {raw!r} is empty or not a string")
    if len(raw) > 512:
        raise ImageError("unsafe-id", f"id {raw[:40]!r}... is longer than 512 characters")
    if any(ord(ch) < 32 for ch in raw) or "\\" in raw or ":" in raw:
        raise ImageError("unsafe-id", f"id {raw!r} contains control characters, '\\' or ':'")
    parts = raw.split("/")
    if raw.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ImageError("unsafe-id", f"id {raw!r} would escape the output prefix")
    return raw


def _open_header(data: bytes, max_pixels: int, what: str) -> Image.Image:
    """The image with only its header parsed (size, mode); pixels are not decoded yet."""
    if not data:
        raise ImageError("truncated", f"{what} file is empty")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError("too-large", f"{what}: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("not-an-image", f"{what} bytes are not a readable image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("unreadable", f"{what}: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError("too-large", f"{what} is {width}x{height} = {width * height} pixels, "
                                      f"over the cap of {max_pixels} (decompression bomb?)")
    if width < 1 or height < 1:
        raise ImageError("unreadable", f"{what} has size {width}x{height}")
    return img


def image_size(data: bytes, *, max_pixels: int = 50_000_000) -> tuple[int, int]:
    """(width, height) of image bytes from the header alone; raises ImageError."""
    return _open_header(data, max_pixels, "image").size


def _open(data: bytes, max_pixels: int, what: str) -> Image.Image:
    img = _open_header(data, max_pixels, what)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        cause = "truncated" if "truncat" in str(exc).lower() or isinstance(exc, EOFError) else "unreadable"
        raise ImageError(cause, f"{what}: {exc}") from None
    return img


# 16-bit PNG colour types Pillow narrows to 8 bits: type -> (rawmode of the low bytes, channels).
# Pillow's PNG decoder undoes the row filters for the whole 6- or 8-byte pixel; unpacking the
# same stream with the little-endian rawmode yields the second byte of each sample, i.e. the low
# byte of PNG's big-endian samples, so high * 256 + low is the full 16-bit value.
_PNG16_LOW_RAWMODE = {2: ("RGB;16L", 3), 6: ("RGBA;16L", 3)}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _png16_colour(data: bytes, img: Image.Image) -> np.ndarray | None:
    """(H, W, K) float in [0, 1] of a 16-bit colour or gray+alpha PNG; None for other images."""
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 26 or data[24] != 16:
        return None
    colour_type = data[25]
    if colour_type == 4:  # gray+alpha: its 4-byte pixels unpack byte for byte as "RGBA"
        pixels = _reload(data, img, "RGBA").astype(np.float64)
        return ((pixels[..., 0] * 256 + pixels[..., 1]) / 65535.0)[..., None].astype(np.float32)
    if colour_type not in _PNG16_LOW_RAWMODE:
        return None
    rawmode, channels = _PNG16_LOW_RAWMODE[colour_type]
    high = np.asarray(img, dtype=np.float64)[..., :channels]
    low = _reload(data, img, rawmode).astype(np.float64)[..., :channels]
    return ((high * 256 + low) / 65535.0).astype(np.float32)


def _reload(data: bytes, img: Image.Image, rawmode: str) -> np.ndarray:
    """Decode ``data`` again with its first tile unpacked through ``rawmode``."""
    again = Image.open(io.BytesIO(data))
    tile = again.tile[0]
    args = rawmode if isinstance(tile.args, str) else (rawmode, *tuple(tile.args)[1:])
    again.tile = [tile._replace(args=args)]
    try:
        again.load()
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as exc:
        raise ImageError("unreadable", f"16-bit PNG: {exc}") from None
    if again.size != img.size:
        raise ImageError("unreadable", "16-bit PNG decoded to another size")
    return np.asarray(again)


def _tiff_deep(data: bytes) -> np.ndarray | None:
    """(H, W, K) float in [0, 1] of a >8-bit gray/RGB TIFF via tifffile; None when not one.

    Pillow reads 16-bit RGB TIFFs at 8 bits. tifffile reads uncompressed, deflate and packbits
    strips at full depth; codecs it lacks (LZW, JPEG without imagecodecs) fall back to Pillow.
    """
    if not data.startswith(_TIFF_SIGNATURES):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            if page.bitspersample <= 8 or int(page.photometric) not in (1, 2):
                return None
            arr, axes = page.asarray(), page.axes
    except Exception:  # noqa: BLE001 - anything tifffile cannot do, Pillow gets to try
        return None
    arr = np.moveaxis(arr, axes.index("S"), -1) if "S" in axes else arr[..., None]
    if arr.ndim != 3:  # volumes and other layouts: Pillow reads the first plane
        return None
    arr = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
    if np.issubdtype(arr.dtype, np.integer):
        return (arr.astype(np.float64) / np.iinfo(arr.dtype).max).astype(np.float32)
    return _scaled_float(arr.astype(np.float64))


def _scaled_float(arr: np.ndarray) -> np.ndarray:
    """Float samples to [0, 1]: as-is when they fit, else as 8- or 16-bit values."""
    peak = arr.max(initial=0)
    scale = 1.0 if peak <= 1 else (255.0 if peak <= 255 else 65535.0)
    return np.clip(arr / scale, 0, 1).astype(np.float32)


def _pixels(data: bytes, img: Image.Image) -> np.ndarray:
    """(H, W, K) float32 in [0, 1] at the file's full bit depth; alpha is dropped."""
    return _pixels_and_bits(data, img)[0]


def _pixels_and_bits(data: bytes, img: Image.Image) -> tuple[np.ndarray, int]:
    """``_pixels`` and the depth they were scaled from: 16 when 1.0 is 65535, else 8."""
    arr = _png16_colour(data, img)
    if arr is None:
        arr = _tiff_deep(data)
    if arr is not None:
        return arr, 16
    return _to_float_channels(img), 16 if _sixteen_bit_scale(img) else 8


def _sixteen_bit_scale(img: Image.Image) -> bool:
    """Whether ``_to_float_channels`` scales this image's samples by 65535."""
    if img.mode not in _SIXTEEN_BIT_MODES:
        return False
    return img.mode != "I" or np.asarray(img).max(initial=0) > 255


def _to_float_channels(img: Image.Image) -> np.ndarray:
    """(H, W, K) float32 in [0, 1] for any PIL mode; alpha is dropped."""
    if img.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if _sixteen_bit_scale(img) else 255.0
        return (np.clip(arr / scale, 0, 1)[..., None]).astype(np.float32)
    if img.mode == "F":
        return _scaled_float(np.asarray(img, dtype=np.float64))[..., None]
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("1", "L", "LA", "La"):
        img = img.convert("L")
    elif img.mode not in ("RGB",):
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr[..., :3]


def _match_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    if arr.shape[-1] == channels:
        return arr
    if channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (arr[..., :3] @ weights)[..., None]
    if channels == 3 and arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    raise ImageError("channels", f"cannot map {arr.shape[-1]} channels to {channels}")


def _geometry(img: Image.Image, resolution: int | tuple[int, int], policy: str,
              size_message: Callable[[int, int], str] | None) -> Geometry:
    width, height = img.size
    geo = Geometry(width, height, resolution, policy)
    th, tw = geo.target
    if (width, height) != (tw, th) and policy == "error":
        # The task's input size for the prior (e.g. 1/factor of it for super-resolution).
        raise ImageError("size", size_message(width, height) if size_message else
                         f"image is {width}x{height}, not the {tw}x{th} this job takes "
                         "(size_policy=error; use resize or center-crop)")
    return geo


def _apply(plane: np.ndarray, geo: Geometry, nearest: bool) -> np.ndarray:
    """Resize/crop one (H, W) float plane onto the prior's grid."""
    th, tw = geo.target
    if (geo.width, geo.height) == (tw, th):
        return plane
    pil = Image.fromarray(plane.astype(np.float32), mode="F")
    box = geo.crop_box()
    if box is not None:
        pil = pil.crop(box)
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
    pil = pil.resize((tw, th), method)
    return np.asarray(pil, dtype=np.float32)


def decode_image(data: bytes, *, channels: int, resolution: int | tuple[int, int],
                 size_policy: str = "error", max_pixels: int = 50_000_000,
                 size_message: Callable[[int, int], str] | None = None
                 ) -> tuple[np.ndarray, Geometry]:
    """Image bytes -> ((C, H, W) float32 in [-1, 1], source geometry); raises ImageError.
    ``resolution`` is the side R of a square target (H = W = R) or its (H, W);
    ``size_message(width, height)`` words the error for a size that policy ``error`` refuses."""
    img = _open(data, max_pixels, "image")
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    geo = _geometry(img, resolution, size_policy, size_message)
    pixels, bits = _pixels_and_bits(data, img)
    arr = _match_channels(pixels, channels)
    planes = [_apply(arr[..., k], geo, nearest=False) for k in range(channels)]
    out = np.clip(np.stack(planes), 0.0, 1.0) * 2.0 - 1.0
    return out.astype(np.float32), replace(geo, bits=bits)


def decode_pixels(data: bytes, *, channels: int, max_pixels: int = 50_000_000) -> np.ndarray:
    """Image bytes -> (H, W, C) float32 in [0, 1] at the file's own size and full bit depth
    (training data, which is cropped or resized later); raises ImageError."""
    img = _open(data, max_pixels, "image")
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    return _match_channels(_pixels(data, img), channels)


def decode_mask(data: bytes, geometry: Geometry, *, max_pixels: int = 50_000_000) -> np.ndarray:
    """Mask bytes -> (1, H, W) float32 in {0, 1} (0 = missing, non-zero = known) on the image's
    target grid; raises ImageError."""
    try:
        img = _open(data, max_pixels, "mask")
    except ImageError as exc:
        raise ImageError("mask-unreadable", str(exc)) from None
    if img.size != (geometry.width, geometry.height):
        raise ImageError("mask-size", f"mask is {img.size[0]}x{img.size[1]}, image is "
                                      f"{geometry.width}x{geometry.height}")
    known = (_pixels(data, img) > 0).any(axis=-1).astype(np.float32)
    known = _apply(known, geometry, nearest=True)
    return (known > 0.5).astype(np.float32)[None]


def encode_png(image: np.ndarray, bits: int = 8) -> bytes:
    """(C, H, W) float in [-1, 1] -> 8-bit PNG bytes (gray for C=1, RGB for C=3); ``bits=16``:
    a 16-bit PNG (Pillow writes 16-bit gray only, so colour goes through ``_png16_bytes``).
    A value decoded from an 8- or 16-bit file encodes back to exactly that value."""
    top = 65535 if bits == 16 else 255
    # float32 at 8 bits, as every run before 16-bit outputs (same bytes); 16 bits need float64.
    scaled = (np.asarray(image, dtype=np.float64 if bits == 16 else np.float32) + 1.0) \
        * (top / 2.0) + 0.5
    arr = np.clip(scaled, 0, top).astype(np.uint16 if bits == 16 else np.uint8)
    if bits == 16 and arr.shape[0] != 1:
        return _png16_bytes(np.transpose(arr, (1, 2, 0)))
    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _png16_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint16 -> a 16-bit RGB PNG, written by the PNG spec (big-endian samples)."""
    height, width = rgb.shape[:2]
    rows = rgb.astype(">u2").reshape(height, width * 3).view(np.uint8).reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (_PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


STD_PNG_SCALE = 65535  # uncertainty PNG: pixel value / 65535 = std on the [-1, 1] scale


def encode_std_png(std: np.ndarray) -> bytes:
    """(H, W) per-pixel std on the [-1, 1] scale -> 16-bit gray PNG, value = std * 65535
    (clipped to [0, 1]; a std of 1 is the widest spread of values in [-1, 1])."""
    arr = np.clip(np.asarray(std, dtype=np.float64), 0.0, 1.0) * STD_PNG_SCALE
    buf = io.BytesIO()
    Image.fromarray(np.round(arr).astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def encode_mask_png(mask: np.ndarray) -> bytes:
    """(1, H, W) {0, 1} mask -> PNG with 0 = missing, 255 = known."""
    buf = io.BytesIO()
    Image.fromarray((np.asarray(mask)[0] > 0.5).astype(np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


