"""Training batches streamed from the readers' shards, never holding the whole dataset.

The run has ``S`` streams; worker ``rank`` of ``W`` owns the streams ``s`` with ``s % W == rank``.
In its epoch ``e`` stream ``s`` reads the shards at positions ``s, s+S, ...`` of
``epoch_order(seed, e, n_shards)`` (so streams, hence workers, read disjoint shards), each shard
whole, its rows in the order ``epoch_order(keyed_seed(seed, "rows", shard_id), e, rows)``. Each
stream runs through its own epochs, forever. Step ``k`` takes ``B/S`` consecutive usable samples
from every stream; sample ``j`` of stream ``s`` is global index ``k*B + s*B/S + j`` and gets its
crop, flip, noise and time from ``keyed_sample(img, rule, seed, k, index)``. The batches therefore
depend on ``S``, never on ``W``.

Reading, decoding, ``prepare_image`` and ``keyed_sample`` run in background threads feeding a
bounded queue per stream; the training thread only stacks tensors (and solves the OT pairing).
A stream's position is counted in raw rows (skipped and held-out ones included) and is the
position of the next sample the training thread will take, so a resume from it, on any worker
count with the same ``S``, yields exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

import collections
import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from restora_core.training import CFMBatch
from restora_core.training.keyed import (
    SampleRule,
    cfm_batch,
    epoch_order,
    keyed_sample,
    keyed_seed,
    prepare_image,
)

from .decode import ImageError, decode_pixels
from .planning import make_plan
from .readers import ShardPlan, SourceRow, get_reader
from .spec import InputSpec, JobSpecError, OutputSpec
from .storage import is_transient_storage_error

# Skip reasons kept (all skipped rows are counted).
SKIPPED_KEPT = 20
# Attempts at reading a shard when the storage fails transiently, and the pause before each retry.
READ_ATTEMPTS = 3
RETRY_PAUSE_S = 1.0
# Rows per read request when a shard is read whole (the spec's upper bound).
MAX_READ_BATCH = 4096
# How often blocked threads look at the stop flag (bounds how long close() takes).
POLL_S = 0.05


@dataclass(frozen=True)
class StreamPosition:
    """Where a stream stands: its epoch, the shard's index in that epoch's list of the stream's
    shards, and the row offset in the shard's permuted order (raw rows, skipped ones included)."""

    epoch: int = 0
    shard: int = 0
    row: int = 0


@dataclass
class _Part:
    """A stream's part of one step, stacked (``x1, x0: (B/S, C, R, R)``, ``t: (B/S,)``), with
    the stream's position after it and the rows it passed over."""

    x1: torch.Tensor
    x0: torch.Tensor
    t: torch.Tensor
    after: StreamPosition
    skipped: list[str] = field(default_factory=list)
    held_out: int = 0


@dataclass
class _Failure:
    """A reader thread's error, delivered in stream order."""

    error: BaseException
    message: str


def stream_shards(n_shards: int, streams: int, stream: int, seed: int, epoch: int) -> list[int]:
    """Indices (into the plan's shard list) that ``stream`` reads in its epoch ``epoch``."""
    return [int(i) for i in epoch_order(seed, epoch, n_shards)[stream::streams]]


def row_order(seed: int, shard_id: str, epoch: int, n_rows: int) -> np.ndarray:
    """The order ``(n_rows,)`` in which epoch ``epoch`` visits a shard's rows."""
    return epoch_order(keyed_seed(seed, "rows", shard_id), epoch, n_rows)


def row_key(row: SourceRow) -> str:
    """The key a holdout predicate sees: the row's source URI (as ``tasks.training_data``)."""
    return str(row.source_uri)


def row_pixels(row: SourceRow, channels: int, max_pixels: int | None) -> np.ndarray:
    """A read row decoded to (H, W, ``channels``) uint8; ImageError when it cannot be."""
    if row.error is not None:
        raise row.error
    if row.image is None:
        raise ImageError("unreadable", "the row holds no image")
    pixels = decode_pixels(row.image, channels=channels, max_pixels=max_pixels)
    return np.round(pixels * 255.0).astype(np.uint8)


def plan_input(data_uri: str, plan_dir: str, *, storage_options: dict[str, Any] | None = None,
               shard_size: int | None = None) -> tuple[list[ShardPlan], InputSpec, str]:
    """Plan ``data_uri`` once (the driver): (shards, input spec, format) for every worker.

    Folder and tar inputs keep their shards' item lists under ``plan_dir``, which every worker
    reads whenever its stream visits the shard: put it where all workers can read it (e.g.
    beside the checkpoints) and keep it for the whole run, resumes included.
    """
    options = dict(storage_options or {})
    try:
        source = InputSpec(input_uri=data_uri, storage_options=options,
                           **({"shard_size": shard_size} if shard_size else {}))
        scratch = OutputSpec(output_uri=plan_dir, storage_options=options)
    except ValueError as exc:
        raise JobSpecError(f"--data: {exc}") from None
    plan = make_plan(source, scratch)
    return plan.shards, source, plan.input_format


def check_streams(batch_size: int, world_size: int, streams: int, n_shards: int) -> None:
    """ValueError unless ``streams`` divides the batch, the workers divide the streams, and
    every stream gets a shard."""
    if streams < 1 or batch_size % streams:
        raise ValueError(f"data_streams={streams} must divide the global batch {batch_size}")
    if streams % world_size:
        raise ValueError(f"the {world_size} workers must divide data_streams={streams} "
                         "(each worker owns whole streams)")
    if streams > n_shards:
        raise ValueError(f"data_streams={streams} is more than the {n_shards} shard(s) of the "
                         f"input: use at most {n_shards} streams (and as many workers or fewer), "
                         "or cut the input into more shards (e.g. a smaller shard_size)")


class _Stream:
    """One stream's background reader: rows in stream order -> prepared, keyed samples."""

    def __init__(self, owner: StreamingImages, stream: int, start: StreamPosition,
                 first_sample: int):
        self.owner, self.stream = owner, stream
        # this start's own flag and pools: a reader left behind by an earlier close (stuck in
        # a storage call) never wakes into a later start
        self.stop, self.io, self.decode = owner._stop, owner._io, owner._decode
        self.fetch = owner._fetch
        # one item per step: a queue operation (and GIL hand-over) per sample slowed the
        # training thread about 30-fold
        self.out: queue.Queue = queue.Queue(maxsize=owner.queue_batches)
        self.thread = threading.Thread(target=self._run, args=(start, first_sample),
                                       name=f"restora-stream-{stream}", daemon=True)

    # -- background side ------------------------------------------------------------------

    def _put(self, item: Any) -> bool:
        """Put ``item`` unless the source closes first (then False)."""
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _read_shard(self, shard: ShardPlan) -> list[SourceRow]:
        """Every row of ``shard`` (undecoded), retrying transient storage failures."""
        o = self.owner
        reader = get_reader(shard.kind)
        # one file (Parquet, tar): few big requests, else a Parquet row group is decompressed
        # again for every read_batch rows; separate objects (a folder): requests fetched at once
        spec = o.whole_file_spec if shard.file_uri else o.source

        def fetch(request: dict[str, Any]) -> list[SourceRow]:
            return list(reader.read(request, spec))

        for attempt in range(READ_ATTEMPTS):
            try:
                requests = list(reader.requests(shard, spec, None))
                if len(requests) == 1:
                    return fetch(requests[0])
                return [row for rows in self.fetch.map(fetch, requests) for row in rows]
            except Exception as exc:
                if attempt + 1 == READ_ATTEMPTS or not is_transient_storage_error(exc) \
                        or self.stop.wait(RETRY_PAUSE_S * (attempt + 1)):
                    raise
        raise AssertionError("unreachable")

    def _shards(self, start: StreamPosition) -> Iterator[tuple[StreamPosition, ShardPlan,
                                                                Future]]:
        """(position of the shard's first row, shard, future of its rows) in stream order from
        ``start``; the next shard is read while the current one is decoded."""
        o = self.owner
        n = len(o.shards)
        epoch, index = start.epoch, start.shard
        orders: dict[int, list[int]] = {}

        def order_of(e: int) -> list[int]:
            if e not in orders:  # one permutation of all shards per epoch, not per shard
                orders.pop(e - 2, None)
                orders[e] = stream_shards(n, o.streams, self.stream, o.seed, e)
            return orders[e]

        def following(e: int, i: int) -> tuple[int, int, ShardPlan]:
            if i >= len(order_of(e)):
                e, i = e + 1, 0
            return e, i, o.shards[order_of(e)[i]]

        epoch, index, shard = following(epoch, index)
        pending = self.io.submit(self._read_shard, shard)
        while True:
            e2, i2, nxt = following(epoch, index + 1)
            ahead = self.io.submit(self._read_shard, nxt)
            yield StreamPosition(epoch, index, 0), shard, pending
            epoch, index, shard, pending = e2, i2, nxt, ahead

    def _rows(self, start: StreamPosition) -> Iterator[tuple[StreamPosition, ShardPlan,
                                                              SourceRow | None]]:
        """(position after the row, shard, row or None if held out) for every raw row from
        ``start`` on, in stream order."""
        held_out = self.owner.held_out
        first = True
        for at, shard, rows_future in self._shards(start):
            try:
                rows = rows_future.result()
            except Exception as exc:
                raise _ShardError(shard, exc) from exc
            order = row_order(self.owner.seed, shard.shard_id, at.epoch, len(rows))
            begin = start.row if first else 0
            first = False
            for r in range(begin, len(rows)):
                row = rows[int(order[r])]
                after = StreamPosition(at.epoch, at.shard, r + 1)
                if r + 1 == len(rows):  # normalised: the next shard's first row
                    after = StreamPosition(at.epoch, at.shard + 1, 0)
                keep = held_out is None or not held_out(row_key(row))
                yield after, shard, row if keep else None

    def _run(self, start: StreamPosition, first_sample: int) -> None:
        o = self.owner
        lookahead = 4 * max(1, o.decode_threads)
        pending: collections.deque = collections.deque()
        skipped: list[str] = []
        held = 0
        in_a_row = 0  # raw rows since the last usable one
        n = first_sample  # the stream's count of usable samples so far
        part: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        limit = max(sum(s.count for s in o.shards), 1)
        try:
            rows = self._rows(start)
            while not self.stop.is_set():
                while len(pending) < lookahead:
                    after, shard, row = next(rows)
                    job = None if row is None else self.decode.submit(o._decode_row, shard, row)
                    pending.append((after, shard, row, job))
                after, shard, row, job = pending.popleft()
                if job is None:
                    held += 1
                    in_a_row += 1
                else:
                    try:
                        img, why = job.result()
                    except Exception as exc:
                        raise RuntimeError(f"preparing '{row_key(row)}' of shard "
                                           f"'{shard.shard_id}': {type(exc).__name__}: "
                                           f"{exc}") from exc
                    if img is None:
                        skipped.append(why)
                        in_a_row += 1
                    else:
                        step, j = divmod(n, o.per_stream)
                        index = step * o.batch_size + self.stream * o.per_stream + j
                        part.append(keyed_sample(img, o.rule, o.seed, step, index))
                        n += 1
                        in_a_row = 0
                        if len(part) == o.per_stream:
                            x1, x0, t = (torch.stack(v) for v in zip(*part))
                            if not self._put(_Part(x1, x0, t, after, skipped, held)):
                                return
                            part, skipped, held = [], [], 0
                if in_a_row > limit:
                    reasons = "; ".join(skipped[:3]) or "every row held out"
                    raise RuntimeError(
                        f"data stream {self.stream} read {in_a_row} rows in a row without a "
                        f"usable image (the input has {limit}): {reasons}")
        except Exception as exc:  # noqa: BLE001 - delivered to the training thread, in stream order
            message = (f"data stream {self.stream}: reading shard '{exc.shard.shard_id}' "
                       f"({exc.shard.file_uri or exc.shard.items_uri}) failed: "
                       f"{type(exc.error).__name__}: {exc.error}"
                       if isinstance(exc, _ShardError) else
                       f"data stream {self.stream} failed: {type(exc).__name__}: {exc}")
            self._put(_Failure(exc.error if isinstance(exc, _ShardError) else exc, message))
        finally:
            for *_, job in pending:
                if job is not None:
                    job.cancel()

    # -- training side --------------------------------------------------------------------

    def take(self) -> _Part:
        """The stream's part of the next step; raises the reader's error, in order."""
        while True:
            try:
                item = self.out.get(timeout=POLL_S * 10)
                break
            except queue.Empty:
                if self.stop.is_set():
                    raise RuntimeError("the streaming source is closed") from None
                if not self.thread.is_alive() and self.out.empty():
                    raise RuntimeError(f"data stream {self.stream}'s reader stopped "
                                       "without a reason") from None
        if not isinstance(item, _Failure):
            return item
        self.out.put(item)  # every later batch() fails the same way
        raise RuntimeError(item.message) from item.error


class _ShardError(Exception):
    """A shard could not be read (wraps the storage's error)."""

    def __init__(self, shard: ShardPlan, error: BaseException):
        super().__init__(str(error))
        self.shard, self.error = shard, error


class StreamingImages:
    """Keyed training batches read from the plan's shards while training (see the module's
    docstring for the scheme); the interface of ``restora_core.training.keyed.KeyedImages``.

    shards: the plan's shards (planned once by the driver, the same list on every worker).
    source, input_format: the input part of the spec and the plan's format (the readers' own).
    streams: ``S`` (None: one per worker); must divide ``batch_size``, and ``world_size`` must
        divide it. decode_threads: decoder threads of this worker. held_out: predicate on a row's
        key (``source_uri#raw_id`` for members/cells, else ``source_uri``); true rows are never
        trained on. max_pixels: decompression-bomb cap (None: the input spec's).
        queue_batches: steps read ahead per stream. read_threads: concurrent reads of a
        shard's separate files (image folders; one-file shards are read in a few big requests).
    """

    def __init__(self, shards: list[ShardPlan], source: InputSpec, input_format: str,
                 rule: SampleRule, seed: int, *, batch_size: int, rank: int = 0,
                 world_size: int = 1, streams: int | None = None, ot: bool = False,
                 decode_threads: int = 2, held_out: Callable[[str], bool] | None = None,
                 max_pixels: int | None = None, queue_batches: int = 4,
                 read_threads: int = 8):
        if not shards:
            raise ValueError("the training input has no shards")
        get_reader(input_format)  # a clear KeyError for an unknown format, here
        self.shards, self.source, self.input_format = list(shards), source, input_format
        self.rule, self.seed, self.ot = rule, int(seed), bool(ot)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        self.streams = int(streams) if streams is not None else self.world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        check_streams(self.batch_size, self.world_size, self.streams, len(self.shards))
        self.per_stream = self.batch_size // self.streams
        # names the shard list in positions: a resume over other shards cannot be exact (not
        # items_uri, which names the plan's scratch folder, not the data)
        self._shards_key = f"{len(self.shards)}:" + hashlib.sha256("\n".join(
            f"{s.shard_id} {s.kind} {s.count} {s.file_uri or s.name or ''}" for s in self.shards
        ).encode()).hexdigest()[:16]
        # contiguous blocks of streams: rank order then stream order is the one-worker order
        per_worker = self.streams // self.world_size
        self.mine = list(range(self.rank * per_worker, (self.rank + 1) * per_worker))
        self.decode_threads = max(1, int(decode_threads))
        self.held_out = held_out
        self.max_pixels = int(max_pixels if max_pixels is not None else source.max_pixels)
        self.whole_file_spec = source.model_copy(update={"read_batch": MAX_READ_BATCH})
        self.read_threads = max(1, int(read_threads))
        self.queue_batches = max(1, int(queue_batches))
        self.skipped: list[str] = []  # the first SKIPPED_KEPT reasons
        self.skipped_count = 0
        self.held_out_count = 0
        # state of the samples the training thread has taken, per owned stream
        self._at = {s: StreamPosition() for s in self.mine}
        self._counts = {s: {"skipped": 0, "held_out": 0} for s in self.mine}
        self._next_step = 0
        self._before: dict[int, dict[str, Any]] = {}  # position before recent steps
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._readers: dict[int, _Stream] | None = None
        self._io: ThreadPoolExecutor | None = None
        self._fetch: ThreadPoolExecutor | None = None
        self._decode: ThreadPoolExecutor | None = None
        self.description = (
            f"streaming: {self.streams} streams over {len(self.shards)} shards; stream s reads "
            "shards epoch_order(seed, e, n_shards)[s::S], rows epoch_order(keyed_seed(seed, "
            "'rows', shard_id), e, rows); sample j of stream s in step k is global index "
            "k*B + s*B/S + j, crop, flip, noise, time from keyed_seed(seed, k, index)")

    # -- background --------------------------------------------------------------------------

    def _decode_row(self, shard: ShardPlan, row: SourceRow) -> tuple[np.ndarray | None, str]:
        """(prepared image, "") or (None, why it was skipped)."""
        try:
            img = prepare_image(row_pixels(row, self.rule.channels, self.max_pixels), self.rule)
            # keyed_sample wraps it with torch.from_numpy, which warns on read-only arrays
            return (img if img.flags.writeable else img.copy()), ""
        except (ImageError, ValueError) as exc:
            return None, f"{shard.shard_id}: {row.where or row_key(row)}: {exc}"

    def _start(self, step: int) -> None:
        self._stop = threading.Event()
        self._io = ThreadPoolExecutor(len(self.mine), thread_name_prefix="restora-shard-read")
        self._fetch = ThreadPoolExecutor(self.read_threads, thread_name_prefix="restora-fetch")
        self._decode = ThreadPoolExecutor(self.decode_threads,
                                          thread_name_prefix="restora-decode")
        first = step * self.per_stream
        self._readers = {s: _Stream(self, s, self._at[s], first) for s in self.mine}
        for reader in self._readers.values():
            reader.thread.start()

    # -- the BatchSource interface -------------------------------------------------------

    def batch(self, step: int) -> CFMBatch:
        """This worker's part of step ``step`` (CPU tensors): ``x_t, u_t: (B/W, C, R, R)``,
        ``t: (B/W,)``; its streams' samples in stream order. Steps come in order."""
        with self._lock:
            if step != self._next_step:
                raise ValueError(
                    f"the streaming source gives step {self._next_step} next, not {step}: "
                    "steps come in order, and a resume needs the data positions stored in "
                    "its checkpoint (restore)")
            self._before = {k: v for k, v in self._before.items() if k >= step - 4}
            self._before[step] = self._position_now(step)
            self._next_step = step + 1
            if self._readers is None:
                self._start(step)
        parts = []
        for s in self.mine:
            part = self._readers[s].take()
            self._at[s] = part.after
            self._counts[s]["skipped"] += len(part.skipped)
            self._counts[s]["held_out"] += part.held_out
            self.skipped_count += len(part.skipped)
            self.held_out_count += part.held_out
            self.skipped.extend(part.skipped[:max(0, SKIPPED_KEPT - len(self.skipped))])
            parts.append(part)
        return cfm_batch(torch.cat([p.x1 for p in parts]), torch.cat([p.x0 for p in parts]),
                         torch.cat([p.t for p in parts]), ot=self.ot)

    def _position_now(self, step: int) -> dict[str, Any]:
        streams = {str(s): {"epoch": p.epoch, "shard": p.shard, "row": p.row, **self._counts[s]}
                   for s, p in self._at.items()}
        return {"kind": "stream", "data_streams": self.streams, "shards": self._shards_key,
                "next_step": int(step), "streams": streams}

    def position(self, step: int) -> dict[str, Any]:
        """This worker's streams before step ``step``: per stream (keyed by its id) the epoch,
        shard index and raw row offset of the next sample the training thread will take."""
        with self._lock:
            if step in self._before:  # batch(step) already taken (e.g. prefetched)
                return self._before[step]
            if step == self._next_step:
                return self._position_now(step)
        raise ValueError(f"the streaming source knows its position before steps "
                         f"{sorted(self._before)} and {self._next_step}, not {step}")

    def restore(self, positions: list[dict[str, Any]], step: int) -> None:
        """Continue from every worker's stored positions (any worker count, the same streams)."""
        found: dict[str, dict[str, Any]] = {}
        for p in positions:
            if not isinstance(p, dict) or p.get("kind") != "stream":
                raise ValueError("the checkpoint's data positions are not from a streaming "
                                 f"source ({p!r:.80}); resume with the data mode it was saved with")
            if p.get("data_streams") != self.streams:
                raise ValueError(
                    f"the checkpoint streamed data_streams={p.get('data_streams')}, this run "
                    f"has {self.streams}: a resume must keep data_streams")
            if p.get("shards") != self._shards_key:
                raise ValueError(
                    f"the checkpoint streamed other shards ({p.get('shards')}) than this run "
                    f"plans ({self._shards_key}: count:hash of ids, sizes, files); a resume "
                    "must read the same input, planned the same way")
            if p.get("next_step") != step:
                raise ValueError(f"the checkpoint's data positions are for step "
                                 f"{p.get('next_step')}, not {step}")
            found.update(p["streams"])
        missing = [s for s in self.mine if str(s) not in found]
        if missing:
            raise ValueError(f"the checkpoint's data positions lack streams {missing}")
        self.close()
        with self._lock:
            for s in self.mine:
                at = found[str(s)]
                self._at[s] = StreamPosition(int(at["epoch"]), int(at["shard"]), int(at["row"]))
                self._counts[s] = {"skipped": int(at.get("skipped", 0)),
                                   "held_out": int(at.get("held_out", 0))}
            self.skipped_count = sum(c["skipped"] for c in self._counts.values())
            self.held_out_count = sum(c["held_out"] for c in self._counts.values())
            self._next_step = int(step)
            self._before = {}

    def close(self) -> None:
        """Stop the readers (promptly, also with full queues); a later batch() restarts them."""
        self._stop.set()
        readers, self._readers = self._readers, None
        for reader in (readers or {}).values():
            reader.thread.join(timeout=5.0)
        for pool in (self._io, self._fetch, self._decode):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._io = self._fetch = self._decode = None
