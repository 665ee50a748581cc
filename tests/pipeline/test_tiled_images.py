"""Images of any size through the worker and the write stage (size policy ``tile``, the default):
each comes back at its own size with its known pixels exact, costs what its holes cost, and the
images of the prior's size restore exactly as they did before tiling existed."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from restora_core.samplers import get_method
from tasks.batch_io import load_batch, write_batch
from tasks.manifest import rows_to_table
from tasks.preview import TILE, preview_strip
from tasks.spec import parse_spec
from tasks.validate import validate_job
from tasks.worker import BatchOutOfMemory, RestoreWorker, worker_kwargs

from .conftest import png_bytes

STEPS = 2
COST = get_method("restora_flow").cost("inpaint", {"steps": STEPS})  # one tile, one sample


def _hole(height: int, width: int, top: int, left: int, side: int = 3) -> np.ndarray:
    """A mask file's pixels: 255 = known, 0 = a ``side`` x ``side`` hole at (top, left)."""
    mask = np.full((height, width), 255, np.uint8)
    mask[top:top + side, left:left + side] = 0
    return mask


def _job(tmp_path, prior: str, images: dict[str, tuple[np.ndarray, np.ndarray]], **fields):
    """Write ``images`` (name -> (pixels, mask)) as PNGs with masks; return (spec, info, batch)."""
    src, masks = tmp_path / "in", tmp_path / "masks"
    src.mkdir(parents=True, exist_ok=True)
    masks.mkdir(exist_ok=True)
    items = []
    for name, (pixels, mask) in images.items():
        (src / f"{name}.png").write_bytes(png_bytes(pixels))
        (masks / f"{name}.png").write_bytes(png_bytes(mask))
        items.append({"id": name, "source": str(src / f"{name}.png"),
                      "mask": str(masks / f"{name}.png")})
    spec = parse_spec({"input_uri": str(src), "output_uri": str(tmp_path / "out"),
                       "masks_uri": str(masks), "task": "inpaint", "prior": prior,
                       "method_params": {"steps": STEPS}, **fields})
    info = validate_job(spec)
    batch = load_batch({"kind": "images", "shard_id": "shard-00000", "items": items,
                        "preview": True}, spec.input, spec.restoration, info)
    return spec, info, batch


def _run(spec, info, batch, worker=None):
    """Restore and write ``batch``: (manifest rows by id, restored batch)."""
    restored = (worker or RestoreWorker(**worker_kwargs(spec, info), threads=1))(batch)
    table = rows_to_table(write_batch(restored, spec.output, info))
    return {r["id"]: r for r in table.to_pylist()}, restored


def _output(spec, name: str) -> np.ndarray:
    with Image.open(f"{spec.output_uri}/images/{name}.png") as img:
        return np.asarray(img)


def _mixed(rng, dtype=np.uint8) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    top = np.iinfo(dtype).max + 1
    return {"prior": (rng.integers(0, top, (16, 16), dtype=dtype), _hole(16, 16, 6, 6)),
            "wide": (rng.integers(0, top, (23, 40), dtype=dtype), _hole(23, 40, 10, 30)),
            "thin": (rng.integers(0, top, (30, 9), dtype=dtype), _hole(30, 9, 20, 3))}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_mixed_sizes_come_back_at_their_own_size_with_known_pixels_exact(
        tmp_path, tiny_prior_path, dtype):
    images = _mixed(np.random.default_rng(0), dtype)
    spec, info, batch = _job(tmp_path, tiny_prior_path, images)
    assert spec.size_policy == "tile"

    rows, _ = _run(spec, info, batch)

    for name, (pixels, mask) in images.items():
        assert rows[name]["status"] == "ok", rows[name]["error"]
        out = _output(spec, name)
        assert out.shape == pixels.shape and out.dtype == pixels.dtype
        assert (rows[name]["width"], rows[name]["height"]) == (pixels.shape[1], pixels.shape[0])
        if name == "prior":  # restored as before tiling: the method decides its known pixels
            continue
        known = mask > 0
        np.testing.assert_array_equal(out[known], pixels[known])
        assert (out[~known] != pixels[~known]).any()  # the hole was restored, not copied


def test_a_small_hole_costs_one_tile_whatever_the_image_size(tmp_path, tiny_prior_path):
    rng = np.random.default_rng(1)
    images = _mixed(rng)
    two = _hole(48, 64, 4, 4)
    two[40:43, 55:58] = 0  # a second hole, far from the first: its own window
    images["two_holes"] = (rng.integers(0, 256, (48, 64), dtype=np.uint8), two)
    spec, info, batch = _job(tmp_path, tiny_prior_path, images)

    rows, _ = _run(spec, info, batch)

    for name in ("prior", "wide", "thin"):
        assert (rows[name]["nfe"], rows[name]["windows"], rows[name]["tiles"]) == (COST, 1, 1)
    assert (rows["two_holes"]["nfe"], rows["two_holes"]["windows"]) == (2 * COST, 2)
    assert rows["two_holes"]["tiles"] == 1


def test_an_all_missing_image_is_restored_whole_on_a_grid_of_tiles(tmp_path, tiny_prior_path):
    rng = np.random.default_rng(2)
    images = {"gone": (rng.integers(0, 256, (23, 40), dtype=np.uint8),
                       np.zeros((23, 40), np.uint8))}
    spec, info, batch = _job(tmp_path, tiny_prior_path, images)

    rows, _ = _run(spec, info, batch)

    row = rows["gone"]
    assert row["status"] == "ok" and row["windows"] == 1 and row["tiles"] == 6  # 2 rows x 3
    assert row["nfe"] == 6 * COST and row["known_fraction"] == 0
    assert _output(spec, "gone").shape == (23, 40)


def test_images_of_the_priors_size_restore_as_without_tiling_in_any_company(
        tmp_path, tiny_prior_path):
    images = _mixed(np.random.default_rng(3))
    spec, info, batch = _job(tmp_path / "tile", tiny_prior_path, images)
    rows, restored = _run(spec, info, batch)
    alone = {"prior": images["prior"]}
    spec_e, info_e, batch_e = _job(tmp_path / "error", tiny_prior_path, alone,
                                   size_policy="error")
    rows_e, restored_e = _run(spec_e, info_e, batch_e)

    np.testing.assert_array_equal(restored["restored"][0], restored_e["restored"][0])
    assert rows["prior"]["nfe"] == rows_e["prior"]["nfe"]
    # Another batch size and company change no pixel of a tiled image: its seed is its own.
    spec_b, info_b, batch_b = _job(tmp_path / "b", tiny_prior_path, {"wide": images["wide"]},
                                   batch_size=1)
    _, restored_b = _run(spec_b, info_b, batch_b)
    np.testing.assert_allclose(restored_b["restored"][0], restored["restored"][1], atol=1e-5)


def test_several_samples_give_an_uncertainty_map_of_the_full_image(tmp_path, tiny_prior_path):
    images = _mixed(np.random.default_rng(4))
    spec, info, batch = _job(tmp_path, tiny_prior_path, images, samples=2,
                             save_uncertainty=True)

    rows, _ = _run(spec, info, batch)

    for name, (pixels, mask) in images.items():
        std = np.asarray(Image.open(f"{spec.output_uri}/uncertainty/{name}.png"))
        assert std.shape == pixels.shape
        assert std[mask == 0].mean() > 0 and rows[name]["uncertainty_mean"] > 0
        if name != "prior":  # tiled: known pixels are kept exactly, so they have no spread
            assert (std[mask > 0] == 0).all()


class _FitsTiles:
    """A velocity that holds at most ``limit`` tiles per network pass (the allocation fails
    above it, as a CUDA allocation would)."""

    def __init__(self, velocity, limit: int):
        self.velocity, self.limit, self.passes = velocity, limit, []

    def __call__(self, x, t):
        self.passes.append(x.shape[0])
        if x.shape[0] > self.limit:
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.velocity(x, t)


def _limited(spec, info, limit: int) -> RestoreWorker:
    from dataclasses import replace

    worker = RestoreWorker(**worker_kwargs(spec, info), threads=1)
    worker.prior = replace(worker.prior, velocity=_FitsTiles(worker.prior.velocity, limit))
    return worker


def test_a_tiled_image_that_runs_out_of_memory_halves_its_tiles_per_pass(tmp_path,
                                                                          tiny_prior_path):
    rng = np.random.default_rng(5)
    images = {"gone": (rng.integers(0, 256, (23, 40), dtype=np.uint8),
                       np.zeros((23, 40), np.uint8))}  # 6 tiles
    spec, info, batch = _job(tmp_path, tiny_prior_path, images, batch_size=8)
    _, plain = _run(spec, info, batch)
    worker = _limited(spec, info, limit=2)

    rows, out = _run(spec, info, batch, worker)

    assert rows["gone"]["status"] == "ok" and worker.oom_splits == 2  # 8 -> 4 -> 2 tiles
    assert max(worker.prior.velocity.passes[2:]) == 2
    np.testing.assert_allclose(out["restored"][0], plain["restored"][0], atol=1e-5)
    none_fit = _limited(spec, info, limit=0)
    with pytest.raises(BatchOutOfMemory, match=r"one tile of image \(gone\)"):
        none_fit(batch)


def test_the_preview_shows_a_large_image_scaled_down_with_its_windows(tmp_path,
                                                                       tiny_prior_path):
    rng = np.random.default_rng(6)
    images = {"big": (rng.integers(0, 256, (60, 200), dtype=np.uint8), _hole(60, 200, 30, 100))}
    spec, info, batch = _job(tmp_path, tiny_prior_path, images)
    _, restored = _run(spec, info, batch)

    (window,) = restored["window_boxes"][0]
    assert window == (23, 93, 16, 16)  # one tile centred on the hole
    strip = np.asarray(Image.open(next((tmp_path / "out" / "preview").rglob("*.png"))))
    assert strip.shape[0] == round(60 * TILE / 200)  # longer side scaled to TILE
    plain = np.asarray(Image.open(io.BytesIO(preview_strip(restored["observed"][0],
                                                           restored["restored"][0]))))
    outlined = (strip != plain).any(axis=-1)
    assert outlined.any() and not outlined[:, :TILE].any()  # only on the restored picture


def test_superres_and_outpaint_of_any_size_restore_their_own_canvas(tmp_path, tiny_prior_path):
    rng = np.random.default_rng(7)
    src = tmp_path / "in"
    src.mkdir()
    low = rng.integers(0, 256, (7, 10), dtype=np.uint8)
    (src / "low.png").write_bytes(png_bytes(low))
    items = [{"id": "low", "source": str(src / "low.png"), "mask": None}]
    for task, shape in (("superres", (14, 20)), ("outpaint", (11, 14))):
        spec = parse_spec({"input_uri": str(src), "output_uri": str(tmp_path / task),
                           "task": task, "prior": tiny_prior_path,
                           "method_params": {"steps": STEPS}})
        info = validate_job(spec)
        batch = load_batch({"kind": "images", "shard_id": "s", "items": items}, spec.input, spec.restoration, info)
        rows, _ = _run(spec, info, batch)
        assert rows["low"]["status"] == "ok", rows["low"]["error"]
        out = _output(spec, "low")
        assert out.shape == shape
        if task == "outpaint":  # pads of 16/8 = 2 px: the input is the canvas's exact centre
            np.testing.assert_array_equal(out[2:-2, 2:-2], low)
        else:  # restored whole: one window over the canvas padded to 16 rows
            assert (rows["low"]["windows"], rows["low"]["tiles"]) == (1, 2)


class _Counting:
    """A velocity that records the tiles of every network pass."""

    def __init__(self, velocity):
        self.velocity, self.passes = velocity, []

    def __call__(self, x, t):
        self.passes.append(x.shape[0])
        return self.velocity(x, t)


def _wrapped(spec, info, wrap) -> RestoreWorker:
    from dataclasses import replace

    worker = RestoreWorker(**worker_kwargs(spec, info), threads=1)
    worker.prior = replace(worker.prior, velocity=wrap(worker.prior.velocity))
    return worker


def test_small_holes_of_different_images_share_network_passes(tmp_path, tiny_prior_path):
    images = _mixed(np.random.default_rng(8))
    del images["prior"]  # two images of other sizes, one small hole each: one tile each
    spec, info, batch = _job(tmp_path / "both", tiny_prior_path, images, batch_size=8)
    worker = _wrapped(spec, info, _Counting)

    rows, restored = _run(spec, info, batch, worker)

    assert worker.prior.velocity.passes == [2] * COST  # one pass of both tiles per evaluation
    assert rows["wide"]["nfe"] == rows["thin"]["nfe"] == COST  # each still pays its own tile
    for k, name in enumerate(images):  # and each has the pixels it has alone
        spec_a, info_a, batch_a = _job(tmp_path / name, tiny_prior_path, {name: images[name]})
        _, alone = _run(spec_a, info_a, batch_a)
        np.testing.assert_allclose(restored["restored"][k], alone["restored"][0], atol=1e-5)
    spec_1, info_1, batch_1 = _job(tmp_path / "one", tiny_prior_path, images, batch_size=1)
    one = _wrapped(spec_1, info_1, _Counting)
    _run(spec_1, info_1, batch_1, one)
    assert one.prior.velocity.passes == [1] * (2 * COST)


def test_images_sharing_passes_that_run_out_of_memory_halve_and_name_them(tmp_path,
                                                                          tiny_prior_path):
    rng = np.random.default_rng(9)
    images = {name: (rng.integers(0, 256, (23, 40), dtype=np.uint8),
                     np.zeros((23, 40), np.uint8)) for name in ("a", "b")}  # 6 tiles each
    spec, info, batch = _job(tmp_path, tiny_prior_path, images, batch_size=8)
    _, plain = _run(spec, info, batch)
    worker = _limited(spec, info, limit=2)

    rows, out = _run(spec, info, batch, worker)

    assert all(rows[n]["status"] == "ok" for n in images) and worker.oom_splits == 2
    for k in range(2):
        np.testing.assert_allclose(out["restored"][k], plain["restored"][k], atol=1e-5)
    with pytest.raises(BatchOutOfMemory, match=r"one tile of images \(a, b\)"):
        _limited(spec, info, limit=0)(batch)


class _NaNOnBright:
    """A velocity that breaks (NaN) on bright tiles, as a prior can on content it never saw."""

    def __init__(self, velocity):
        self.velocity = velocity

    def __call__(self, x, t):
        import torch

        v = self.velocity(x, t)
        bright = (x.flatten(1).mean(1) > 0.3).view(-1, 1, 1, 1)
        return torch.where(bright, torch.full_like(v, float("nan")), v)


def test_a_failing_image_in_a_shared_pass_is_the_only_error_row(tmp_path, tiny_prior_path):
    images = _mixed(np.random.default_rng(10))
    del images["prior"]
    images["white"] = (np.full((30, 40), 255, np.uint8), _hole(30, 40, 12, 12))
    spec, info, batch = _job(tmp_path / "all", tiny_prior_path, images)
    worker = _wrapped(spec, info, _NaNOnBright)

    rows, restored = _run(spec, info, batch, worker)

    assert rows["white"]["status"] == "error" and "NaN" in rows["white"]["error"]
    for k, name in enumerate(images):
        if name == "white":
            continue
        assert rows[name]["status"] == "ok", rows[name]["error"]
        spec_a, info_a, batch_a = _job(tmp_path / name, tiny_prior_path, {name: images[name]})
        _, alone = _run(spec_a, info_a, batch_a)
        np.testing.assert_allclose(restored["restored"][k], alone["restored"][0], atol=1e-5)
