"""Streaming training data: batches read from the readers' shards while training are the same on
any worker count (for fixed streams), cover every image once per stream epoch, resume exactly
from a checkpoint's positions, skip broken images and surface storage failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restora_core.training.keyed import SampleRule
from tasks.planning import make_plan
from tasks.spec import InputSpec, OutputSpec
from tasks.training_stream import StreamingImages, plan_input, stream_shards

from .shards import img2dataset_members, png, tar_bytes

SEED = 7


def folder(tmp_path, images: list[np.ndarray], shard_size: int):
    """PNGs of ``images`` under ``tmp_path/in`` planned in shards of ``shard_size``:
    (shards, input spec, format)."""
    root = tmp_path / "in"
    root.mkdir()
    for i, im in enumerate(images):
        (root / f"im{i:03d}.png").write_bytes(png(im))
    # read_batch 2: a shard of several requests, fetched concurrently
    return planned(tmp_path, InputSpec(input_uri=str(root), shard_size=shard_size, read_batch=2))


def planned(tmp_path, source: InputSpec, scratch: str = "scratch"):
    plan = make_plan(source, OutputSpec(output_uri=str(tmp_path / scratch)))
    return plan.shards, source, plan.input_format


def test_plan_input_plans_once_for_every_worker(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for i, im in enumerate(random_images(5)):
        (root / f"{i}.png").write_bytes(png(im))
    shards, source, fmt = plan_input(str(root), str(tmp_path / "plan"), shard_size=2)
    assert fmt == "images" and [s.count for s in shards] == [2, 2, 1]
    assert all(s.items_uri.startswith(str(tmp_path / "plan")) for s in shards)
    assert source.shard_size == 2


def random_images(n: int, size: int = 20, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def flat_images(n: int) -> list[np.ndarray]:
    """Image ``i`` is the uniform gray level ``10*i + 5`` (any crop of it tells which it is)."""
    return [np.full((12, 12), 10 * i + 5, np.uint8) for i in range(n)]


def which(batch) -> list[int]:
    """The flat image each sample of a batch shows (x1 = x_t + (1 - t) u_t)."""
    t = batch.t.view(-1, 1, 1, 1)
    x1 = batch.x_t + (1 - t) * batch.u_t
    return [int(round((float(v) + 1) * 127.5 - 5) / 10) for v in x1.mean(dim=(1, 2, 3))]


def source_of(planning, rule, *, batch_size=4, **kw) -> StreamingImages:
    shards, source, fmt = planning
    return StreamingImages(shards, source, fmt, rule, SEED, batch_size=batch_size, **kw)


def run(sources: list[StreamingImages], steps) -> list[dict[str, torch.Tensor]]:
    """Every step's batch, the workers' parts concatenated in rank order."""
    out = []
    for k in steps:
        parts = [s.batch(k) for s in sources]
        out.append({f: torch.cat([getattr(p, f) for p in parts]) for f in ("x_t", "t", "u_t")})
    return out


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(torch.equal(x[f], y[f]) for x, y in zip(a, b) for f in x)


CROP = SampleRule(16, 3, "crop", hflip=True)


def test_two_workers_together_draw_the_batches_of_one(tmp_path):
    planning = folder(tmp_path, random_images(12), shard_size=3)
    one = source_of(planning, CROP, streams=2)
    two = [source_of(planning, CROP, streams=2, rank=r, world_size=2) for r in range(2)]
    try:
        alone, together = run([one], range(6)), run(two, range(6))
        assert same(alone, together)
        b = two[0].batch(6)
        assert b.x_t.shape == (2, 3, 16, 16) and b.u_t.shape == (2, 3, 16, 16)
        assert b.t.shape == (2,) and bool(((b.t >= 0) & (b.t < 1)).all())
        x1 = b.x_t + (1 - b.t.view(-1, 1, 1, 1)) * b.u_t
        assert float(x1.min()) >= -1 - 1e-5 and float(x1.max()) <= 1 + 1e-5
    finally:
        for s in (one, *two):
            s.close()


def test_with_more_streams_than_workers_each_worker_owns_a_block_of_streams(tmp_path):
    planning = folder(tmp_path, random_images(12), shard_size=3)
    one = source_of(planning, CROP, batch_size=8, streams=4)
    two = [source_of(planning, CROP, batch_size=8, streams=4, rank=r, world_size=2)
           for r in range(2)]
    try:
        for k in range(3):
            full = one.batch(k)
            parts = [full.x_t[2 * s:2 * s + 2] for s in range(4)]  # streams 0..3, 2 samples each
            # contiguous blocks: rank 0 streams 0-1, rank 1 streams 2-3, so the workers' parts
            # in rank order are the one-worker batch
            assert torch.equal(two[0].batch(k).x_t, torch.cat([parts[0], parts[1]]))
            assert torch.equal(two[1].batch(k).x_t, torch.cat([parts[2], parts[3]]))
    finally:
        for s in (one, *two):
            s.close()


def test_workers_read_disjoint_shards_and_every_image_once_per_stream_epoch(tmp_path):
    n, shard_size = 12, 3
    planning = folder(tmp_path, flat_images(n), shard_size=shard_size)
    rule = SampleRule(8, 1, "crop")
    workers = [source_of(planning, rule, streams=2, rank=r, world_size=2) for r in range(2)]
    try:
        seen = [[], []]
        for k in range(6):  # two stream epochs: 2 shards x 3 images per stream, 2 a step
            for r, w in enumerate(workers):
                seen[r] += which(w.batch(k))
    finally:
        for w in workers:
            w.close()
    shards = planning[0]
    for epoch in range(2):
        mine = []
        for r in range(2):
            got = seen[r][6 * epoch:6 * epoch + 6]
            assert len(set(got)) == 6  # each image of the stream's epoch once
            expected = {int(sh.shard_id[-5:]) * shard_size + i
                        for j in stream_shards(len(shards), 2, r, SEED, epoch)
                        for sh in [shards[j]] for i in range(shard_size)}
            assert set(got) == expected
            mine.append(set(got))
        assert not mine[0] & mine[1] and mine[0] | mine[1] == set(range(n))
    assert seen[0][:6] != seen[0][6:]  # a new order in the next epoch


def test_resume_from_stored_positions_gives_the_same_batches_on_any_worker_count(tmp_path):
    images = random_images(11)
    planning = folder(tmp_path, images, shard_size=3)
    (tmp_path / "in" / "im003.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")  # a skipped row
    held = {row_key_of(tmp_path, 5)}
    kw = {"streams": 2, "held_out": held.__contains__, "decode_threads": 2}
    full = source_of(planning, CROP, **kw)
    halves = [source_of(planning, CROP, rank=r, world_size=2, **kw) for r in range(2)]
    try:
        uninterrupted = run([full], range(7))
        run(halves, range(3))
        positions_w2 = [h.position(3) for h in halves]
        assert [set(p["streams"]) for p in positions_w2] == [{"0"}, {"1"}]
    finally:
        full.close()
        for h in halves:
            h.close()
    prefetched = source_of(planning, CROP, **kw)
    try:
        run([prefetched], range(4))  # batch(3) taken before the checkpoint asks (prefetch)
        positions_w1 = [prefetched.position(3)]
    finally:
        prefetched.close()
    replanned = planned(tmp_path, planning[1], "scratch-of-the-resumed-run")
    for positions in (positions_w2, positions_w1):
        one = source_of(replanned, CROP, **kw)
        two = [source_of(replanned, CROP, rank=r, world_size=2, **kw) for r in range(2)]
        try:
            for s in (one, *two):
                s.restore(positions, 3)
            assert same(run([one], range(3, 7)), uninterrupted[3:])
            assert same(run(two, range(3, 7)), uninterrupted[3:])
        finally:
            for s in (one, *two):
                s.close()


def row_key_of(tmp_path, i: int) -> str:
    return str(tmp_path / "in" / f"im{i:03d}.png")


def test_a_corrupt_png_is_skipped_counted_and_named(tmp_path):
    planning = folder(tmp_path, flat_images(6), shard_size=2)
    (tmp_path / "in" / "im002.png").write_bytes(b"not a png at all")
    rule = SampleRule(8, 1, "crop")
    src = source_of(planning, rule, batch_size=2, streams=1, decode_threads=3)
    try:
        got = [i for k in range(10) for i in which(src.batch(k))]  # four stream epochs
    finally:
        src.close()
    assert 2 not in got and set(got) == {0, 1, 3, 4, 5}
    assert src.skipped_count in (3, 4)  # once per epoch it was passed
    assert "im002.png" in src.skipped[0]


def test_an_input_without_a_usable_image_fails_instead_of_spinning(tmp_path):
    planning = folder(tmp_path, flat_images(4), shard_size=2)
    for i in range(4):
        (tmp_path / "in" / f"im{i:03d}.png").write_bytes(b"broken")
    src = source_of(planning, SampleRule(8, 1), batch_size=2, streams=2)
    try:
        with pytest.raises(RuntimeError, match="without a usable image.*im00"):
            src.batch(0)
    finally:
        src.close()


def test_held_out_images_are_never_trained_on(tmp_path):
    planning = folder(tmp_path, flat_images(6), shard_size=2)
    held = {row_key_of(tmp_path, 1), row_key_of(tmp_path, 4)}
    src = source_of(planning, SampleRule(8, 1), batch_size=2, streams=1,
                    held_out=held.__contains__)
    try:
        got = {i for k in range(8) for i in which(src.batch(k))}
    finally:
        src.close()
    assert got == {0, 2, 3, 5} and src.held_out_count >= 2 and not src.skipped_count


def parquet_shards(tmp_path, images: list[np.ndarray], per_file: int):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "pq"
    root.mkdir()
    for f in range(0, len(images), per_file):
        rows = [png(im) for im in images[f:f + per_file]]
        pq.write_table(pa.table({"id": [str(f + i) for i in range(len(rows))],
                                 "image": pa.array(rows, pa.binary())}),
                       root / f"part-{f // per_file}.parquet")
    return planned(tmp_path, InputSpec(input_uri=str(root)))


def test_parquet_shards_stream_like_a_folder(tmp_path):
    images = flat_images(8)
    planning = parquet_shards(tmp_path, images, per_file=2)
    assert planning[2] == "parquet"
    src = source_of(planning, SampleRule(8, 1, "resize"), streams=2)
    try:
        got = [i for k in range(2) for i in which(src.batch(k))]
    finally:
        src.close()
    assert sorted(got) == list(range(8))  # one epoch of both streams: every row once


def test_webdataset_tars_stream_and_hold_out_by_member(tmp_path):
    images = [np.repeat(im[..., None], 3, axis=-1) for im in flat_images(6)]
    root = tmp_path / "tars"
    root.mkdir()
    for shard in range(2):
        (root / f"{shard:05d}.tar").write_bytes(
            tar_bytes(img2dataset_members(images[3 * shard:3 * shard + 3], shard)))
    planning = planned(tmp_path, InputSpec(input_uri=str(root)))
    assert planning[2] == "webdataset"
    def held(key: str) -> bool:  # the second image of tar 1
        return key.endswith(".tar#000010001.png")

    src = source_of(planning, SampleRule(8, 3), batch_size=2, streams=2, held_out=held)
    try:
        got = [i for k in range(5) for i in which(src.batch(k))]
    finally:
        src.close()
    assert set(got) == {0, 1, 2, 3, 5} and src.held_out_count >= 1


def test_a_shard_that_cannot_be_read_surfaces_in_batch_naming_it(tmp_path):
    planning = parquet_shards(tmp_path, flat_images(6), per_file=2)
    shards = planning[0]
    gone = shards[1]
    (tmp_path / "pq" / gone.file_uri.rsplit("/", 1)[-1]).unlink()
    src = source_of(planning, SampleRule(8, 1), batch_size=2, streams=1)
    try:
        with pytest.raises(RuntimeError, match=gone.shard_id):
            for k in range(20):
                src.batch(k)
        with pytest.raises(RuntimeError, match=gone.shard_id):
            src.batch(k + 1)  # and again, not a hang
    finally:
        src.close()


def test_close_stops_the_readers_with_a_full_queue(tmp_path):
    planning = folder(tmp_path, random_images(8), shard_size=2)
    src = source_of(planning, CROP, streams=2, queue_batches=1)
    src.batch(0)
    readers = list(src._readers.values())
    for r in readers:  # wait until the readers block on a full queue
        for _ in range(400):
            if r.out.full():
                break
            r.thread.join(0.05)
        assert r.out.full()
    src.close()
    assert not any(r.thread.is_alive() for r in readers)


def test_streams_that_do_not_fit_are_refused_with_the_fix(tmp_path):
    planning = folder(tmp_path, random_images(4), shard_size=2)
    with pytest.raises(ValueError, match="must divide the global batch"):
        source_of(planning, CROP, batch_size=4, streams=3)
    with pytest.raises(ValueError, match="workers must divide"):
        source_of(planning, CROP, batch_size=4, streams=2, world_size=4, rank=0)
    with pytest.raises(ValueError, match="at most 2 streams"):
        source_of(planning, CROP, batch_size=4, streams=4)
    src = source_of(planning, CROP, streams=2)
    with pytest.raises(ValueError, match="restore"):
        src.batch(3)
    with pytest.raises(ValueError, match="data_streams"):
        source_of(planning, CROP, streams=1).restore([src.position(0)], 0)
    fewer = (planning[0][:1], *planning[1:])
    with pytest.raises(ValueError, match="other shards"):
        source_of(fewer, CROP, streams=1).restore(
            [source_of(planning, CROP, streams=1).position(0)], 0)


def test_ot_pairs_noise_within_the_worker_batch(tmp_path):
    planning = folder(tmp_path, random_images(8), shard_size=2)
    plain, paired = (source_of(planning, CROP, batch_size=8, streams=2, ot=ot)
                     for ot in (False, True))
    try:
        for k in range(2):
            a, b = plain.batch(k), paired.batch(k)
            x1a = a.x_t + (1 - a.t.view(-1, 1, 1, 1)) * a.u_t
            x1b = b.x_t + (1 - b.t.view(-1, 1, 1, 1)) * b.u_t
            assert torch.equal(a.t, b.t) and torch.allclose(x1a, x1b, atol=1e-5)
            assert float((b.u_t ** 2).sum()) <= float((a.u_t ** 2).sum()) + 1e-3
    finally:
        plain.close()
        paired.close()


def test_the_training_loop_resumes_a_streamed_run_exactly(tmp_path):
    from restora_core.training import TrainConfig, train

    planning = folder(tmp_path, random_images(10, size=16), shard_size=3)
    rule = SampleRule(16, 3, "crop", hflip=True)
    model = {"ch": 32, "ch_mult": [1], "num_res_blocks": 1, "attn_resolutions": [],
             "dropout": 0.0}

    def fit(out, max_steps: int):
        cfg = TrainConfig(resolution=16, channels=3, model=model, batch_size=4, lr=1e-3,
                          warmup_steps=1, max_steps=max_steps, log_every=1, sample_count=0,
                          checkpoint_dir=str(tmp_path / out), checkpoint_every=2, name="s",
                          prefetch=True, data_streams=2)
        src = source_of(planning, rule, streams=2)
        return train(cfg, source=src, data_info={"source": "stream", "kind": "stream"})

    full = fit("a", 3)
    fit("b", 2)
    resumed = fit("b", 3)
    assert resumed.resumed_from is not None and resumed.step == 3
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
