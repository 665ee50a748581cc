"""The training loop: conditional flow matching, AdamW with linear warmup, gradient clipping,
EMA, optional minibatch OT coupling, resumable checkpoints, and the final prior export.

Where batches come from: a dataset that fits is held on the training device and each step's
images, crops, augmentations, noise and times are drawn there (``DeviceBatches``, seeded by
``(seed, step)``), with the OT assignment solved on the host while the device runs the previous
step. Otherwise step ``k`` trains on ``dataset.batch(k, batch_size)`` with noise and times from a
CPU ``torch.Generator`` seeded by ``(seed, k)``, prepared in a thread on CUDA.

Reproducibility: either way everything random is a pure function of the seed and the step (and
the device type), so a checkpoint needs only the weights, the EMA, the optimiser state and the
step to make a resumed run replay an uninterrupted one (bit-exactly on the CPU; on CUDA up to the
nondeterminism of its kernels).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import platform
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..datasets.arrays import Augment, TrainingSet, load_npz, sha256_file
from ..models import build_model
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import RESUME_INVARIANT, TrainConfig
from .device_batches import DeviceBatches, PendingBatch, fits_on
from .ema import EMA
from .flow_matching import CFMBatch, cfm_loss, make_cfm_batch
from .parallel import BatchSource, WorkerGroup
from .sampling import euler_sample

Callback = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """What a run returns. ``history``: one dict per log interval (step, loss, lr, grad_norm,
    steps_per_s, elapsed_s); ``samples``: ``(n, C, H, W)`` Euler samples of the EMA model in
    [-1, 1] (or None)."""

    step: int
    final_loss: float
    seconds: float
    steps_per_s: float
    stopped_by: str
    history: list[dict[str, Any]]
    model: torch.nn.Module
    ema_model: torch.nn.Module
    card: dict[str, Any]
    data_info: dict[str, Any]
    prior_uri: str | None = None
    prior_sha256: str | None = None
    checkpoint: str | None = None
    resumed_from: str | None = None
    samples: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def step_seed(seed: int, step: int) -> int:
    """63-bit seed of step ``step``'s noise and times."""
    digest = hashlib.sha256(f"restora-train\x00{int(seed)}\x00{int(step)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def load_training_set(cfg: TrainConfig) -> tuple[TrainingSet, dict[str, Any]]:
    """The dataset named by ``cfg.data`` and a description of it for the model card."""
    src = cfg.data
    if not src:
        raise ValueError("TrainConfig.data is empty: give a .npz/.npy file or an image source")
    so = cfg.storage_options or None
    if src.endswith((".npz", ".npy")):
        ds = load_npz(src, cfg.resolution, seed=cfg.seed, scales=cfg.scales,
                      channels=cfg.channels, storage_options=so)
        ds.augment = Augment(
            hflip=ds.augment.hflip if cfg.hflip is None else bool(cfg.hflip),
            rot90=ds.augment.rot90 if cfg.rot90 is None else bool(cfg.rot90))
        info = {"source": src, "sha256": sha256_file(src, so), "format": "npz"}
    else:
        # Folders, Parquet and WebDataset shards are read by the pipeline's readers, which the
        # engine does not import: `restora train` decodes them and passes the set in.
        raise ValueError(f"TrainConfig.data '{src}' is not a .npz/.npy training set: train on "
                         "image folders, Parquet or WebDataset shards with `restora train "
                         "--data` (tasks.training_data), or pass dataset= to train()")
    if ds.channels != cfg.channels:
        raise ValueError(f"data has {ds.channels} channels, config says {cfg.channels}")
    info.update({"kind": type(ds).__name__, "count": len(ds),
                 "content_sha256": ds.meta.get("content_sha256"),
                 "built_by": ds.meta.get("built_by"),
                 "augment": {"hflip": ds.augment.hflip, "rot90": ds.augment.rot90}})
    if hasattr(ds, "scales"):
        info["scales"] = list(ds.scales)
    return ds, info


def _batch_tensor(ds: TrainingSet, step: int, batch_size: int) -> torch.Tensor:
    u8 = ds.batch(step, batch_size)
    return torch.from_numpy(u8).float().div_(127.5).sub_(1.0)


def _lr_at(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))


class ResumeRefused(ValueError):
    """A checkpoint belongs to a run with another model, data, batch or seed."""


def resume_conflicts(saved: dict[str, Any], cfg: TrainConfig,
                     saved_fingerprint: str | None = None,
                     fingerprint: str | None = None) -> list[str]:
    """What differs between a checkpoint's run (its config and data fingerprint) and ``cfg``."""
    now = cfg.to_dict()
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}"
             for k in RESUME_INVARIANT if saved.get(k) != now.get(k)]
    if saved_fingerprint and fingerprint and saved_fingerprint != fingerprint:
        diffs.append(f"data fingerprint: checkpoint {saved_fingerprint} vs now {fingerprint}")
    return diffs


def _check_resumable(state: dict[str, Any], cfg: TrainConfig, uri: str,
                     fingerprint: str | None) -> None:
    diffs = resume_conflicts(state["config"], cfg, state.get("data_fingerprint"), fingerprint)
    if diffs:
        raise ResumeRefused(f"cannot resume from '{uri}': the run changed ({'; '.join(diffs)}); "
                            "start over with --restart (resume=False) or use another "
                            "checkpoint_dir")


def train(cfg: TrainConfig, *, dataset: TrainingSet | None = None,
          data_info: dict[str, Any] | None = None, callback: Callback | None = None,
          source: BatchSource | None = None, group: WorkerGroup | None = None
          ) -> TrainResult:
    """Train a velocity field by conditional flow matching and export its EMA as a prior.

    ``dataset``: an in-memory set (else ``cfg.data`` is loaded). ``source``: keyed batches
    instead (``keyed.KeyedImages`` or a streaming source; ``data_info`` then required).
    ``group``: this worker's place in a data-parallel run (default: the only worker).
    ``callback`` receives a dict per log interval (``event="log"``), per checkpoint
    (``"checkpoint"``) and at the end (``"done"``). Nothing is printed.
    """
    group = group or WorkerGroup()
    if source is not None:
        if data_info is None:
            raise ValueError("train(source=...) needs data_info for the model card")
    elif group.distributed:
        raise ValueError("several workers need a keyed batch source (train(source=...))")
    elif dataset is None:
        dataset, data_info = load_training_set(cfg)
    elif data_info is None:
        data_info = {"source": cfg.data or "in-memory", "kind": type(dataset).__name__,
                     "count": len(dataset), "content_sha256": dataset.meta.get("content_sha256")}
    if cfg.ot_coupling:
        try:
            import scipy.optimize  # noqa: F401
        except ImportError as e:  # fail before training, not at the first step
            raise ImportError("ot_coupling needs scipy; install it or pass --no-ot-coupling") from e
    from ..priors import save_prior  # fail fast if safetensors is missing

    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    emit = callback or (lambda _e: None)

    torch.manual_seed(cfg.seed)  # the initial weights (the only draw from the global RNG)
    model = build_model(cfg.architecture()).to(device)
    model.train()
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                            weight_decay=cfg.weight_decay, fused=device.type == "cuda")
    step, history, prior_seconds = 0, [], 0.0
    resumed_from = None
    fingerprint = data_info.get("fingerprint")
    state, uri = group.resume_state, "the run's latest checkpoint"
    if state is None and cfg.checkpoint_dir and cfg.resume and group.save is None:
        uri = latest_checkpoint(cfg.checkpoint_dir, cfg.storage_options or None)
        state = load_checkpoint(uri, cfg.storage_options or None) if uri is not None else None
    if state is not None:
        _check_resumable(state, cfg, uri, fingerprint)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        ema.module.to(device)
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        history = list(state.get("history", []))
        prior_seconds = float(state.get("seconds", 0.0))
        resumed_from = state.get("uri", uri)
        if source is not None and state.get("data_positions"):
            source.restore(state["data_positions"], step)
    train_model = group.wrap_model(torch.compile(model) if cfg.compile else model)
    use_autocast = bool(cfg.bf16)

    if source is not None:
        on_device = False
        scheme = source.description
    else:
        on_device = fits_on(dataset, device) if cfg.device_data is None else bool(cfg.device_data)
        scheme = ("device: DeviceBatches(dataset, device, seed).draw(step)" if on_device else
                  "host: batch = dataset.batch(step); noise = Generator(step_seed(seed, step))")
    batches = DeviceBatches(dataset, device, cfg.seed) if on_device else None

    def checkpoint_state(positions: list[dict[str, Any]] | None) -> dict[str, Any]:
        return {"model": model.state_dict(), "ema": ema.state_dict(),
                "optimizer": opt.state_dict(), "step": step, "config": cfg.to_dict(),
                "history": history, "seconds": prior_seconds + elapsed,
                "data_fingerprint": fingerprint, "world_size": group.world_size,
                "data_order": {"scheme": scheme, "seed": cfg.seed, "next_step": step},
                "data_positions": positions}

    def save(k: int) -> str | None:
        positions = group.gather(source.position(k)) if source is not None else None
        if group.save is None:
            return save_checkpoint(checkpoint_state(positions), cfg.checkpoint_dir, k,
                                   keep=cfg.keep_checkpoints,
                                   storage_options=cfg.storage_options or None)
        metrics = {"step": k, "loss": history[-1]["loss"] if history else float("nan")}
        return group.save(checkpoint_state(positions) if group.is_chief else None, k, metrics)

    def prepare(k: int) -> CFMBatch:
        if source is not None:
            b = source.batch(k)
            return CFMBatch(b.x_t.pin_memory(), b.t.pin_memory(),
                            b.u_t.pin_memory()) if device.type == "cuda" else b
        # data, noise, times and the OT pairing of step k, made on the CPU: reproducible across
        # devices, and no GPU->CPU sync for the assignment
        x1 = _batch_tensor(dataset, k, cfg.batch_size)
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, k))
        b = make_cfm_batch(x1, gen, ot=cfg.ot_coupling)
        if device.type == "cuda":
            b = CFMBatch(b.x_t.pin_memory(), b.t.pin_memory(), b.u_t.pin_memory())
        return b

    # host batches: step k+1's is prepared in a thread while step k runs (default: on CUDA)
    prefetch = (not on_device and (device.type == "cuda" if cfg.prefetch is None
                                   else cfg.prefetch))
    pool = ThreadPoolExecutor(1, thread_name_prefix="restora-batch") if prefetch else None
    pending: Future | None = None

    start_step = step
    t0 = time.perf_counter()
    elapsed = 0.0
    loss_sum = torch.zeros((), device=device)
    grad_sum = torch.zeros((), device=device)
    n_in_window, window_t0, window_step0 = 0, t0, step
    input_s = 0.0  # time the loop waited for batches in this log window
    checkpointing = bool(cfg.checkpoint_dir or group.save) and cfg.checkpoint_every > 0
    last_ckpt = None
    stopped_by = "max_steps"

    def window_record(lr: float, now: float) -> dict[str, Any]:
        # the window's mean loss over every worker's samples; resets the window
        nonlocal n_in_window, window_t0, window_step0, input_s
        sums = group.mean(torch.stack([loss_sum, grad_sum]).float()) / n_in_window
        n = step - window_step0
        record = {"step": step, "loss": float(sums[0]), "lr": lr, "grad_norm": float(sums[1]),
                  "steps_per_s": n / max(now - window_t0, 1e-9),
                  "input_fraction": input_s / max(now - window_t0, 1e-9),
                  "elapsed_s": prior_seconds + now - t0}
        loss_sum.zero_()
        grad_sum.zero_()
        n_in_window, window_t0, window_step0, input_s = 0, now, step, 0.0
        return record

    drawn: PendingBatch | None = None
    if batches is not None and step < cfg.max_steps:
        drawn = batches.draw(step, cfg.batch_size, cfg.ot_coupling)
    while step < cfg.max_steps:
        if cfg.max_seconds is not None and group.any(
                time.perf_counter() - t0 >= cfg.max_seconds, device):
            stopped_by = "max_seconds"
            break
        wait0 = time.perf_counter()
        if batches is not None:
            # queue step k+1's draws before step k's network so that the host's OT solve for
            # k+1 (next iteration) overlaps step k on the device
            batch = batches.finish(drawn)
            if step + 1 < cfg.max_steps:
                drawn = batches.draw(step + 1, cfg.batch_size, cfg.ot_coupling)
        elif pool is not None:
            cpu_batch = (pending or pool.submit(prepare, step)).result()
            pending = pool.submit(prepare, step + 1) if step + 1 < cfg.max_steps else None
            batch = cpu_batch.to(device)
        else:
            batch = prepare(step).to(device)
        input_s += time.perf_counter() - wait0
        lr = _lr_at(cfg, step)
        for param_group in opt.param_groups:
            param_group["lr"] = lr
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=use_autocast):
            pred = train_model(batch.x_t, batch.t)
        loss = cfm_loss(pred, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        opt.step()
        ema.update(model)
        step += 1
        loss_sum += loss.detach()
        grad_sum += grad_norm.detach()
        n_in_window += 1
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            record = window_record(lr, time.perf_counter())
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(f"training loss became {record['loss']} at step {step}")
            history.append(record)
            emit({"event": "log", **record})
        if checkpointing and step % cfg.checkpoint_every == 0:
            elapsed = time.perf_counter() - t0
            last_ckpt = save(step)
            emit({"event": "checkpoint", "step": step, "uri": last_ckpt})
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    if batches is not None:
        batches.close()
    if source is not None:
        source.close()
    if n_in_window:  # the tail after the last log line
        record = window_record(_lr_at(cfg, step - 1), time.perf_counter())
        history.append(record)
        emit({"event": "log", **record})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    if (checkpointing or cfg.checkpoint_dir) and step > start_step and (
            cfg.checkpoint_every <= 0 or step % cfg.checkpoint_every != 0):
        last_ckpt = save(step)
        emit({"event": "checkpoint", "step": step, "uri": last_ckpt})

    final_loss = _final_loss(history)
    steps_per_s = (step - start_step) / max(elapsed, 1e-9)
    card = model_card(cfg, data_info, step=step, final_loss=final_loss,
                      seconds=prior_seconds + elapsed, steps_per_s=steps_per_s,
                      n_params=sum(p.numel() for p in model.parameters()))
    card["training"]["batches"] = scheme
    card["training"]["workers"] = group.world_size
    card["training"]["per_worker_batch"] = cfg.batch_size // group.world_size
    card["training"]["backend"] = group.backend
    if cfg.ot_coupling and source is not None:
        card["training"]["ot_pairing"] = (
            f"per worker, over its {cfg.batch_size // group.world_size} samples of each step"
            + (" (runs on other worker counts pair differently)" if group.distributed else ""))
    samples = None
    if cfg.sample_count > 0 and group.is_chief:
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, -1))
        x0 = torch.randn(cfg.sample_count, cfg.channels, cfg.resolution, cfg.resolution,
                         generator=gen).to(device)
        samples = euler_sample(ema.module, x0, cfg.sample_steps).cpu()
    result = TrainResult(step=step, final_loss=final_loss, seconds=prior_seconds + elapsed,
                         steps_per_s=steps_per_s, stopped_by=stopped_by, history=history,
                         model=model, ema_model=ema.module, card=card, data_info=data_info,
                         checkpoint=last_ckpt, resumed_from=resumed_from, samples=samples)
    if cfg.output and group.is_chief:
        result.prior_sha256 = save_prior(ema.module, card, cfg.output, half=cfg.save_half,
                                         storage_options=cfg.storage_options or None)
        result.prior_uri = cfg.output
    emit({"event": "done", "step": step, "final_loss": final_loss, "seconds": result.seconds,
          "steps_per_s": steps_per_s, "prior": result.prior_uri, "stopped_by": stopped_by})
    return result


def _final_loss(history: list[dict[str, Any]], last_steps: int = 200) -> float:
    """Step-weighted mean loss over (about) the last ``last_steps`` steps of ``history``."""
    if not history:
        return float("nan")
    total = weight = 0.0
    end = history[-1]["step"]
    for i in range(len(history) - 1, -1, -1):
        prev = history[i - 1]["step"] if i > 0 else 0
        n = history[i]["step"] - prev
        total += history[i]["loss"] * n
        weight += n
        if end - prev >= last_steps:
            break
    return total / max(weight, 1)


def model_card(cfg: TrainConfig, data_info: dict[str, Any], *, step: int, final_loss: float,
               seconds: float, steps_per_s: float, n_params: int) -> dict[str, Any]:
    """The model card stored in the prior's safetensors metadata."""
    return {
        "name": cfg.name,
        "format": "restora-prior/1",
        "architecture": cfg.architecture(),
        "resolution": cfg.resolution,
        "channels": cfg.channels,
        "value_range": [-1.0, 1.0],
        "time_convention": "t=0 noise, t=1 data; x_t = t*x1 + (1-t)*x0; v(x, t) with t: (B,)",
        "parameters": int(n_params),
        "weights_dtype": "float16" if cfg.save_half else "float32",
        "weights": "EMA",
        "data": data_info,
        "training": {
            "objective": "conditional flow matching, linear path, target x1 - x0, t ~ U(0,1)",
            "ot_coupling": cfg.ot_coupling,
            "steps": int(step),
            "batch_size": cfg.batch_size,
            "optimizer": {"name": "AdamW", "lr": cfg.lr, "betas": list(cfg.betas),
                          "weight_decay": cfg.weight_decay, "warmup_steps": cfg.warmup_steps,
                          "schedule": "linear warmup then constant"},
            "grad_clip": cfg.grad_clip,
            "ema_decay": cfg.ema_decay,
            "bf16_autocast": cfg.bf16,
            "seed": cfg.seed,
            "final_loss": final_loss,
            "seconds": round(seconds, 1),
            "steps_per_s": round(steps_per_s, 3),
            "device": _device_name(cfg.device),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "config": cfg.to_dict() | {"storage_options": {}},
        "command": cfg.command or "",
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def _device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return dev.type
