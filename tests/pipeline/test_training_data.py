"""Training data read through the restoration readers: every input `restore` takes (folders,
Parquet incl. Hugging Face image structs, WebDataset tars, s3) becomes a training set; a broken
image is skipped and named, never fatal."""

from __future__ import annotations

import numpy as np
import pytest

from restora_core.datasets import CropSourceSet, ImageArraySet, load_npz, save_npz
from restora_core.training import TrainConfig
from tasks.training_data import build_training_set, read_images

from .shards import img2dataset_members, png, tar_bytes


def rgb_images(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def config(data: str, resolution: int, channels: int = 3, **fields) -> TrainConfig:
    fields.setdefault("data_mode", "resize")  # build_training_set: the on-device sets
    return TrainConfig(data=data, resolution=resolution, channels=channels, **fields)


def test_a_folder_gives_resized_and_cropped_sets_and_names_the_broken_file(tmp_path):
    imgs = rgb_images(4, 40, 48)
    (tmp_path / "sub").mkdir()
    for i, im in enumerate(imgs):
        (tmp_path / ("sub" if i % 2 else ".") / f"im{i}.png").write_bytes(png(im))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"garbage")
    ds, info = build_training_set(config(str(tmp_path), 16))
    assert isinstance(ds, ImageArraySet) and ds.images.shape == (4, 16, 16, 3)
    assert info["format"] == "images" and info["count"] == 4 and info["skipped"] == 1
    assert "broken.png" in info["skipped_examples"][0]
    assert "not-an-image" in info["skipped_examples"][0]
    gray, info = build_training_set(config(str(tmp_path), 16, 1, data_mode="multiscale",
                                           scales=[1, 2], hflip=True))
    assert isinstance(gray, CropSourceSet) and gray.channels == 1 and info["mode"] == "multiscale"
    assert gray.batch(0, 6).shape == (6, 1, 16, 16)


def test_pixels_arrive_exactly_at_the_prior_size(tmp_path):
    imgs = rgb_images(3, 24, 24, seed=1)
    for i, im in enumerate(imgs):
        (tmp_path / f"{i}.png").write_bytes(png(im))
    ds, _ = build_training_set(config(str(tmp_path), 24))
    assert np.array_equal(ds.images, np.stack(imgs))


@pytest.mark.parametrize("hf_struct", [True, False])
def test_parquet_shards_with_an_image_column(tmp_path, hf_struct):
    import pyarrow as pa
    import pyarrow.parquet as pq

    imgs = rgb_images(6, 32, 32)
    for shard in range(2):
        rows = [png(im) for im in imgs[shard * 3:(shard + 1) * 3]]
        if hf_struct:
            col = pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(rows)],
                           type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
            table = pa.table({"image": col, "label": [0, 1, 2]})
        else:
            table = pa.table({"id": ["a", "b", "c"], "image": pa.array(rows, pa.binary())})
        pq.write_table(table, tmp_path / f"part-{shard}.parquet")
    ds, info = build_training_set(config(str(tmp_path), 32))
    assert info["format"] == "parquet" and [s["count"] for s in info["shards"]] == [3, 3]
    assert np.array_equal(ds.images, np.stack(imgs))


def test_webdataset_tars_are_training_data(tmp_path):
    imgs = rgb_images(5, 20, 20, seed=2)
    (tmp_path / "00000.tar").write_bytes(tar_bytes(img2dataset_members(imgs[:3], 0)))
    (tmp_path / "00001.tar").write_bytes(tar_bytes(img2dataset_members(imgs[3:], 1)))
    decoded = read_images(str(tmp_path), 3)
    assert decoded.input_format == "webdataset" and not decoded.skipped
    assert all(np.array_equal(a, b) for a, b in zip(decoded.images, imgs))


def test_an_input_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no decodable images.*broken.png"):
        build_training_set(config(str(tmp_path), 16))


@pytest.mark.integration
def test_images_under_an_s3_prefix_and_npz_sets_on_s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        import s3fs

        host, port = server.get_host_and_port()
        opts = {"endpoint_url": f"http://{host}:{port}"}
        fs = s3fs.S3FileSystem(**opts)
        fs.mkdir("imgs")
        imgs = rgb_images(3, 20, 20)
        for i, im in enumerate(imgs):
            fs.pipe(f"imgs/train/{i}.png", png(im))
        ds, info = build_training_set(config("s3://imgs/train", 20, storage_options=opts))
        assert np.array_equal(ds.images, np.stack(imgs)) and info["count"] == 3
        sha = save_npz(ds, "s3://imgs/sets/train.npz", storage_options=opts)
        back = load_npz("s3://imgs/sets/train.npz", 20, storage_options=opts)
        assert np.array_equal(back.images, ds.images) and len(sha) == 64
        assert not [p for p in fs.find("imgs") if "tmp" in p or "partial" in p]
    finally:
        server.stop()


def keyed_config(data: str, **fields) -> TrainConfig:
    return TrainConfig(data=data, resolution=16, channels=3, batch_size=4, **fields)


def test_image_sources_are_planned_once_with_a_fingerprint_and_train_on_random_crops(tmp_path):
    from tasks.training_data import open_training_source, plan_training_data

    src = tmp_path / "imgs"
    src.mkdir()
    for i, im in enumerate(rgb_images(5, 20, 40)):
        (src / f"{i}.png").write_bytes(png(im))
    (src / "broken.png").write_bytes(b"garbage")
    data = plan_training_data(keyed_config(str(src)), str(tmp_path / "plan"))
    assert not data.stream and data.info["images_listed"] == 6 and data.info["mode"] == "crop"
    again = plan_training_data(keyed_config(str(src)), str(tmp_path / "plan2"))
    assert again.info["fingerprint"] == data.info["fingerprint"]
    source, info = open_training_source(keyed_config(str(src)), data)
    assert info["count"] == 5 and info["skipped"] == 1 and "broken.png" in info["skipped_examples"][0]
    batch = source.batch(0)
    assert batch.x_t.shape == (4, 3, 16, 16)

    (src / "5.png").write_bytes(png(rgb_images(1, 20, 40, seed=9)[0]))
    grown = plan_training_data(keyed_config(str(src)), str(tmp_path / "plan3"))
    assert grown.info["fingerprint"] != data.info["fingerprint"]
    streamed = plan_training_data(keyed_config(str(src), stream_above_mb=1e-6),
                                  str(tmp_path / "plan4"))
    assert streamed.stream


def test_holdout_is_a_stable_split_by_key_that_training_never_sees(tmp_path):
    from tasks.training_data import held_out, open_training_source, plan_training_data

    src = tmp_path / "imgs"
    src.mkdir()
    for i, im in enumerate(rgb_images(40, 16, 16)):
        (src / f"{i:02d}.png").write_bytes(png(im))
    cfg = keyed_config(str(src), holdout=0.25)
    data = plan_training_data(cfg, str(tmp_path / "plan"))
    split = data.info["holdout"]
    assert 0 < split["count"] < 40 and split["fraction"] == 0.25
    assert all(held_out(k, 0.25) for k in split["keys"])
    _, info = open_training_source(cfg, data)
    assert info["count"] == 40 - split["count"] and "keys" not in info["holdout"]
    assert plan_training_data(cfg, str(tmp_path / "p2")).info["holdout"]["keys"] == split["keys"]
