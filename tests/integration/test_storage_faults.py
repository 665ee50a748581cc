"""Storage faults injected for real: a fault proxy (``fault_proxy``) in front of moto's S3 server.

The job talks to S3 only through the proxy; the test sets up inputs and checks outputs directly
on moto. Transient faults (500, 503 SlowDown, connection resets, truncated bodies) must end with
every image ``ok`` exactly once and no partial object; permanent ones (403, 404) become error
rows naming the image, or one clear job error naming the URI.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tasks.spec import JobSpec, JobSpecError

from .conftest import FAST, gray_images, png
from .fault_proxy import READS, TRANSIENT_KINDS, FaultProxy
from .retry import call_with_retry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

FAULT_SEED = 7


def make_bucket(endpoint: str, bucket: str, n_images: int):
    """A fresh bucket on moto (no faults) with ``n_images`` PNGs under ``in/``; the s3fs handle."""
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint)
    call_with_retry(lambda: fs.mkdir(bucket), what=f"create bucket {bucket} on moto")
    for i, img in enumerate(gray_images(n_images, seed=5)):
        fs.pipe(f"{bucket}/in/img{i:02d}.png", png(img))
    fs.invalidate_cache()
    return fs


@contextmanager
def proxied(endpoint: str, **kwargs) -> Iterator[tuple[FaultProxy, dict]]:
    """A fault proxy in front of ``endpoint`` and the storage options that go through it."""
    with FaultProxy(endpoint, **kwargs) as proxy:
        yield proxy, {"endpoint_url": proxy.url}


def job(bucket: str, options: dict, tiny_prior: str, shard_size: int) -> JobSpec:
    """A box-inpainting job from ``s3://bucket/in`` to ``s3://bucket/out``."""
    return JobSpec(input_uri=f"s3://{bucket}/in", output_uri=f"s3://{bucket}/out", task="box",
                   prior=tiny_prior, shard_size=shard_size, storage_options=options, **FAST)


def output_rows(fs, bucket: str) -> pa.Table:
    """Every committed manifest row, read straight from moto."""
    fs.invalidate_cache()
    files = sorted(fs.glob(f"{bucket}/out/manifests/*.parquet"))
    return pa.concat_tables([pq.read_table(io.BytesIO(fs.cat_file(f))) for f in files])


def assert_output_whole(fs, bucket: str, ids: list[str]) -> pa.Table:
    """Every id has exactly one manifest row; every object under the output is whole: images
    decode, manifests and JSON files parse, no temporary objects. Returns the rows."""
    rows = output_rows(fs, bucket)
    assert sorted(rows["id"].to_pylist()) == sorted(ids)  # none lost, none duplicated
    objects = fs.find(f"{bucket}/out")
    assert not [p for p in objects if ".tmp" in p.rsplit("/", 1)[1]], "temporary objects left"
    for path in objects:
        data = fs.cat_file(path)
        if path.endswith(".png"):
            Image.open(io.BytesIO(data)).load()  # raises on a partial PNG
        elif path.endswith(".parquet"):
            pq.read_table(io.BytesIO(data))
        elif path.endswith(".json"):
            json.loads(data)
    images = [p for p in objects if "/out/images/" in p and p.endswith(".png")]
    ok = [u for u, s in zip(rows["output_uri"].to_pylist(), rows["status"].to_pylist())
          if s == "ok"]
    assert sorted(images) == sorted(u.removeprefix("s3://") for u in ok)
    return rows


def task_runs(flow_run_id: str) -> dict[str, tuple[int, list[str]]]:
    """{task run name: (run_count, its state names oldest first)} of a flow run, from the API."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[flow_run_id])))
            out = {}
            for run in runs:
                states = await client.read_task_run_states(run.id)
                states.sort(key=lambda s: s.timestamp)
                out[run.name] = (run.run_count, [s.name for s in states])
            return out

    return asyncio.run(read())


def write_report(path: str, proxy: FaultProxy, rate: float, rule_hits: int, summary: dict,
                 rows: pa.Table, ids: list[str], seconds: float) -> None:
    """The fault counts and outcome of a run, as JSON at ``path`` (for benchmarks/results)."""
    import time

    from .conftest import FAST as fast

    got = rows["id"].to_pylist()
    runs = task_runs(summary["flow_run_id"])
    record = {
        "date": time.strftime("%Y-%m-%d"), "seed": FAULT_SEED, "rate": rate,
        "images": len(ids), "shard_size": 4, "batch_size": fast["batch_size"],
        "requests": dict(proxy.requests),
        "injected": {f"{cls} {kind}": n for (cls, kind), n in sorted(proxy.counts.items())},
        "injected_by_rules": rule_hits, "injected_total": sum(proxy.counts.values()),
        "outcome": {**summary["images"], "lost": len(set(ids) - set(got)),
                    "duplicated": len(got) - len(set(got))},
        "prefect_task_runs": {name: count for name, (count, _) in sorted(runs.items())},
        "prefect_task_retries": sum(count - 1 for count, _ in runs.values()),
        "seconds": round(seconds, 1),
    }
    with open(path, "w") as handle:
        json.dump(record, handle, indent=1)


def test_ten_percent_transient_faults_end_with_every_image_ok_exactly_once(
        pipeline, s3_endpoint, tiny_prior, request):
    import time

    bucket = "faults-rate"
    ids = [f"img{i:02d}" for i in range(24)]
    fs = make_bucket(s3_endpoint, bucket, len(ids))
    started = time.monotonic()
    with proxied(s3_endpoint, rate=0.10, seed=FAULT_SEED) as (proxy, options):
        # Besides the rate, each kind hits an input read and an image write once for sure.
        for kind in TRANSIENT_KINDS:
            proxy.add_rule(rf"^/{bucket}/in/img\d+\.png", kind, methods={"GET"}, times=1)
            proxy.add_rule(rf"^/{bucket}/out/images/", kind, methods={"PUT"}, times=1)
        summary = pipeline(spec=job(bucket, options, tiny_prior, shard_size=4))
        rate, rule_hits = proxy.rate, sum(rule.hits for rule in proxy.rules)
        proxy.clear()
    counts = dict(proxy.counts)
    if request.config.getoption("--faults-report"):
        write_report(request.config.getoption("--faults-report"), proxy, rate, rule_hits, summary,
                     output_rows(fs, bucket), ids, time.monotonic() - started)

    assert summary["images"] == {"total": 24, "ok": 24, "error": 0}, summary["images"]
    assert summary["shards"]["committed"] == 6 and summary["failed_shards"] == []
    rows = assert_output_whole(fs, bucket, ids)
    assert set(rows["status"].to_pylist()) == {"ok"}
    for cls in ("read", "write"):
        for kind in TRANSIENT_KINDS:
            assert counts.get((cls, kind), 0) >= 1, (cls, kind, counts)
    assert sum(counts.values()) >= 20, counts  # the rate did its part, not only the rules


# Faults that outlast botocore's and s3fs's own retries, so that the shard task fails:
# - the commit: botocore tries a 500 five times and s3fs does not retry it;
# - an input read: botocore does not retry a body cut short, s3fs reads it five times; the
#   shard must go round again, never report the image as broken.
OUTLASTING = {
    "commit": (r"/out/manifests/shard-00001\.parquet", "500", {"PUT"}),
    "input": (r"/in/img05\.png", "truncate", {"GET"}),
}


@pytest.mark.parametrize("where", sorted(OUTLASTING))
def test_a_fault_outlasting_client_retries_is_retried_by_prefect(
        pipeline, s3_endpoint, tiny_prior, where):
    pattern, kind, methods = OUTLASTING[where]
    bucket = f"faults-outlast-{where}"
    fs = make_bucket(s3_endpoint, bucket, 8)
    with proxied(s3_endpoint) as (proxy, options):
        rule = proxy.add_rule(f"^/{bucket}{pattern}", kind, methods=methods, times=5)
        summary = pipeline(spec=job(bucket, options, tiny_prior, shard_size=4))

    assert rule.hits == 5
    assert summary["images"] == {"total": 8, "ok": 8, "error": 0}
    assert_output_whole(fs, bucket, [f"img{i:02d}" for i in range(8)])
    runs = task_runs(summary["flow_run_id"])
    count, states = runs["restore shard-00001"]
    assert count >= 2 and "AwaitingRetry" in states, (count, states)
    assert states[-1] == "Completed"
    assert runs["restore shard-00000"][0] == 1


def test_a_lease_whose_create_landed_but_whose_answer_was_lost_is_still_ours(
        pipeline, s3_endpoint, tiny_prior):
    bucket = "faults-lease"
    fs = make_bucket(s3_endpoint, bucket, 4)
    with proxied(s3_endpoint) as (proxy, options):
        # The conditional create lands; botocore retries it and S3 answers 412 (it exists).
        rule = proxy.add_rule(rf"^/{bucket}/out/leases/00000001\.json", "lost-reply",
                              methods={"PUT"}, times=1)
        summary = pipeline(spec=job(bucket, options, tiny_prior, shard_size=4))

    assert rule.hits == 1
    assert summary["images"] == {"total": 4, "ok": 4, "error": 0}
    assert summary["lease_uri"] == f"s3://{bucket}/out/leases/00000001.json"
    assert_output_whole(fs, bucket, [f"img{i:02d}" for i in range(4)])


def test_denied_and_vanished_inputs_become_error_rows_naming_them(
        pipeline, s3_endpoint, tiny_prior):
    bucket = "faults-permanent"
    fs = make_bucket(s3_endpoint, bucket, 8)
    with proxied(s3_endpoint) as (proxy, options):
        proxy.add_rule(rf"^/{bucket}/in/img02\.png", "403", methods=READS)
        proxy.add_rule(rf"^/{bucket}/in/img05\.png", "404", methods=READS)  # listed, then gone
        summary = pipeline(spec=job(bucket, options, tiny_prior, shard_size=4))

    assert summary["images"] == {"total": 8, "ok": 6, "error": 2}
    rows = assert_output_whole(fs, bucket, [f"img{i:02d}" for i in range(8)])
    errors = {i: e for i, s, e in zip(rows["id"].to_pylist(), rows["status"].to_pylist(),
                                      rows["error"].to_pylist()) if s == "error"}
    assert set(errors) == {"img02", "img05"}
    assert errors["img02"].startswith("access-denied: ")
    assert f"access denied reading image 's3://{bucket}/in/img02.png'" in errors["img02"]
    assert errors["img05"].startswith("missing: ")
    assert f"s3://{bucket}/in/img05.png" in errors["img05"]


@pytest.mark.parametrize("denied", ["in", "out"])
def test_a_denied_input_or_output_prefix_is_one_clear_job_error(
        pipeline, s3_endpoint, tiny_prior, denied):
    bucket = f"faults-denied-{denied}"
    fs = make_bucket(s3_endpoint, bucket, 4)
    with proxied(s3_endpoint) as (proxy, options):
        # The prefix's objects and any listing of it.
        proxy.add_rule(rf"^/{bucket}(/{denied}(/|$|\?)|/?\?.*prefix={denied}(/|&|$))", "403")
        with pytest.raises(JobSpecError) as failure:
            pipeline(spec=job(bucket, options, tiny_prior, shard_size=4))

    message = str(failure.value)
    assert f"s3://{bucket}/{denied}" in message and "access denied" in message.lower()
    assert "\n" not in message and len(message) < 400, message
    fs.invalidate_cache()
    assert not fs.exists(f"{bucket}/out"), fs.find(f"{bucket}/out")  # nothing half-written
