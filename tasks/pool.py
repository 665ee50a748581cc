"""Launch the pool of long-lived RestoreWorker actors: resources are declared here, from config."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

import ray

from .spec import JobSpec, JobSpecError, RunInfo
from .worker import ACTOR_CONCURRENCY, RestoreWorker

# An actor whose node dies is restarted elsewhere and its queued calls are replayed.
_MAX_RESTARTS = 4
# CPUs one shard read/write Ray task reserves (tasks/shard.py uses the same figure).
IO_TASK_CPUS = 0.25



@dataclass(frozen=True)
class ActorResources:
    """What each actor reserves from Ray."""

    num_cpus: float
    num_gpus: float

    @property
    def threads(self) -> int:
        """Torch threads for a CPU actor: its whole CPUs, at least one."""
        return max(1, int(self.num_cpus))


def actor_resources(spec: JobSpec, cluster: dict[str, float] | None = None) -> ActorResources:
    """One GPU per actor when the cluster has GPUs (unless the spec says otherwise), else CPUs."""
    cluster = cluster if cluster is not None else ray.cluster_resources()
    gpus = spec.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if cluster.get("GPU", 0) >= 1 else 0.0
    # The shard's read/write tasks need CPU too: actors that reserve every CPU deadlock the job.
    needed = spec.num_actors * spec.cpus_per_actor + IO_TASK_CPUS
    available = cluster.get("CPU", 0.0)
    if needed > available:
        raise JobSpecError(
            f"num_actors={spec.num_actors} x cpus_per_actor={spec.cpus_per_actor} leaves no CPU "
            f"for the read/write tasks on a cluster with {available:g} CPUs; lower one so that "
            f"their product is at most {available - IO_TASK_CPUS:g}")
    return ActorResources(num_cpus=spec.cpus_per_actor, num_gpus=float(gpus))


def actor_device(spec: JobSpec, cluster: dict[str, float] | None = None) -> str:
    """The device kind the pool's actors run on: ``cuda`` when each reserves a GPU, else ``cpu``."""
    return "cuda" if actor_resources(spec, cluster).num_gpus > 0 else "cpu"


class ActorPool:
    """Round-robin handles to ``num_actors`` RestoreWorker actors shared by all shard tasks."""

    def __init__(self, spec: JobSpec, info: RunInfo, resources: ActorResources | None = None,
                 worker_cls: type = RestoreWorker):
        """Start the actors (each loads the prior once); spread them over the cluster's nodes."""
        self.spec, self.info = spec, info
        self.resources = resources or actor_resources(spec)
        self._remote = ray.remote(worker_cls)
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self.actors = [self._start() for _ in range(spec.num_actors)]

    def _start(self) -> Any:
        return self._remote.options(
            num_cpus=self.resources.num_cpus, num_gpus=self.resources.num_gpus,
            max_restarts=_MAX_RESTARTS, max_task_retries=_MAX_RESTARTS,
            max_concurrency=ACTOR_CONCURRENCY,
            scheduling_strategy="SPREAD",
        ).remote(self.spec, self.info, self.resources.threads)

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until every actor has loaded its prior; raise the first actor's start error."""
        ray.get([a.__ray_ready__.remote() for a in self.actors], timeout=timeout)

    def pick(self) -> Any:
        """The next actor handle, round-robin."""
        with self._lock:
            return self.actors[next(self._counter) % len(self.actors)]

    def replace(self, dead: Any) -> Any:
        """Swap a permanently dead actor for a fresh one; return the handle to use."""
        with self._lock:
            for i, actor in enumerate(self.actors):
                if actor is dead or actor._actor_id == dead._actor_id:
                    self.actors[i] = self._start()
                    return self.actors[i]
            return self.actors[next(self._counter) % len(self.actors)]

    def shutdown(self) -> None:
        """Kill the actors (no restarts)."""
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001, S110 - already gone
                pass
        self.actors = []
