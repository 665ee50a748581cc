"""An outpainting job: inputs smaller than the prior come back at the prior's size, their pixels
exact, the new border filled (the stages run directly, without Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tasks.batch_io import load_batch, write_batch
from tasks.manifest import rows_to_table
from tasks.spec import JobSpecError, parse_spec
from tasks.validate import validate_job
from tasks.worker import RestoreWorker

from .conftest import png_bytes


def _outpaint_job(tmp_path, prior_path: str, size: tuple[int, int], **fields):
    rng = np.random.default_rng(7)
    src = tmp_path / "in"
    src.mkdir()
    images = [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(2)]
    for i, image in enumerate(images):
        (src / f"im{i}.png").write_bytes(png_bytes(image))
    spec = parse_spec({"input_uri": str(src), "output_uri": str(tmp_path / "out"),
                       "task": "outpaint", "prior": prior_path, **fields})
    items = [{"id": f"im{i}", "source": str(src / f"im{i}.png")} for i in range(2)]
    return spec, images, items


@pytest.mark.parametrize(("size", "task_params", "inside"), [
    ((12, 12), {}, (slice(2, 14), slice(2, 14))),  # default pad: 2 px on every edge of 16
    ((13, 10), {"pad": [0, 4, 3, 2]}, (slice(0, 13), slice(2, 12))),
])
def test_outpaint_returns_prior_sized_images_with_the_input_pixels_exact(
        tmp_path, tiny_prior_path, size, task_params, inside):
    spec, images, items = _outpaint_job(
        tmp_path, tiny_prior_path, size, task_params=task_params,
        method_params={"steps": 3, "paste_known": True})
    info = validate_job(spec)
    batch = load_batch({"kind": "images", "shard_id": "shard-00000", "items": items}, spec, info)
    restored = RestoreWorker(spec, info, threads=1)(batch)
    assert list(restored["status"]) == ["ok", "ok"], list(restored["error"])
    table = rows_to_table(write_batch(restored, spec, info))
    assert table["width"].to_pylist() == [size[1]] * 2  # the source's size, as read
    for image, uri in zip(images, table["output_uri"].to_pylist()):
        out = np.asarray(Image.open(uri))
        assert out.shape == (16, 16)
        assert np.array_equal(out[inside], image)


def test_outpaint_inputs_of_the_wrong_size_are_error_rows_and_bad_pads_fail_at_the_edge(
        tmp_path, tiny_prior_path):
    spec, _, items = _outpaint_job(tmp_path, tiny_prior_path, (16, 16), size_policy="error")
    info = validate_job(spec)
    batch = load_batch({"kind": "images", "shard_id": "shard-00000", "items": items}, spec, info)
    assert list(batch["status"]) == ["error", "error"]
    assert batch["error"][0].startswith("size: the input must be 12x12 for tiny16.safetensors")
    bad = spec.model_copy(update={"task_params": {"pad": [8, 0, 8, 0]}})
    with pytest.raises(JobSpecError, match=r"task_params: pad \[8, 0, 8, 0\] leaves no known "
                                           r"pixels of the prior's 16x16"):
        validate_job(bad)
