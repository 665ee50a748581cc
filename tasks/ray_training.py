"""The training loop on several workers with Ray Train: ``TorchTrainer`` starts the workers (gloo
on CPUs, NCCL on GPUs), ``prepare_model`` wraps the model in DDP so that gradients are averaged,
checkpoints go through Ray Train's checkpoint API to the run's folder on any fsspec store, and
``FailureConfig`` restarts the whole group from the last checkpoint when a worker dies.

The loop itself is ``restora_core.training.train``; each worker runs it with a ``WorkerGroup``
(its rank, the DDP wrapper, the checkpoint callback) and its part of every global batch
(``open_training_source``). Rank 0 streams the loop's events to the driver through a Ray queue,
so progress reaches the caller (the Prefect flow) while the run goes.

Run folder (``checkpoint_dir``): Ray Train's own layout (``checkpoint_*`` folders, each holding
``state.pt``, and its snapshot file), plus ``data-plan/`` (the shards' item lists) and
``restora-run.json`` (what the run trains: a rerun with another model, data or global batch is
refused before any worker starts). Rerunning the same command resumes: Ray Train finds the
latest checkpoint of a run folder that already has one.
"""

from __future__ import annotations

import contextvars
import io
import json
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from restora_core.storage import open_fs, write_uri_atomic
from restora_core.training import TrainConfig
from restora_core.training.config import RESUME_INVARIANT
from restora_core.training.loop import ResumeRefused, resume_conflicts

from .training_data import TrainingData

RUN_FILE = "restora-run.json"
STATE_FILE = "state.pt"


@dataclass(frozen=True)
class ScaleConfig:
    """How many Ray Train workers run the loop and what each one holds."""

    workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 2

    def __post_init__(self):
        if self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError("--cpus-per-worker must be > 0 and --gpus-per-worker >= 0")
        if self.max_failures < 0:
            raise ValueError(f"max_failures must be >= 0, got {self.max_failures}")

    @property
    def backend(self) -> str:
        """The collective backend the workers use."""
        return "nccl" if self.gpus_per_worker > 0 else "gloo"


def run_record(cfg: TrainConfig, data: TrainingData) -> dict[str, Any]:
    """What a run folder is for: the settings a resume must keep, and the data fingerprint."""
    conf = cfg.to_dict()
    return {"config": {k: conf[k] for k in RESUME_INVARIANT},
            "data_fingerprint": data.info["fingerprint"]}


def clear_run_folder(cfg: TrainConfig) -> bool:
    """Delete the run folder (``--restart``: start over); whether there was one."""
    fs, root = open_fs(cfg.checkpoint_dir.rstrip("/"), cfg.storage_options)
    if not fs.exists(root):
        return False
    fs.rm(root, recursive=True)
    return True


def claim_run_folder(cfg: TrainConfig, data: TrainingData) -> str:
    """Check the run folder before any worker starts: "new" (now recorded as this run's) or
    "resume"; ResumeRefused names what changed."""
    uri = cfg.checkpoint_dir.rstrip("/")
    fs, root = open_fs(uri, cfg.storage_options)
    record_path = f"{root}/{RUN_FILE}"
    mine = run_record(cfg, data)
    if fs.exists(record_path) and _has_checkpoint(fs, root):
        saved = json.loads(fs.cat_file(record_path))
        diffs = resume_conflicts(saved["config"], cfg, saved.get("data_fingerprint"),
                                 mine["data_fingerprint"])
        if diffs:
            raise ResumeRefused(f"cannot resume the run in '{uri}': the run changed "
                                f"({'; '.join(diffs)}); start over with --restart or use "
                                "another --checkpoint-dir")
        return "resume"
    write_uri_atomic(f"{uri}/{RUN_FILE}", json.dumps(mine, indent=1).encode(),
                     cfg.storage_options)
    return "new"


def _has_checkpoint(fs: Any, root: str) -> bool:
    # Ray Train's checkpoint_* folders or the plain loop's step_*.pt files: a run that failed
    # before its first checkpoint leaves nothing to resume, and does not hold the folder.
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    return any(n.startswith("checkpoint_") or (n.startswith("step_") and n.endswith(".pt"))
               for n in names)


def _storage(uri: str, storage_options: dict[str, Any]) -> tuple[str, str, Any]:
    """(storage_path, name, storage_filesystem) of a run folder URI for Ray Train's RunConfig."""
    uri = uri.rstrip("/")
    fs, path = open_fs(uri, storage_options)
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    if "://" not in uri or uri.startswith("file://"):
        return os.path.abspath(parent or "."), name, None
    import pyarrow.fs as pafs

    return parent, name, pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def _worker_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: this rank's batches, the DDP model, checkpoints through Ray."""
    import ray.train
    import ray.train.torch
    import torch

    from restora_core.training import train
    from restora_core.training.parallel import WorkerGroup

    from .training_data import open_training_source

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    cfg = TrainConfig.from_dict({**config["cfg"], "device": str(device)})
    data: TrainingData = config["data"]
    events = config["events"]
    source, info = open_training_source(cfg, data, rank=rank, world_size=world)

    resume_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder, open(os.path.join(folder, STATE_FILE),
                                                        "rb") as f:
            blob = f.read()
        resume_state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        resume_state["uri"] = checkpoint.path

    def save(state: dict[str, Any] | None, step: int, metrics: dict[str, Any]) -> str | None:
        if state is None:
            ray.train.report(metrics)
            return None
        with tempfile.TemporaryDirectory(prefix="restora-ckpt-") as folder:
            torch.save(state, os.path.join(folder, STATE_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        return f"{cfg.checkpoint_dir.rstrip('/')} (Ray Train checkpoint of step {step})"

    def emit(event: dict[str, Any]) -> None:
        if rank == 0:
            events.put(event)

    group = WorkerGroup(rank=rank, world_size=world, backend=config["backend"], save=save,
                        resume_state=resume_state,
                        wrap_model=lambda m: ray.train.torch.prepare_model(m))
    result = train(cfg, source=source, data_info=info, callback=emit, group=group)
    if rank == 0:
        from restora_core.training import image_grid

        grid = image_grid(result.samples) if result.samples is not None else None
        events.put({"event": "result", "step": result.step, "final_loss": result.final_loss,
                    "seconds": result.seconds, "steps_per_s": result.steps_per_s,
                    "stopped_by": result.stopped_by, "history": result.history,
                    "prior": result.prior_uri, "prior_sha256": result.prior_sha256,
                    "checkpoint": result.checkpoint, "resumed_from": result.resumed_from,
                    "card": result.card, "grid": grid})


def train_on_ray(cfg: TrainConfig, data: TrainingData, scale: ScaleConfig, *,
                 callback: Callable[[dict[str, Any]], None] | None = None,
                 run_name: str | None = None) -> dict[str, Any]:
    """Run the loop on ``scale.workers`` Ray Train workers (Ray already connected) and return
    rank 0's summary; ``callback`` gets the loop's events as they happen."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    if not cfg.checkpoint_dir:
        raise ValueError("training on Ray workers needs checkpoint_dir (the run folder)")
    if cfg.batch_size % scale.workers:
        raise ValueError(f"the global batch {cfg.batch_size} does not split evenly over "
                         f"{scale.workers} workers")
    storage_path, name, filesystem = _storage(cfg.checkpoint_dir, cfg.storage_options)
    events = Queue(maxsize=10_000)
    resources = {"CPU": scale.cpus_per_worker}
    if scale.gpus_per_worker:
        resources["GPU"] = scale.gpus_per_worker
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"cfg": cfg.to_dict(), "data": data.for_workers(), "events": events,
                           "backend": scale.backend},
        torch_config=TorchConfig(backend=scale.backend),
        scaling_config=ray.train.ScalingConfig(num_workers=scale.workers,
                                               use_gpu=scale.gpus_per_worker > 0,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=run_name or name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=scale.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=max(1, cfg.keep_checkpoints))))
    summary: dict[str, Any] = {}
    done = threading.Event()

    def drain() -> None:
        while not done.is_set() or not events.empty():
            try:
                event = events.get(timeout=0.2)
            except (queue.Empty, Exception):  # noqa: BLE001, S112 - ray's Empty, or a queue gone
                continue
            if event.get("event") == "result":
                summary.clear()
                summary.update(event)
            elif callback is not None:
                callback(event)

    # the caller's context (e.g. Prefect's run context) goes with the events into the thread
    reader = threading.Thread(target=contextvars.copy_context().run, args=(drain,),
                              name="restora-train-events", daemon=True)
    reader.start()
    start = time.monotonic()
    try:
        result = trainer.fit()
    finally:
        done.set()
        reader.join(timeout=30)
    if not summary:
        raise RuntimeError(f"the Ray Train run ended without a result from rank 0 "
                           f"(error: {getattr(result, 'error', None)})")
    summary.pop("event", None)
    summary["ray_checkpoint"] = result.checkpoint.path if result.checkpoint else None
    summary["wall_s"] = time.monotonic() - start
    return summary
