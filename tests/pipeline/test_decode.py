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
