"""Launch the pool of long-lived RestoreWorker actors: resources are declared here, from config."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

import ray

from .spec import JobSpecError, RuntimeSpec
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


def actor_resources(runtime: RuntimeSpec,
                    cluster: dict[str, float] | None = None) -> ActorResources:
    """One GPU per actor when the cluster has GPUs (unless the spec says otherwise), else CPUs."""
    cluster = cluster if cluster is not None else ray.cluster_resources()
    gpus = runtime.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if cluster.get("GPU", 0) >= 1 else 0.0
    # The shard's read/write tasks need CPU too: actors that reserve every CPU deadlock the job.
    needed = runtime.num_actors * runtime.cpus_per_actor + IO_TASK_CPUS
    available = cluster.get("CPU", 0.0)
    if needed > available:
        raise JobSpecError(
            f"num_actors={runtime.num_actors} x cpus_per_actor={runtime.cpus_per_actor} leaves no CPU "
            f"for the read/write tasks on a cluster with {available:g} CPUs; lower one so that "
            f"their product is at most {available - IO_TASK_CPUS:g}")
    return ActorResources(num_cpus=runtime.cpus_per_actor, num_gpus=float(gpus))


def actor_device(runtime: RuntimeSpec, cluster: dict[str, float] | None = None) -> str:
    """The device kind the pool's actors run on: ``cuda`` when each reserves a GPU, else ``cpu``."""
    return "cuda" if actor_resources(runtime, cluster).num_gpus > 0 else "cpu"


class ActorPool:
    """Round-robin handles to ``num_actors`` RestoreWorker actors shared by all shard tasks."""

    def __init__(self, runtime: RuntimeSpec, worker_kwargs: dict[str, Any],
                 resources: ActorResources | None = None, worker_cls: type = RestoreWorker):
        """Start ``runtime.num_actors`` actors, each ``worker_cls(**worker_kwargs, threads=...)``
        (``tasks.worker.worker_kwargs``; each loads the prior once), spread over the nodes."""
        self.worker_kwargs = worker_kwargs
        self.resources = resources or actor_resources(runtime)
        self._remote = ray.remote(worker_cls)
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self.actors = [self._start() for _ in range(runtime.num_actors)]

    def _start(self) -> Any:
        return self._remote.options(
            num_cpus=self.resources.num_cpus, num_gpus=self.resources.num_gpus,
            max_restarts=_MAX_RESTARTS, max_task_retries=_MAX_RESTARTS,
            max_concurrency=ACTOR_CONCURRENCY,
            scheduling_strategy="SPREAD",
        ).remote(**self.worker_kwargs, threads=self.resources.threads)

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
