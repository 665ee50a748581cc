"""Output formats without Ray: each format's files, read back with the real ``datasets`` and
``webdataset`` packages, through retry-failed and overwrite (the stages called directly)."""

from __future__ import annotations

import io
import json
import os

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from tasks.batch_io import commit_shard, load_batch, write_batch_parts
from tasks.cleanup import remove_previous_outputs
from tasks.manifest import manifest_uri, read_manifest
from tasks.planning import load_or_make_plan
from tasks.shard import batch_requests
from tasks.spec import JobSpec, RunInfo, parse_spec
from tasks.worker import RestoreWorker
from tasks.writers import get_writer, read_output, resolve_output_format, writer_names

from .conftest import png_bytes

_IMAGE = datasets.Image()


def _gray(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (16, 16), dtype=np.uint8) for _ in range(n)]


def _spec(tmp_path, prior: str, **fields) -> tuple[JobSpec, RunInfo]:
    from restora_core import load_prior

    spec = parse_spec({"input_uri": str(tmp_path / "in"), "output_uri": str(tmp_path / "out"),
                       "task": "box", "prior": prior, "steps": 2, "batch_size": 2, **fields})
    model_id = load_prior(prior).model_id
    return spec, RunInfo(model_id, "", 1, 16, "cpu", "fp32")


def _restore(spec: JobSpec, info: RunInfo, *, retry_failed: bool = False) -> RunInfo:
    """What the flow does for every shard, minus Ray and Prefect; returns the run's RunInfo."""
    plan, _ = load_or_make_plan(spec)
    info = info.writing(spec, resolve_output_format(spec.output_format, plan.input_format))
    worker = RestoreWorker(spec, info, threads=1)
    uris = [manifest_uri(spec.output_uri, s.shard_id) for s in plan.shards]
    for shard, uri in zip(plan.shards, uris):
        redo = None
        if retry_failed:
            old = read_manifest(uri, columns=["source_uri", "status"]).to_pylist()
            redo = [r["source_uri"] for r in old if r["status"] == "error"]
        parts = [write_batch_parts(worker(load_batch(request, spec, info)), spec, info)
                 for request in batch_requests(shard, spec, redo)]
        commit_shard(shard.shard_id, [cols for cols, _ in parts], redo, spec, info,
                     *(pngs for _, pngs in parts), shard_name=shard.output_name)
    get_writer(info.output_format).finish(spec.output_uri, uris, {})
    return info


def _manifest(spec: JobSpec) -> dict[str, dict]:
    fs_root = os.path.join(spec.output_uri, "manifests")
    rows = {}
    for name in sorted(os.listdir(fs_root)):
        for row in read_manifest(os.path.join(fs_root, name)).to_pylist():
            rows[row["id"]] = row
    return rows


def _hf_parquet(path, ids: list[str], images: list[np.ndarray]) -> None:
    """A Parquet file as Hugging Face writes one: an ``Image()`` column, ``Dataset.to_parquet``."""
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image()})
    ds = datasets.Dataset.from_dict({"id": ids, "image": [Image.fromarray(a) for a in images]},
                                    features=features)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))


def test_auto_writes_the_inputs_format_and_the_default_keeps_earlier_config_hashes(tmp_path):
    spec = JobSpec(input_uri=str(tmp_path / "in"), output_uri=str(tmp_path / "out"), task="box")
    assert writer_names() == ("images", "parquet", "webdataset")
    assert [resolve_output_format("auto", f) for f in ("images", "parquet", "webdataset")] == [
        "images", "parquet", "webdataset"]
    assert resolve_output_format("images", "parquet") == "images"
    # Image files are what every run wrote before formats existed: their hash is unchanged.
    assert spec.config_hash("m", "cpu", "fp32", "images") == spec.config_hash("m", "cpu", "fp32")
    assert len({spec.config_hash("m", "cpu", "fp32", f) for f in writer_names()}) == 3
    with pytest.raises(ValueError, match="unknown output format 'zip'"):
        parse_spec({"input_uri": "a", "output_uri": "b", "task": "box", "output_format": "zip"})


def test_a_datasets_parquet_input_restores_to_parquet_that_datasets_loads_as_images(
        tmp_path, tiny_prior_path):
    ids = ["r0", "img.v2", "r2"]
    _hf_parquet(tmp_path / "in" / "part-00000.parquet", ids, _gray(3))
    spec, info = _spec(tmp_path, tiny_prior_path)

    info = _restore(spec, info)

    out = tmp_path / "out" / "data" / "part-00000.parquet"
    assert info.output_format == "parquet" and out.exists()
    assert not (tmp_path / "out" / "images").exists()
    loaded = datasets.load_dataset("parquet", data_files=str(out), split="train",
                                   cache_dir=str(tmp_path / "hf"))
    assert isinstance(loaded.features["image"], datasets.Image)
    assert loaded["id"] == ids  # the source's order
    assert loaded[1]["image"].size == (16, 16)
    assert loaded[1]["status"] == "ok" and loaded[1]["consistency"] is not None
    rows = _manifest(spec)
    assert rows["img.v2"]["output_uri"] == f"{out}#img%2Ev2.png"
    assert loaded[1]["output_uri"] == rows["img.v2"]["output_uri"]
    # The manifest's output_uri finds the very PNG the dataset holds.
    assert read_output(rows["img.v2"]["output_uri"]) == pq.read_table(out)["image"][1]["bytes"].as_py()


def test_a_tarwriter_input_restores_to_tars_that_webdataset_iterates(tmp_path, tiny_prior_path):
    (tmp_path / "in" / "train").mkdir(parents=True)
    with wds.TarWriter(str(tmp_path / "in" / "train" / "shard-a.tar")) as sink:
        for i, image in enumerate(_gray(3, seed=1)):
            sink.write({"__key__": f"s{i:03d}", "png": png_bytes(image),
                        "json": {"caption": f"sample {i}"}})
    spec, info = _spec(tmp_path, tiny_prior_path)

    _restore(spec, info)

    tar = tmp_path / "out" / "data" / "train" / "shard-a.tar"
    samples = list(wds.WebDataset(str(tar), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["s000", "s001", "s002"]
    for sample in samples:
        assert Image.open(io.BytesIO(sample["png"])).size == (16, 16)
        row = json.loads(sample["json"])
        assert row["id"] == f"train/shard-a/{sample['__key__']}" and row["status"] == "ok"
        assert row["output_uri"] == f"{tar}#{sample['__key__']}.png"
        assert row["nfe"] is not None and row["end_time"].startswith("20")


def test_ids_with_dots_become_valid_webdataset_keys(tmp_path, tiny_prior_path):
    ids = ["a.b.c", "plain", "50%.off"]
    _hf_parquet(tmp_path / "in" / "p.parquet", ids, _gray(3, seed=2))
    spec, info = _spec(tmp_path, tiny_prior_path, output_format="webdataset")

    _restore(spec, info)

    samples = list(wds.WebDataset(str(tmp_path / "out" / "data" / "p.tar"), shardshuffle=False))
    assert [json.loads(s["json"])["id"] for s in samples] == ids  # one sample per id
    assert [s["__key__"] for s in samples] == ["a%2Eb%2Ec", "plain", "50%25%2Eoff"]
    assert all("png" in s for s in samples)


def test_images_output_loads_with_imagefolder_with_ids_and_metrics_and_no_labels(
        tmp_path, tiny_prior_path):
    for i, image in enumerate(_gray(4, seed=3)):  # two folders: imagefolder would invent labels
        path = tmp_path / "in" / ("cats" if i % 2 else "dogs") / f"im{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(image))
    spec, info = _spec(tmp_path, tiny_prior_path, shard_size=3, save_inputs=True)

    _restore(spec, info)

    out = tmp_path / "out"
    assert (out / "images" / "cats" / "im1.png").exists() and (out / "preview").exists()
    for data_dir in (out / "images", out):  # the output root too: previews and inputs/ stay out
        loaded = datasets.load_dataset("imagefolder", data_dir=str(data_dir), split="train",
                                       cache_dir=str(tmp_path / f"hf-{data_dir.name}"))
        assert "label" not in loaded.column_names
        assert sorted(loaded["id"]) == ["cats/im1", "cats/im3", "dogs/im0", "dogs/im2"]
        assert loaded.num_rows == 4 and all(v is not None for v in loaded["consistency"])
        assert loaded[0]["image"].size == (16, 16)


def test_retry_failed_keeps_the_good_rows_in_the_rewritten_shard_file(tmp_path, tiny_prior_path):
    images = _gray(4, seed=4)
    src = tmp_path / "in" / "part-0.parquet"
    _hf_parquet(src, ["g0", "g1", "bad", "g3"], images)
    table = pq.read_table(src)
    cells = table["image"].to_pylist()
    cells[2] = {"bytes": b"not a png", "path": None}
    pq.write_table(table.set_column(1, "image", [cells]), src)
    spec, info = _spec(tmp_path, tiny_prior_path)
    out = tmp_path / "out" / "data" / "part-0.parquet"

    _restore(spec, info)
    first = pq.read_table(out).to_pylist()
    assert [r["id"] for r in first] == ["g0", "g1", "g3"]
    _hf_parquet(src, ["g0", "g1", "bad", "g3"], images)  # the bad row is fixed at its source
    _restore(spec, info, retry_failed=True)

    again = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(again) == ["bad", "g0", "g1", "g3"]
    for old in first:  # kept rows: the same pixels and the same manifest row, not redone
        assert again[old["id"]]["image"]["bytes"] == old["image"]["bytes"]
        assert again[old["id"]]["end_time"] == old["end_time"]
    assert {r["id"]: r["status"] for r in _manifest(spec).values()} == dict.fromkeys(again, "ok")


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_overwrite_removes_the_shard_files_the_manifests_name_and_nothing_else(
        tmp_path, tiny_prior_path, fmt):
    _hf_parquet(tmp_path / "in" / "a.parquet", ["x", "y"], _gray(2, seed=5))
    _hf_parquet(tmp_path / "in" / "b.parquet", ["z"], _gray(1, seed=6))
    spec, info = _spec(tmp_path, tiny_prior_path, output_format=fmt, save_inputs=True)
    _restore(spec, info)
    data = tmp_path / "out" / "data"
    suffix = ".parquet" if fmt == "parquet" else ".tar"
    assert sorted(p.name for p in data.iterdir()) == [f"a{suffix}", f"b{suffix}"]
    assert (tmp_path / "out" / "inputs" / "a" / "x.png").exists()
    (data / f"mine{suffix}").write_bytes(b"the user's own file")

    removed = remove_previous_outputs(spec.output_uri)

    assert removed == {"manifests": 2, "files": 2, "damaged": 0}
    assert [p.name for p in data.iterdir()] == [f"mine{suffix}"]
    assert not (tmp_path / "out" / "inputs").exists() and not (tmp_path / "out" / "manifests").exists()
