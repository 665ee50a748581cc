"""One writer per output prefix: a run holds a lease on ``<output>/leases/`` while it writes.

Leases are numbered generations, ``leases/00000001.json``, ``00000002.json``, ... each a small
JSON object (run id, host, pid, start, heartbeat, expiry, released). To take the output, a run
reads the newest generation; when it is released or expired, the run creates the next number
with a conditional create, so of two runs racing for the same number exactly one succeeds:

- S3 (s3fs): ``PutObject`` with ``If-None-Match: *`` (s3fs's ``pipe_file(mode="create")``).
- Local disk: the lease is written to a temporary name and hard-linked into place (``link``
  fails when the name exists), so it is both exclusive and never seen half-written.
- Other stores: create-then-verify: write when the name is absent, wait
  ``VERIFY_PAUSE_S``, read back; the window is the time between the absence check and the
  write landing, so two runs starting within it could both believe they hold the lease.

No lease is overwritten by another run: a stale lease is superseded by the next generation.
The holder refreshes its own file every ``ttl / 3`` (a heartbeat thread); a crashed run stops
refreshing and its lease expires after ``ttl`` seconds, or at once for a run on the same host
whose process is gone. A holder that sees a newer generation than its own has lost the output
(its heartbeat stalled past expiry and another run took over); it submits no more shards.

A run that takes over an unreleased lease keeps that record (``took_over``), so the flow can
say which run died. When a run releases generation N it prunes the older generations that are
released or expired (``prune``), so ``leases/`` holds one file between runs. Numbering needs
only the newest file: a run whose listing went stale meanwhile re-lists when the file it read
is gone, and after its create checks that no newer generation exists (a pruned number reused).
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from .storage import full_uri, is_object_store, join, open_fs, write_atomic

LEASE_DIR = "leases"
DEFAULT_TTL_S = 60.0
VERIFY_PAUSE_S = 1.0
_POLL_S = 2.0


class LeaseHeldError(RuntimeError):
    """Another live run holds the output prefix."""


class LeaseLostError(RuntimeError):
    """Another run took the output over while this one was writing it."""


@dataclass(frozen=True)
class LeaseRecord:
    """What a lease file says."""

    run_id: str
    host: str
    pid: int
    started: float
    heartbeat: float
    expires: float
    released: bool = False

    def live(self, now: float) -> bool:
        """Whether this lease still keeps other runs out: not released, not expired, and (when
        written on this host) its process still exists."""
        if self.released or now >= self.expires:
            return False
        return self.host != socket.gethostname() or _pid_alive(self.pid)

    def describe(self) -> str:
        """One line naming the run: id, host, pid, start and expiry times (UTC)."""
        return (f"run {self.run_id} (host {self.host}, pid {self.pid}, started {_stamp(self.started)}, "
                f"lease expires {_stamp(self.expires)} unless renewed)")


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def describe_takeover(dead: LeaseRecord, unfinished: list[str] | None = None) -> str:
    """One line about a run whose unreleased lease this run took over: its run id, host, pid,
    when it last renewed, and (if given) the plan's shards that have no manifest."""
    line = (f"took over the output from run {dead.run_id} (host {dead.host}, pid {dead.pid}), "
            f"which died without releasing its lease; it last renewed it at "
            f"{_stamp(dead.heartbeat)}")
    if unfinished is None:
        return line
    shown = ", ".join(unfinished[:20]) + (f" and {len(unfinished) - 20} more"
                                          if len(unfinished) > 20 else "")
    return (line + f"; {len(unfinished)} shard(s) of the plan have no manifest"
            + (f" (they may hold half-written images; this run redoes them): {shown}"
               if unfinished else ""))


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    if pid <= 0:
        return True  # unknown: trust the expiry
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_dir(output_uri: str) -> str:
    """Folder of the output's lease generations."""
    return join(output_uri, LEASE_DIR)


def _generations(fs: Any, folder: str) -> list[int]:
    """Lease generation numbers present under ``folder``, ascending."""
    try:
        names = [posixpath.basename(p) for p in fs.ls(folder, detail=False)]
    except FileNotFoundError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def ensure_still_held(output_uri: str, storage_options: dict[str, Any] | None,
                      generation: int | None, what: str) -> None:
    """Raise LeaseLostError before ``what`` is written when a newer lease generation than this
    run's ``generation`` exists (nothing to check for None: no lease was taken).

    Called by the write and commit tasks themselves, so a run whose heartbeat stalled past its
    expiry stops within one batch, not one shard, after another run took over."""
    if generation is None:
        return
    fs, folder = open_fs(lease_dir(output_uri), storage_options)
    fs.invalidate_cache(folder)
    newest = (_generations(fs, folder) or [0])[-1]
    if newest == generation:
        return
    holder = _read(fs, posixpath.join(folder, f"{newest:08d}.json"))
    raise LeaseLostError(
        f"output_uri: '{output_uri}' was taken over by "
        f"{holder.describe() if holder else f'lease generation {newest}'} while this run "
        f"(generation {generation}) was writing; {what} was not written")


def _read(fs: Any, path: str) -> LeaseRecord | None:
    """The lease at ``path``; None when it is gone or unreadable (a foreign or torn file)."""
    try:
        return LeaseRecord(**json.loads(fs.cat_file(path)))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _create_exclusive(fs: Any, path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if nothing is there; True when this call made it."""
    parent = posixpath.dirname(path)
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if proto in ("s3", "s3a"):
        try:
            fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
    if proto in ("file", "local"):
        os.makedirs(parent, exist_ok=True)
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.{uuid.uuid4().hex}")
        with open(tmp, "wb") as handle:
            handle.write(data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    if fs.exists(path):  # create-then-verify (see the module docstring for its window)
        return False
    if not is_object_store(fs):
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)
    time.sleep(VERIFY_PAUSE_S)
    fs.invalidate_cache(path)
    return fs.cat_file(path) == data


class OutputLease:
    """This run's hold on an output prefix: ``acquire`` it, then ``release`` it."""

    def __init__(self, output_uri: str, storage_options: dict[str, Any] | None = None, *,
                 run_id: str | None = None, ttl_s: float = DEFAULT_TTL_S):
        """A lease for ``output_uri``, not yet held."""
        self.output_uri, self.storage_options, self.ttl_s = output_uri, storage_options, ttl_s
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.fs, self.folder = open_fs(lease_dir(output_uri), storage_options)
        self.generation: int | None = None
        # The unreleased lease of a run that died (expired, or its process gone), when this run
        # took the output over from it; None when the output was free or released.
        self.took_over: LeaseRecord | None = None
        self.pruned: list[int] = []  # generations ``release`` deleted
        self.started = time.time()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def uri(self) -> str | None:
        """URI of the lease file this run holds (None before acquiring)."""
        return None if self.generation is None else full_uri(self.fs, self._path(self.generation))

    def _path(self, generation: int) -> str:
        return posixpath.join(self.folder, f"{generation:08d}.json")

    def _record(self, *, released: bool = False) -> bytes:
        now = time.time()
        record = LeaseRecord(self.run_id, socket.gethostname(), os.getpid(), self.started, now,
                             now + self.ttl_s, released)
        return json.dumps(asdict(record)).encode()

    def try_acquire(self) -> LeaseRecord | None:
        """Take the output if it is free: None on success, else the live lease that holds it."""
        while True:
            self.fs.invalidate_cache(self.folder)
            generations = _generations(self.fs, self.folder)
            newest = generations[-1] if generations else 0
            holder = None
            if newest:
                holder = _read(self.fs, self._path(newest))
                if holder is None and not self.fs.exists(self._path(newest)):
                    continue  # pruned by a newer holder since the listing: look again
                if holder is None:  # a torn or foreign file: treat it as held until it ages
                    holder = self._unreadable_holder(newest)
                if holder.live(time.time()):
                    return holder
            if (_create_exclusive(self.fs, self._path(newest + 1), self._record())
                    or self._is_mine(newest + 1)):
                if self._superseded(newest + 1):
                    continue  # our listing was stale and a pruned number was reused: look again
                self.generation = newest + 1
                self.took_over = holder if holder is not None and not holder.released else None
                self._start_heartbeat()
                return None
            # Another run took newest + 1 first: look again (it will be live).

    def _superseded(self, generation: int) -> bool:
        """Whether a generation above ``generation`` exists (then the one just made is marked
        released, so it never looks live)."""
        self.fs.invalidate_cache(self.folder)
        if _generations(self.fs, self.folder)[-1:] == [generation]:
            return False
        write_atomic(self.fs, self._path(generation), self._record(released=True))
        return True

    def prune(self) -> list[int]:
        """Delete the generations older than the one held that are released or expired (or
        whose process on this host is gone); returns their numbers. Unreadable files stay."""
        if self.generation is None:
            return []
        self.fs.invalidate_cache(self.folder)
        pruned = []
        for generation in _generations(self.fs, self.folder):
            if generation >= self.generation:
                break
            record = _read(self.fs, self._path(generation))
            if record is None or record.live(time.time()):
                continue
            try:
                self.fs.rm_file(self._path(generation))
            except FileNotFoundError:  # another run pruned it first
                continue
            pruned.append(generation)
        return pruned

    def _is_mine(self, generation: int) -> bool:
        """Whether ``generation`` holds this run's own record: a create whose answer was lost
        (connection reset after the PUT landed) is retried by the client and then refused."""
        self.fs.invalidate_cache(self.folder)
        record = _read(self.fs, self._path(generation))
        return (record is not None and record.run_id == self.run_id
                and record.started == self.started and record.pid == os.getpid())

    def _unreadable_holder(self, generation: int) -> LeaseRecord:
        """A stand-in for a lease file that cannot be read: live for ``ttl`` after its mtime."""
        try:
            modified = self.fs.modified(self._path(generation)).timestamp()
        except (FileNotFoundError, NotImplementedError, AttributeError):
            modified = time.time()
        return LeaseRecord("unknown (unreadable lease file)", "?", -1, modified, modified,
                           modified + self.ttl_s)

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the output, waiting up to ``wait_s`` for a live holder; LeaseHeldError otherwise."""
        deadline = time.monotonic() + wait_s
        while True:
            holder = self.try_acquire()
            if holder is None:
                return
            if time.monotonic() >= deadline:
                raise LeaseHeldError(
                    f"output_uri: '{self.output_uri}' is being written by {holder.describe()}; "
                    "wait for it to finish, or pass --wait-lease SECONDS to wait; a crashed "
                    f"run's lease expires by itself ({lease_dir(self.output_uri)})")
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name="restora-lease", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        """Refresh the lease every ttl / 3; flag ``lost`` if another run took a newer generation."""
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.check()
                if not self.lost.is_set():
                    write_atomic(self.fs, self._path(self.generation), self._record())
            except OSError:
                pass  # a storage hiccup: the next beat tries again, well before expiry

    def check(self) -> bool:
        """True while no newer generation exists; sets ``lost`` otherwise."""
        self.fs.invalidate_cache(self.folder)
        if _generations(self.fs, self.folder)[-1:] != [self.generation]:
            self.lost.set()
        return not self.lost.is_set()

    def release(self) -> None:
        """Stop the heartbeat and mark this run's lease released (if it still holds it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.generation is not None and not self.lost.is_set():
            write_atomic(self.fs, self._path(self.generation), self._record(released=True))
            try:
                self.pruned = self.prune()
            except OSError:
                pass  # the next release prunes them
