"""The device stage: a callable class that loads the prior once and restores batches.

Ray runs it as an actor (``ray.remote(RestoreWorker)``); resources (GPUs, CPUs, pool size) are
chosen where the pool is launched (``tasks.pool``), never here. ``__call__`` maps the
``dict[str, np.ndarray]`` batch from ``load_batch`` to the same batch plus the restored images,
per-image status/error, nfe, metrics, device and node, all as columns.

Images of the task's input size for the prior are restored together, ``batch_size`` per network
pass. An image of another size (size policy ``tile``) is restored at its own size
(``restora_core.full_resolution``): windows around its holes (or the whole image for tasks that
restore every pixel), cut into prior-sized tiles. Windows of one shape, from any of the batch's
images, share network passes, ``batch_size`` tiles per pass (docs/tiling.md).

Calls may run concurrently (Ray ``max_concurrency``, see ``tasks.pool``): the device section of a
call holds a lock, so one batch samples while another builds its observations or computes its
metrics on the CPU, and the device is never idle between batches.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from restora_core import load_prior, restore
from restora_core.degradations import get_task
from restora_core.full_resolution import (
    FullPlan,
    FullResult,
    RestoredWindow,
    assemble_full,
    plan_full,
    restore_windows,
    window_groups,
)
from restora_core.metrics import consistency, psnr, psnr_hole, ssim, uncertainty_summary
from restora_core.metrics.lpips import LPIPS_MIN_SIZE
from restora_core.noise import generators_for_seeds
from restora_core.observations import make_observation, simulate_observation
from restora_core.runtime import RuntimeConfig
from restora_core.seeding import image_seed

from .batch_io import object_array
from .manifest import params_json

if TYPE_CHECKING:  # the worker only reads the spec: importing it needs no pydantic
    from .spec import JobSpec, RestorationSpec, RunInfo

# Calls an actor runs at once (Ray max_concurrency, set in tasks.pool): one samples on the
# device while the next prepares on the CPU.
ACTOR_CONCURRENCY = 2
METRIC_COLUMNS = ("known_fraction", "consistency", "psnr", "ssim", "psnr_hole", "lpips",
                  "uncertainty_mean", "uncertainty_p95")
# Per-row outputs of the sampler (None where an image was not restored).
# window_boxes: (top, left, height, width) of each restored window of a tiled image (preview).
_USED_COLUMNS = ("restored", "observed", "obs_mask", "reference", "nfe", "steps", "corrections",
                 "method_params", "windows", "tiles", "window_boxes", "flag", "uncertainty_map")


class BatchOutOfMemory(RuntimeError):
    """One image alone does not fit on the device: the shard cannot be restored here."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether a sampler failure is the device (or host allocator) running out of memory."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001, S110 - outside Ray, fall back to the host name
        pass
    return socket.gethostname()


class RestoreWorker:
    """Holds one prior on one device; ``__call__`` restores a decoded batch."""

    def __init__(self, restoration: RestorationSpec, info: RunInfo, threads: int | None = None,
                 *, keep_inputs: bool = False, keep_uncertainty: bool = False):
        """Load the prior once (on CUDA when this worker was given a GPU, else CPU).

        ``keep_inputs``/``keep_uncertainty``: also return each row's observation and per-pixel
        std, which the write stage stores when the output part asks for them (``worker_kwargs``).
        """
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        self.spec = restoration  # the restoration part: all the worker reads of the job
        self.info = info
        self.keep_inputs, self.keep_uncertainty = keep_inputs, keep_uncertainty
        # The device and precision were resolved (and hashed) for the whole job: run exactly
        # those, or fail loudly, rather than write rows under a config hash they do not match.
        self.device = info.device
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("this job runs on GPUs but this actor sees no CUDA device")
        prior = load_prior(restoration.prior, preset=restoration.prior_preset,
                           storage_options=restoration.storage_options)
        if prior.model_id != info.model_id:
            raise RuntimeError(f"prior '{restoration.prior}' changed during the run: weights hash "
                               f"{prior.model_id[:12]} != validated {info.model_id[:12]}")
        self.prior = prior.prepare(self.device, RuntimeConfig(precision=info.precision))
        self._device_lock = threading.Lock()
        self.oom_splits = 0  # batches halved after running out of memory, for the logs
        self.node = _node_id()
        self.lpips = None
        if restoration.lpips_weights and restoration.uses_references:
            from restora_core.metrics import LPIPS

            self.lpips = LPIPS(restoration.lpips_weights).to(self.device)

    def _observe(self, image: np.ndarray, mask: np.ndarray | None, params: dict[str, Any],
                 row_id: str, any_size: bool = False):
        x = torch.from_numpy(np.ascontiguousarray(image))[None]
        m = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask))[None]
        (gen,) = generators_for_seeds([image_seed(self.spec.seed, f"{row_id}#observation")])
        if self.spec.uses_references:
            return simulate_observation(self.spec.task, x, params=params, generator=gen, mask=m)
        return make_observation(self.spec.task, x, params=params, generator=gen, mask=m,
                                size=self.info.prior_size, any_size=any_size)

    def _batched(self, image: np.ndarray, params: dict[str, Any]) -> bool:
        """Whether an image has the job's input size for the prior (restored in batches)."""
        return tuple(image.shape[-2:]) == self.info.input_size(self.spec, params)

    def _restore_group(self, rows: list[int], batch: dict[str, np.ndarray],
                       params: dict[str, Any], out: dict[str, Any]) -> None:
        obs = [self._observe(batch["image"][i], batch["mask"][i], params, batch["id"][i])
               for i in rows]
        y = torch.cat([o.y for o in obs])
        mask = None if obs[0].mask is None else torch.cat([o.mask for o in obs])
        kwargs: dict[str, Any] = {}
        if obs[0].sigma is not None:
            kwargs["sigma"] = obs[0].sigma
        if self.device == "cuda":  # page-locked: the copy to the device does not block the host
            y, mask = y.pin_memory(), None if mask is None else mask.pin_memory()
        with self._device_lock:
            y_dev = y.to(self.device, non_blocking=True)
            m_dev = None if mask is None else mask.to(self.device, non_blocking=True)
            result = restore(self.prior, y_dev, m_dev, method=self.spec.method,
                             task=self.spec.task, seed=[int(batch["seed"][i]) for i in rows],
                             samples=self.spec.samples, estimate=self.spec.estimate,
                             # K samples per image still run network_batch rows per pass
                             max_batch=self.spec.network_batch, **kwargs,
                             **self.spec.resolved_params)
            x = result.images.float().cpu()
        used = {"nfe": result.nfe, "steps": result.steps, "corrections": result.corrections,
                "method_params": params_json(result.params), "windows": 1, "tiles": 1}
        self._record(rows, batch, out, x, y, mask, result.std, used)

    def _restore_tiled(self, rows: list[int], batch: dict[str, np.ndarray],
                       params: dict[str, Any], out: dict[str, Any],
                       failed: set[int] | None = None) -> None:
        """Restore images of another size at their own size: plan each, restore windows of one
        shape from all of them together (``_restore_windows_fitting``), assemble each.

        With ``failed``, an image whose observation, plan or window group fails (not for
        memory) is added to it and left unrestored, the others carry on; without, it raises."""
        obs, plans = {}, {}
        for i in rows:
            try:
                obs[i] = self._observe(batch["image"][i], batch["mask"][i], params,
                                       batch["id"][i], any_size=True)
                plans[i] = plan_full(obs[i].y, obs[i].mask, tile=self.prior.resolution,
                                     whole=get_task(self.spec.task).whole_image,
                                     seed=int(batch["seed"][i]))
            except (ValueError, RuntimeError):
                if failed is None:
                    raise
                failed.add(i)
        order = list(plans)
        planned = [plans[i] for i in order]
        # One task-params group has one noise level, as in _restore_group.
        sigma = next((o.sigma for o in obs.values() if o.sigma is not None), None)
        kwargs: dict[str, Any] = {} if sigma is None else {"sigma": sigma}
        done: dict[tuple[int, int], RestoredWindow] = {}
        for members in window_groups(planned):
            members = [m for m in members if order[m[0]] not in (failed or ())]
            images = sorted({order[p] for p, _ in members})
            if not members:
                continue
            try:
                parts = self._restore_windows_fitting(planned, members, images, batch, kwargs)
            except BatchOutOfMemory:
                raise
            except (ValueError, RuntimeError):
                if failed is None:
                    raise
                failed.update(images)  # restored again one by one, to find the culprit
                continue
            done.update(zip(members, parts))
        for p, i in enumerate(order):
            if failed is not None and i in failed:
                continue
            try:
                full = assemble_full(plans[i], [done[p, k] for k in range(len(plans[i].windows))],
                                     self.spec.samples)
                self._record([i], batch, out, full.image.float().cpu(), obs[i].y, obs[i].mask,
                             full.std, _tiled_used(full, self.spec))
            except (ValueError, RuntimeError):
                if failed is None:
                    raise
                failed.add(i)
                continue
            out["window_boxes"][i] = [(w.top, w.left, w.height, w.width) for w in full.windows]

    def _record(self, rows: list[int], batch: dict[str, np.ndarray], out: dict[str, Any],
                x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None,
                std: torch.Tensor | None, used: dict[str, Any]) -> None:
        """Store the restored ``x: (B, C, H, W)`` of ``rows``, their metrics and ``used``
        (what the sampler ran: nfe, steps, corrections, method_params, windows, tiles)."""
        y_cpu = y.float().cpu()
        m_cpu = None if mask is None else mask.float().cpu()
        metrics = {"known_fraction": (torch.ones(len(rows)) if m_cpu is None
                                      else m_cpu.flatten(1).mean(1)),
                   "consistency": consistency(x, y_cpu, m_cpu)}
        if std is not None:
            std = std.float().cpu()
            metrics["uncertainty_mean"], metrics["uncertainty_p95"] = uncertainty_summary(std, m_cpu)
            if self.keep_uncertainty:
                for k, i in enumerate(rows):
                    out["uncertainty_map"][i] = std[k].mean(0).numpy()
        if self.spec.uses_references:
            ref = torch.from_numpy(np.stack([batch["image"][i] for i in rows])).float()
            if ref.shape == x.shape:
                metrics["psnr"] = psnr(x, ref)
                if min(x.shape[-2:]) >= 11:
                    metrics["ssim"] = ssim(x, ref)
                if m_cpu is not None:
                    metrics["psnr_hole"] = psnr_hole(x, ref, m_cpu)
                if self.lpips is not None and min(x.shape[-2:]) >= LPIPS_MIN_SIZE:
                    with torch.inference_mode():
                        metrics["lpips"] = self.lpips(x.to(self.device), ref.to(self.device)).cpu()
        for k, i in enumerate(rows):
            out["restored"][i] = x[k].numpy()
            # What the sampler ran with (mask_ode/ot_ode/pnp_flow use no corrections).
            for name, value in used.items():
                out[name][i] = value
            if self.keep_inputs or batch["preview"][i]:
                out["observed"][i] = y_cpu[k].numpy()
                out["obs_mask"][i] = None if m_cpu is None else m_cpu[k].numpy()
            if batch["preview"][i] and self.spec.uses_references:
                out["reference"][i] = batch["image"][i]
            for name, values in metrics.items():
                value = float(values.reshape(-1)[k])
                out[name][i] = value if np.isfinite(value) else np.nan
            threshold = self.spec.uncertainty_threshold
            if threshold is not None and np.isfinite(out["uncertainty_mean"][i]):
                out["flag"][i] = "uncertain" if out["uncertainty_mean"][i] > threshold else "ok"

    def _free_device_memory(self) -> None:
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def _restore_fitting(self, rows: list[int], batch: dict[str, np.ndarray],
                         params: dict[str, Any], out: dict[str, Any]) -> None:
        """Restore ``rows``, halving them while the device runs out of memory.

        Running out of memory says nothing about the images, so it never becomes an error row:
        one image that alone does not fit raises ``BatchOutOfMemory`` and fails the shard.
        """
        try:
            self._restore_group(rows, batch, params, out)
            return
        except (RuntimeError, MemoryError) as exc:
            if not (isinstance(exc, MemoryError) or is_out_of_memory(exc)):
                raise
            oom = exc
        self._free_device_memory()
        if len(rows) == 1:
            raise BatchOutOfMemory(
                f"out of memory restoring one image ({batch['id'][rows[0]]}) on {self.device} "
                f"with samples={self.spec.samples}: lower --samples or run on a device with more "
                f"memory ({oom})") from oom
        half = len(rows) // 2
        self.oom_splits += 1
        logging.getLogger("restora.worker").warning(
            "out of memory on %d image(s) on %s; retrying as %d + %d (%s)", len(rows),
            self.device, half, len(rows) - half, oom)
        for part in (rows[:half], rows[half:]):
            self._restore_fitting(part, batch, params, out)

    def _restore_windows_fitting(self, plans: list[FullPlan], members: list[tuple[int, int]],
                                 images: list[int], batch: dict[str, np.ndarray],
                                 kwargs: dict[str, Any]) -> list[RestoredWindow]:
        """Restore one group of equally shaped windows (of the batch rows ``images``), halving
        the tiles per network pass while the device runs out of memory; ``BatchOutOfMemory``
        when one tile per pass does not fit."""
        tile_batch = self.spec.network_batch
        names = ", ".join(str(batch["id"][i]) for i in images)
        while True:
            try:
                with self._device_lock:
                    parts = restore_windows(
                        self.prior.velocity, plans, members, max_batch=tile_batch,
                        device=self.device, method=self.spec.method, task=self.spec.task,
                        samples=self.spec.samples, estimate=self.spec.estimate, **kwargs,
                        **self.spec.resolved_params)
                    return [RestoredWindow(w.image.float().cpu(),
                                           None if w.std is None else w.std.float().cpu(),
                                           w.nfe, w.tiles, w.params) for w in parts]
            except (RuntimeError, MemoryError) as exc:
                if not (isinstance(exc, MemoryError) or is_out_of_memory(exc)):
                    raise
                oom = exc
            self._free_device_memory()
            if tile_batch == 1:
                raise BatchOutOfMemory(
                    f"out of memory restoring one tile of image{'s' if len(images) > 1 else ''} "
                    f"({names}) on {self.device} with samples={self.spec.samples}: lower "
                    f"--samples or run on a device with more memory ({oom})") from oom
            self.oom_splits += 1
            logging.getLogger("restora.worker").warning(
                "out of memory on %d tiles per pass of %s on %s; retrying with %d (%s)",
                tile_batch, names, self.device, tile_batch // 2, oom)
            tile_batch //= 2

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Restore every ``status == "ok"`` row; failures become error rows, never exceptions.

        The exceptions: running out of memory on a single image (``BatchOutOfMemory``), which
        fails the shard rather than blaming the image."""
        n = len(batch["id"])
        out: dict[str, Any] = {key: [None] * n for key in _USED_COLUMNS}
        for name in METRIC_COLUMNS:
            out[name] = [np.nan] * n
        status = list(batch["status"])
        error = list(batch["error"])
        groups: dict[str, list[int]] = {}
        for i in range(n):
            if status[i] == "ok":
                groups.setdefault(batch["task_params"][i], []).append(i)
        for params_text, rows in groups.items():
            params = json.loads(params_text)
            batched = [i for i in rows if self._batched(batch["image"][i], params)]
            _isolating(batched, lambda part, p=params: self._restore_fitting(part, batch, p, out),
                       status, error)
            failed: set[int] = set()  # tiled images whose window group failed: isolate them
            self._restore_tiled([i for i in rows if i not in batched], batch, params, out, failed)
            for i in sorted(failed):
                _isolating([i], lambda part, p=params: self._restore_tiled(part, batch, p, out),
                           status, error)
        result = {k: v for k, v in batch.items() if k not in ("image", "mask")}
        result["status"] = object_array(status)
        result["error"] = object_array(error)
        for key, values in out.items():
            result[key] = object_array(values) if key in _USED_COLUMNS \
                else np.asarray(values, dtype=np.float64)
        # What ran, for the manifest: the write stage sees no restoration settings.
        for name in ("task", "method"):
            result[name] = object_array([getattr(self.spec, name)] * n)
        result["samples"] = np.full(n, self.spec.samples, dtype=np.int64)
        result["device"] = object_array([self.device] * n)
        result["worker_node"] = object_array([self.node] * n)
        result["restore_end"] = np.full(n, time.time())
        return result


def worker_kwargs(spec: JobSpec, info: RunInfo) -> dict[str, Any]:
    """A job's ``RestoreWorker`` arguments (besides ``threads``, which the pool sets): the
    restoration part, the run's resolved facts, and what the output part stores beside images."""
    return {"restoration": spec.restoration, "info": info,
            "keep_inputs": spec.output.save_inputs, "keep_uncertainty": spec.output.save_uncertainty}


def _isolating(rows: list[int], run: Any, status: list[str], error: list[Any]) -> None:
    """``run(rows)``; when it fails, run each row alone so that only the failing image becomes
    an error row (running out of memory on one image, ``BatchOutOfMemory``, fails the shard)."""
    if not rows:
        return
    try:
        run(rows)
        return
    except BatchOutOfMemory:
        raise
    except (ValueError, RuntimeError) as exc:
        if len(rows) == 1:
            status[rows[0]], error[rows[0]] = "error", f"restore-failed: {exc}"
            return
    for i in rows:  # isolate the image that fails
        try:
            run([i])
        except BatchOutOfMemory:
            raise
        except (ValueError, RuntimeError) as single:
            status[i], error[i] = "error", f"restore-failed: {single}"


def _tiled_used(full: FullResult, spec: RestorationSpec) -> dict[str, Any]:
    """What restoring a tiled image ran: nfe in prior-sized tile evaluations, its windows and
    the most tiles in one; an image with nothing missing ran no sampler (nfe 0)."""
    ran = full.params or spec.resolved_params
    return {"nfe": full.nfe, "steps": ran["steps"], "corrections": ran.get("corrections", 0),
            "method_params": params_json(ran), "windows": len(full.windows), "tiles": full.tiles}
