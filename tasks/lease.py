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

Nothing is deleted or overwritten by another run, so there is no delete/create race: a stale
lease is superseded by the next generation. The holder refreshes its own file every
``ttl / 3`` (a heartbeat thread); a crashed run stops refreshing and its lease expires after
``ttl`` seconds, or at once for a run on the same host whose process is gone. A holder that sees a newer generation than its own has lost the output (its
heartbeat stalled past expiry and another run took over); it submits no more shards.
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
        def stamp(t: float) -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
        return (f"run {self.run_id} (host {self.host}, pid {self.pid}, started {stamp(self.started)}, "
                f"lease expires {stamp(self.expires)} unless renewed)")


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
            if newest:
                holder = _read(self.fs, self._path(newest))
                if holder is None:  # a torn or foreign file: treat it as held until it ages
                    holder = self._unreadable_holder(newest)
                if holder.live(time.time()):
                    return holder
            if (_create_exclusive(self.fs, self._path(newest + 1), self._record())
                    or self._is_mine(newest + 1)):
                self.generation = newest + 1
                self._start_heartbeat()
                return None
            # Another run took newest + 1 first: look again (it will be live).

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
