"""Decoding: modes, bit depths, size policy, masks, bombs and unsafe ids."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tasks.decode import ImageError, decode_image, decode_mask, encode_png, safe_id

from .conftest import png_bytes


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_gray_png_maps_to_minus_one_one():
    arr = np.array([[0, 255], [128, 64]], dtype=np.uint8)
    out, geo = decode_image(png_bytes(arr), channels=1, resolution=2)
    assert out.shape == (1, 2, 2) and out.dtype == np.float32
    assert out[0, 0, 0] == -1.0 and out[0, 0, 1] == 1.0
    assert (geo.width, geo.height) == (2, 2)


def test_sixteen_bit_gray_keeps_its_range():
    arr = np.array([[0, 65535], [32768, 0]], dtype=np.uint16)
    out, _ = decode_image(_encode(Image.fromarray(arr)), channels=1, resolution=2)
    assert out.min() == -1.0 and out.max() == pytest.approx(1.0)
    assert out[0, 1, 0] == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "1", "CMYK"])
def test_every_mode_becomes_the_priors_channels(mode):
    img = Image.new("RGB", (8, 8), (200, 10, 10)).convert(mode)
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    gray, _ = decode_image(_encode(img, fmt), channels=1, resolution=8)
    rgb, _ = decode_image(_encode(img, fmt), channels=3, resolution=8)
    assert gray.shape == (1, 8, 8) and rgb.shape == (3, 8, 8)
    assert np.all(np.abs(rgb) <= 1.0)


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "WEBP", "TIFF"])
def test_common_formats_decode(fmt):
    img = Image.new("RGB", (8, 8), (10, 200, 10))
    out, _ = decode_image(_encode(img, fmt), channels=3, resolution=8)
    assert out[1].mean() > 0.5


def test_wrong_size_is_an_error_under_the_default_policy():
    with pytest.raises(ImageError, match="size: image is 10x8"):
        decode_image(png_bytes(np.zeros((8, 10), np.uint8)), channels=1, resolution=8)


def test_resize_and_center_crop_reach_the_priors_size():
    wide = np.zeros((8, 16), np.uint8)
    wide[:, 4:12] = 255  # the centre square is white
    out, _ = decode_image(png_bytes(wide), channels=1, resolution=4, size_policy="center-crop")
    assert out.shape == (1, 4, 4) and out.min() > 0.9
    out, _ = decode_image(png_bytes(wide), channels=1, resolution=4, size_policy="resize")
    assert out.shape == (1, 4, 4) and out.min() < 0


def test_decompression_bomb_is_refused_before_decoding():
    big = png_bytes(np.zeros((300, 300), np.uint8))
    with pytest.raises(ImageError, match="too-large"):
        decode_image(big, channels=1, resolution=300, max_pixels=10_000)


def test_truncated_and_non_image_files_name_their_cause():
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(ImageError, match="^(truncated|unreadable):"):
        decode_image(data[: len(data) // 2], channels=1, resolution=64)
    with pytest.raises(ImageError, match="^not-an-image:"):
        decode_image(b"hello, I am text", channels=1, resolution=64)
    with pytest.raises(ImageError, match="^truncated:"):
        decode_image(b"", channels=1, resolution=64)


def test_mask_zero_is_missing_nonzero_is_known():
    _, geo = decode_image(png_bytes(np.zeros((4, 4), np.uint8)), channels=1, resolution=4)
    m = np.array([[0, 1, 2, 255]] * 4, np.uint8)
    mask = decode_mask(png_bytes(m), geo)
    assert mask.shape == (1, 4, 4)
    assert mask[0, 0].tolist() == [0, 1, 1, 1]


def test_mask_of_another_size_is_an_error_for_that_image():
    _, geo = decode_image(png_bytes(np.zeros((4, 4), np.uint8)), channels=1, resolution=4)
    with pytest.raises(ImageError, match="mask-size: mask is 5x5, image is 4x4"):
        decode_mask(png_bytes(np.ones((5, 5), np.uint8)), geo)


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "a//b", "", "a\\b", "c:x",
                                 "x\x00y", ".", "a/./b"])
def test_ids_that_could_escape_the_output_prefix_are_refused(bad):
    with pytest.raises(ImageError, match="^unsafe-id:"):
        safe_id(bad)


def test_nested_ids_are_kept():
    assert safe_id("train/cats/001") == "train/cats/001"


def test_png_round_trip_is_within_one_level():
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 4, 4)
    back, _ = decode_image(encode_png(x), channels=1, resolution=4)
    assert np.abs(back - x).max() <= 1 / 127.5 + 1e-6


def _png16(samples: np.ndarray) -> bytes:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA by the last axis) cycling all five row filters.

    Pillow cannot write 16-bit colour PNGs, so this writes one by the PNG spec: big-endian
    samples, each row filtered with None, Sub, Up, Average or Paeth in turn, zlib-compressed.
    """
    import struct
    import zlib

    samples = samples[..., None] if samples.ndim == 2 else samples
    height, width, channels = samples.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    bpp = 2 * channels
    raw = np.frombuffer(samples.astype(">u2").tobytes(), np.uint8).reshape(height, width * bpp)
    raw = raw.astype(np.int32)
    rows = []
    for y in range(height):
        cur = raw[y]
        up = raw[y - 1] if y else np.zeros_like(cur)
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        kind = y % 5
        if kind == 0:
            pred = np.zeros_like(cur)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = up
        elif kind == 3:
            pred = (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        rows.append(bytes([kind]) + ((cur - pred) % 256).astype(np.uint8).tobytes())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def _sixteen_bit_rgb(height: int = 7, width: int = 9) -> np.ndarray:
    """RGB samples whose high bytes repeat: only the low byte tells neighbours apart."""
    rng = np.random.default_rng(5)
    high = rng.integers(0, 256, (height, width, 3)) & 0xF0
    return (high * 256 + rng.integers(0, 256, (height, width, 3))).astype(np.uint16)


def _expected(samples: np.ndarray) -> np.ndarray:
    return np.moveaxis(samples.astype(np.float64) / 65535.0 * 2 - 1, -1, 0)


def test_sixteen_bit_rgb_png_is_read_at_full_precision():
    samples = _sixteen_bit_rgb()
    out, _ = decode_image(_png16(samples), channels=3, resolution=7, size_policy="resize")
    assert out.shape == (3, 7, 7)
    exact, _ = decode_image(_png16(samples[:, :7]), channels=3, resolution=7)
    np.testing.assert_allclose(exact, _expected(samples[:, :7]), atol=1e-6)
    # Pillow alone keeps only the high byte: distinct 16-bit values collapse to equal 8-bit ones.
    eight = np.asarray(Image.open(io.BytesIO(_png16(samples[:, :7]))))
    assert len(np.unique(eight)) < len(np.unique(samples[:, :7]))
    assert len(np.unique(exact)) == len(np.unique(samples[:, :7]))


def test_sixteen_bit_rgba_and_gray_alpha_png_keep_their_low_bytes():
    samples = _sixteen_bit_rgb(8, 8)
    alpha = np.full((8, 8, 1), 65535, np.uint16)
    rgb, _ = decode_image(_png16(np.concatenate([samples, alpha], -1)), channels=3, resolution=8)
    np.testing.assert_allclose(rgb, _expected(samples), atol=1e-6)
    gray_alpha = np.concatenate([samples[..., :1], alpha], -1)
    gray, _ = decode_image(_png16(gray_alpha), channels=1, resolution=8)
    np.testing.assert_allclose(gray, _expected(samples[..., :1]), atol=1e-6)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_sixteen_bit_rgb_and_gray_tiff_from_tifffile_are_read_at_full_precision(compression):
    import tifffile

    samples = _sixteen_bit_rgb(8, 8)
    for arr, channels in ((samples, 3), (samples[..., 0], 1)):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, compression=compression,
                         photometric="rgb" if channels == 3 else "minisblack")
        out, _ = decode_image(buf.getvalue(), channels=channels, resolution=8)
        expected = _expected(arr if arr.ndim == 3 else arr[..., None])
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_sixteen_bit_gray_png_from_skimage_keeps_values_eight_bits_would_merge(tmp_path):
    from skimage import io as skio

    samples = (np.arange(64, dtype=np.uint16).reshape(8, 8) + 0x4100)  # one high byte, 64 values
    skio.imsave(tmp_path / "g.png", samples, check_contrast=False)
    out, _ = decode_image((tmp_path / "g.png").read_bytes(), channels=1, resolution=8)
    assert len(np.unique(out)) == 64
    np.testing.assert_allclose(out, _expected(samples[..., None]), atol=1e-6)


def test_sixteen_bit_mask_with_only_low_bits_set_counts_as_known():
    _, geo = decode_image(png_bytes(np.zeros((4, 4), np.uint8)), channels=1, resolution=4)
    samples = np.zeros((4, 4, 3), np.uint16)
    samples[:, 2:] = 1  # non-zero only in the low byte
    mask = decode_mask(_png16(samples), geo)
    assert mask[0, 0].tolist() == [0, 0, 1, 1]
