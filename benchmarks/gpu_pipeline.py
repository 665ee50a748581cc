"""The GPU benchmark's pipeline row: the Ray worker class driven in-process, without Ray.

A folder of generated PNGs goes through what one shard does with one actor (``tasks.shard``):
read+decode (``load_batch``) on I/O threads, the ``RestoreWorker`` with ``ACTOR_CONCURRENCY``
calls at once (Ray's ``max_concurrency``), encode+write (``write_batch``) on I/O threads, at most
``MAX_INFLIGHT`` batches in flight. It is compared with ``restore()`` in a loop over the same,
already decoded images on the same device at the same settings. Needs no Ray, Prefect or pydantic.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from restora_core import load_prior, restore
from restora_core.observations import make_observation
from restora_core.priors import save_prior
from restora_core.runtime import RuntimeConfig, describe

MAX_INFLIGHT = 4  # the JobSpec default max_inflight_batches


def write_images(folder: Path, count: int, res: int, seed: int = 0) -> list[Path]:
    """``count`` smooth random RGB PNGs of ``res`` x ``res`` (upsampled 8x8 noise plus grain)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        img = np.asarray(coarse.resize((res, res), Image.BICUBIC), dtype=np.int16)
        img = np.clip(img + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"img{i:05d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def _spec_and_info(data: dict[str, Any], model_id: str, res: int, device: str):
    """The JobSpec and RunInfo (validated when pydantic is present, else plain records)."""
    from restora_core.runtime import RuntimeConfig, resolve_runtime
    from restora_core.samplers import get_method, params_dict

    precision = resolve_runtime(RuntimeConfig(precision=data["precision"]), device).precision
    try:
        from tasks.spec import RunInfo, parse_spec
    except ImportError:
        fields = {"masks_uri": None, "input_format": "images", "task_params": {},
                  "prior_preset": None, "size_policy": "error", "lpips_weights": None,
                  "save_inputs": False, "max_pixels": 50_000_000, "storage_options": {},
                  "uses_references": data["inputs"] == "clean", **data}
        asked = {k: data[k] for k in ("steps", "corrections") if data.get(k) is not None}
        asked.update(data.get("method_params", {}))
        fields["resolved_params"] = params_dict(
            get_method(data["method"]).make_params(data["task"], asked))
        spec = SimpleNamespace(**fields)
        info = SimpleNamespace(model_id=model_id, config_hash="benchmark", channels=3,
                               resolution=res, device=device, precision=precision,
                               output_format="images", prior_size=(res, res),
                               input_size=lambda spec, params=None: (res, res))
        return spec, info
    spec = parse_spec(data)
    config_hash = spec.config_hash(model_id, device, precision)
    return spec, RunInfo(model_id=model_id, config_hash=config_hash, channels=3, resolution=res,
                         device=device, precision=precision)


def measure_pipeline(net: torch.nn.Module, arch: dict[str, Any], tmp: Path, *,
                     device: torch.device, images: int, batch: int, steps: int,
                     deadline_s: float) -> dict[str, Any]:
    """Steady-state images/s of the worker pipeline and of ``restore()`` in a loop, and their ratio.

    Both paths run one untimed warm-up batch first. Raises ``TimeoutError`` when a phase would
    start after ``deadline_s`` seconds.
    """
    from tasks.batch_io import load_batch, write_batch
    from tasks.worker import ACTOR_CONCURRENCY, RestoreWorker

    started = time.perf_counter()

    def check(phase: str) -> None:
        if time.perf_counter() - started > deadline_s:
            raise TimeoutError(f"no time left for the {phase}")

    res = arch["input_height"]
    prior_path = tmp / "pipeline_prior.safetensors"
    card = {"architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}}
    model_id = save_prior(net, card, str(prior_path))
    paths = write_images(tmp / "pipeline_in", images + batch, res)
    data = {"input_uri": str(tmp / "pipeline_in"), "output_uri": str(tmp / "pipeline_out"),
            "task": "box", "inputs": "observed", "method": "restora_flow", "steps": steps,
            "corrections": 1, "seed": 0, "prior": str(prior_path), "batch_size": batch,
            "precision": "auto"}
    spec, info = _spec_and_info(data, model_id, res, device.type)
    requests = [{"kind": "images", "shard_id": "bench",
                 "items": [{"id": p.stem, "source": str(p)} for p in paths[i:i + batch]]}
                for i in range(0, len(paths), batch)]
    warm, timed = requests[0], requests[1:]

    check("worker")
    worker = RestoreWorker(spec, info)
    with ThreadPoolExecutor(2) as loaders, ThreadPoolExecutor(ACTOR_CONCURRENCY) as actor, \
            ThreadPoolExecutor(2) as writers, ThreadPoolExecutor(MAX_INFLIGHT) as chains:

        def chain(request: dict) -> dict:
            loaded = loaders.submit(load_batch, request, spec, info).result()
            restored = actor.submit(worker, loaded).result()
            return writers.submit(write_batch, restored, spec, info).result()

        chain(warm)
        check("pipeline pass")
        t0 = time.perf_counter()
        written = list(chains.map(chain, timed))
        pipeline_s = time.perf_counter() - t0
    ok = sum(c["status"].count("ok") for c in written)
    errors = sorted({e for c in written for e in c["error"] if e})[:3]

    check("restore() loop")
    prior = load_prior(str(prior_path)).prepare(device, RuntimeConfig(precision="auto"))
    decoded = [load_batch(r, spec, info) for r in requests]  # untimed: the loop gets tensors

    def restore_batch(b: dict) -> torch.Tensor:
        x = torch.from_numpy(np.stack(list(b["image"])))
        obs = make_observation("box", x, params={})
        seeds = [int(s) for s in b["seed"]]
        return restore(prior, obs.y, obs.mask, steps=steps, corrections=1, seed=seeds).images.cpu()

    def loop() -> float:
        restore_batch(decoded[0])
        t0 = time.perf_counter()
        for b in decoded[1:]:
            restore_batch(b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    # On a thread like the worker's calls: on a loaded CPU, torch's OpenMP team in the main
    # thread can run many times slower than on a pool thread, which would flatter the pipeline.
    with ThreadPoolExecutor(1) as single:
        loop_s = single.submit(loop).result()
    n = images
    pipe_rate, loop_rate = ok / pipeline_s, n / loop_s
    return {"images": n, "batch": batch, "steps": steps, "nfe": steps + 2 * (steps - 1),
            "setting": describe(prior.velocity.runtime), "pipeline_ok": ok,
            "pipeline_errors": "; ".join(errors), "pipeline_images_per_s": round(pipe_rate, 2),
            "restore_loop_images_per_s": round(loop_rate, 2),
            "ratio": round(pipe_rate / loop_rate, 3), "goal": ">= 0.9",
            "met": bool(pipe_rate / loop_rate >= 0.9),
            "worker_calls_at_once": ACTOR_CONCURRENCY, "max_inflight": MAX_INFLIGHT}
