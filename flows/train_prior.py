"""The `train-prior` Prefect flow: train a flow-matching prior with restora_core's loop and report
loss, steps per second and a grid of Euler samples as Prefect artifacts.

    from flows.train_prior import train_prior
    train_prior(recipe="digits32", overrides={"device": "cuda", "bf16": True})
    train_prior(config={"data": "s3://bucket/faces/", "channels": 3, "resolution": 64, ...})

Command line: ``restora train --recipe digits32 --max-steps 20 --output out/p.safetensors``
(``main(argv)`` below; ``restora train --help`` lists the flags).

The loop itself is ``restora_core.training.train``; this flow adds orchestration: image folders,
Parquet and WebDataset sources read through ``tasks.readers`` (``tasks.training_data``), a live
progress artifact, a loss table, a markdown summary with the sample grid, and the grid PNG
beside the prior. Resuming is the loop's: rerun with the same ``checkpoint_dir``. This is the
one training command; a shipped recipe's missing training set is built first.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from restora_core.storage import write_uri_atomic
from restora_core.training import SHIPPED_RECIPES, TrainConfig, image_grid, train
from restora_core.training.loop import ResumeRefused
from restora_core.training.sampling import grid_png
from tasks.credentials import refuse_credentials


def resolve_config(config: dict[str, Any] | None, recipe: str | None,
                   overrides: dict[str, Any] | None) -> TrainConfig:
    """recipe < config < overrides, with the flow call recorded as the card's command."""
    fields: dict[str, Any] = {}
    if recipe:
        if recipe not in SHIPPED_RECIPES:
            raise ValueError(f"unknown recipe '{recipe}'; known: {sorted(SHIPPED_RECIPES)}")
        fields.update(SHIPPED_RECIPES[recipe])
    fields.update(config or {})
    fields.update(overrides or {})
    if not fields.get("command"):
        args = {"config": config, "recipe": recipe, "overrides": overrides}
        fields["command"] = ("prefect flow train-prior (flows/train_prior.py) " + " ".join(
            f"{k}={shlex.quote(json.dumps(v, sort_keys=True))}" for k, v in args.items()
            if v is not None))
    return TrainConfig.from_dict(fields)


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with local paths made absolute: Ray workers do not share the caller's folder."""
    def fix(uri: str | None) -> str | None:
        if not uri or "://" in uri:
            return uri
        return os.path.abspath(os.path.expanduser(uri))

    return dataclasses.replace(cfg, data=fix(cfg.data), output=fix(cfg.output),
                               checkpoint_dir=fix(cfg.checkpoint_dir))


def is_array_set(cfg: TrainConfig) -> bool:
    """Whether ``cfg.data`` is a prepared .npz/.npy set (the shipped recipes) rather than images."""
    return cfg.data.endswith((".npz", ".npy"))


def _keyed(cfg: TrainConfig) -> bool:
    # Image sources train on keyed samples unless the on-device batch path is asked for.
    return not is_array_set(cfg) and cfg.data_mode != "multiscale" and not cfg.device_data


@task(name="train-prior-loop")
def run_training(cfg: TrainConfig, scale: dict[str, Any] | None = None,
                 address: str | None = None, restart: bool = False) -> dict[str, Any]:
    """Run the loop here, or on ``scale["workers"]`` Ray Train workers; stream progress to a
    Prefect progress artifact and the run log. Returns a JSON-able summary plus the sample grid
    as uint8 (H, W, C)."""
    logger = get_run_logger()
    progress_id = create_progress_artifact(progress=0.0, key="train-progress",
                                           description=f"steps of {cfg.max_steps}")
    cfg = absolute_paths(cfg)

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "log":
            logger.info("step %d  loss %.4f  %.2f steps/s  lr %.2e  input %.0f%%",
                        event["step"], event["loss"], event["steps_per_s"], event["lr"],
                        100 * event.get("input_fraction", 0.0))
            update_progress_artifact(progress_id, 100.0 * event["step"] / cfg.max_steps)
        elif event["event"] == "checkpoint":
            logger.info("checkpoint %s", event["uri"])

    if scale is not None and not _keyed(cfg):
        raise ValueError("--workers trains on image sources (a folder, Parquet or WebDataset, "
                         f"data_mode crop or resize); '{cfg.data}' is a prepared array set")
    if restart and cfg.checkpoint_dir:
        from tasks.ray_training import clear_run_folder

        if clear_run_folder(cfg):
            logger.warning("--restart: deleted the run folder %s", cfg.checkpoint_dir)
    if not _keyed(cfg):
        dataset = data_info = None
        if not is_array_set(cfg):
            from tasks.training_data import build_training_set

            dataset, data_info = build_training_set(cfg)
            logger.info("training set: %d images from %s (%s, %d skipped)",
                        data_info["count"], cfg.data, data_info["format"], data_info["skipped"])
        result = train(cfg, dataset=dataset, data_info=data_info, callback=on_event)
        update_progress_artifact(progress_id, 100.0)
        return _summary(result)

    from tasks.ray_training import claim_run_folder
    from tasks.training_data import plan_training_data, write_holdout

    data = plan_training_data(cfg, cfg.checkpoint_dir.rstrip("/") + "/data-plan")
    claimed = claim_run_folder(cfg, data)
    logger.info("training data: %d images listed in %d shards of %s (%s, %.1f MB, %s); run "
                "folder %s (%s)", data.info["images_listed"], len(data.shards), cfg.data,
                data.input_format, data.info["bytes"] / 1e6,
                "streamed" if data.stream else "in memory", cfg.checkpoint_dir, claimed)
    if scale is None:
        from tasks.training_data import open_training_source

        source, info = open_training_source(cfg, data)
        for reason in info.get("skipped_examples", []):
            logger.warning("skipped %s", reason)
        result = train(cfg, source=source, data_info=info, callback=on_event)
        summary = _summary(result)
    else:
        from flows.ray_runtime import ray_connection
        from tasks.ray_training import ScaleConfig, train_on_ray

        with ray_connection(address):
            summary = train_on_ray(cfg, data, ScaleConfig(**scale), callback=on_event)
    if cfg.output and "holdout" in data.info:
        summary["holdout_keys"] = write_holdout(data, cfg)
    update_progress_artifact(progress_id, 100.0)
    return summary


def _summary(result) -> dict[str, Any]:
    grid = image_grid(result.samples) if result.samples is not None else None
    return {"step": result.step, "final_loss": result.final_loss, "seconds": result.seconds,
            "steps_per_s": result.steps_per_s, "stopped_by": result.stopped_by,
            "history": result.history, "prior": result.prior_uri,
            "prior_sha256": result.prior_sha256, "checkpoint": result.checkpoint,
            "resumed_from": result.resumed_from, "card": result.card, "grid": grid}


@task(name="write-sample-grid", retries=2, retry_delay_seconds=5)
def write_grid(png: bytes, uri: str, storage_options: dict[str, Any] | None) -> str:
    """Write the sample grid PNG to any fsspec URI (atomically)."""
    write_uri_atomic(uri, png, storage_options)
    return uri


def summary_markdown(summary: dict[str, Any], png: bytes | None) -> str:
    card = summary["card"]
    lines = [
        f"# Prior `{card['name']}`",
        "",
        "| | |", "|---|---|",
        f"| steps | {summary['step']} (stopped by {summary['stopped_by']}) |",
        f"| final loss | {summary['final_loss']:.4f} |",
        f"| steps/s | {summary['steps_per_s']:.2f} |",
        f"| seconds | {summary['seconds']:.1f} |",
        f"| parameters | {card['parameters']:,} |",
        f"| data | `{card['data'].get('source')}` (sha256 `{card['data'].get('sha256')}`) |",
        f"| prior | `{summary['prior']}` |",
        f"| resumed from | `{summary['resumed_from']}` |",
        (f"| workers | {card['training'].get('workers', 1)} (global batch "
        f"{card['training']['batch_size']}) |"),
        "",
        "```json", json.dumps(card["architecture"]), "```",
    ]
    if png is not None:
        lines += ["", "## Euler samples of the EMA model", "",
                  f"![samples](data:image/png;base64,{base64.b64encode(png).decode()})"]
    return "\n".join(lines) + "\n"


@flow(name="train-prior")
def train_prior(config: dict[str, Any] | None = None, recipe: str | None = None,
                overrides: dict[str, Any] | None = None, scale: dict[str, Any] | None = None,
                address: str | None = None, restart: bool = False) -> dict[str, Any]:
    """Train a prior (fields of ``restora_core.training.TrainConfig``; ``recipe`` is a shipped
    prior's recipe, e.g. ``"digits32"``; ``scale``: ``tasks.ray_training.ScaleConfig`` fields to
    run on Ray Train workers, on the Ray at ``address``) and publish artifacts ``train-loss``
    (table), ``train-summary`` (markdown with the sample grid) and ``train-progress``. Returns
    the summary (step, final_loss, seconds, steps_per_s, prior, prior_sha256, card, ...)."""
    cfg = resolve_config(config, recipe, overrides)
    summary = run_training(cfg, scale, address, restart)
    create_table_artifact(
        table=[{k: (round(v, 6) if isinstance(v, float) else v) for k, v in rec.items()}
               for rec in summary["history"]],
        key="train-loss", description="loss, lr, grad norm and steps/s per log interval")
    grid = summary.pop("grid")
    png = grid_png(grid) if grid is not None else None
    if png is not None and cfg.output:
        summary["samples"] = write_grid(png, cfg.output.rsplit(".", 1)[0] + "_samples.png",
                                        cfg.storage_options or None)
    create_markdown_artifact(markdown=summary_markdown(summary, png), key="train-summary",
                             description="training summary and samples")
    return summary


# How a shipped recipe's training set is made when it is missing (it is git-ignored).
_BUILD_HINT = "python scripts/build_datasets.py --only {recipe}"
# The flags with a field of their own; any other TrainConfig field goes through --set.
_FIELD_FLAGS = {
    "data": ("URI", ("training set: a .npz/.npy file, or any input `restora restore` takes "
                    "(a folder of images, Parquet or WebDataset shards; any fsspec URI)")),
    "resolution": ("R", "the prior's side in pixels (images are cropped, or resized, to R x R)"),
    "channels": ("C", "1 (gray) or 3 (RGB); images are converted"),
    "output": ("URI", ("required: where the EMA weights go as a .safetensors prior with its "
                      "model card; the sample grid goes beside it (_samples.png)")),
    "checkpoint_dir": ("URI", ("checkpoints folder; a rerun resumes from its latest checkpoint "
                              "(default: <output without .safetensors>.ckpt)")),
    "max_steps": ("N", "stop after N optimiser steps"),
    "max_seconds": ("S", "stop after S seconds of training ('none': no limit)"),
    "batch_size": ("N", "images per optimiser step (the global batch, split over workers)"),
    "data_mode": ("MODE", ("image sources: crop (random R x R crops, the default), resize "
                          "(centre square) or multiscale (block-mean crops at --set scales)")),
    "holdout": ("F", ("hold out this fraction of the images (by a hash of each key); the card "
                     "records the split and <prior>_holdout.txt lists it")),
    "device": ("DEVICE", "torch device: cpu, cuda, cuda:1"),
    "seed": ("N", "seed of the initial weights, the data order and the noise"),
    "name": ("NAME", "the prior's name in its model card"),
}


# Flags about how the run is executed, not what it trains (not TrainConfig fields).
_RUN_FLAGS = ("workers", "cpus_per_worker", "gpus_per_worker", "max_failures", "address",
              "restart")


def scale_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ScaleConfig fields of --workers and friends, or None for the plain one-process loop."""
    if args.workers is None:
        return None
    return {"workers": args.workers, "cpus_per_worker": args.cpus_per_worker,
            "gpus_per_worker": args.gpus_per_worker, "max_failures": args.max_failures}


def _optional_number(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def train_parser() -> argparse.ArgumentParser:
    """The parser of `restora train` (every TrainConfig field is reachable, most via --set)."""
    fields = {f: getattr(TrainConfig, f, None) for f in _FIELD_FLAGS}
    p = argparse.ArgumentParser(
        prog="restora train",
        description="Train a flow-matching prior with the train-prior Prefect flow (one flow\n"
                    "run with progress, loss table and sample artifacts), checkpointing as it\n"
                    "goes; the prior and its model card are written at the end.",
        epilog="examples:\n"
               "  restora train --recipe digits32 --max-steps 20 --output out/p.safetensors\n"
               "  restora train --data imgs/ --resolution 32 --channels 3 --hflip "
               "--max-steps 2000 --output prior.safetensors\n"
               "  restora train --data s3://b/imgs --resolution 64 --channels 3 --workers 8 "
               "--gpus-per-worker 1 --output s3://b/p.safetensors\n"
               "precedence: --recipe < --config < --set < the other flags",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(SHIPPED_RECIPES),
                   help="start from a shipped prior's recipe (its data, model and optimiser)")
    p.add_argument("--config", metavar="FILE", help="JSON file of TrainConfig fields")
    for name, (metavar, text) in _FIELD_FLAGS.items():
        default = fields[name]
        kind = type(default) if isinstance(default, (int, float)) else str
        p.add_argument("--" + name.replace("_", "-"), dest=name, metavar=metavar,
                       type=_optional_number(float) if name == "max_seconds" else kind,
                       default=argparse.SUPPRESS, help=text)
    p.add_argument("--bf16", action="store_true", default=argparse.SUPPRESS,
                   help="bf16 autocast on CUDA (weights and loss stay fp32)")
    p.add_argument("--hflip", action="store_true", default=argparse.SUPPRESS,
                   help="mirror training samples with probability 1/2")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="read shards while training instead of decoding all first (default: "
                        "stream when the shards exceed stream_above_mb, 1024 MB)")
    scale = p.add_argument_group(
        "Ray Train workers", "--workers N runs the loop on N data-parallel workers (DDP; gloo\n"
        "on CPUs, NCCL on GPUs) on the local Ray or the one at --address; without it one\n"
        "plain process trains, with no Ray. The global batch (--batch-size) is split evenly.")
    scale.add_argument("--workers", type=int, metavar="N", help="data-parallel workers")
    scale.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                       help="CPUs each worker reserves (default 1)")
    scale.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                       help="GPUs each worker reserves (default 0: CPU workers)")
    scale.add_argument("--max-failures", type=int, default=2, metavar="N",
                       help="restarts of the worker group from its last checkpoint (default 2)")
    scale.add_argument("--address", metavar="ADDR",
                       help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--restart", action="store_true",
                   help="start over: clear the checkpoint folder instead of resuming from it")
    p.add_argument("--set", action="append", metavar="FIELD=JSON", default=[],
                   help="any other TrainConfig field, e.g. --set lr=4e-4 --set "
                        "'model={\"ch\": 32, \"ch_mult\": [1, 2]}' (repeat)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as JSON and exit without training")
    p.add_argument("--prefect-api-url", metavar="URL",
                   help="Prefect API (default: PREFECT_API_URL, else an ephemeral server)")
    return p


def _set_pairs(items: list[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in known:
            parser.error(f"--set expects FIELD=JSON with FIELD one of {sorted(known)}; got '{item}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def config_from_argv(argv: list[str]) -> tuple[TrainConfig, str | None, argparse.Namespace]:
    """(TrainConfig, recipe, parsed flags) of a `restora train` command line."""
    parser = train_parser()
    args = parser.parse_args(argv)
    flags = {k: v for k, v in vars(args).items()
             if k not in ("recipe", "config", "set", "print_config", "prefect_api_url",
                          *_RUN_FLAGS)}
    config: dict[str, Any] = {}
    if args.config:
        try:
            config = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            parser.error(f"--config: cannot read '{args.config}': {exc}")
    config.update(_set_pairs(args.set, parser))
    config.update(flags)
    if not config.get("output"):
        # A recipe's own output is the shipped prior inside the package: never overwrite it
        # by default.
        parser.error("--output is required: where the trained prior goes, e.g. "
                     "--output out/prior.safetensors")
    if "checkpoint_dir" not in config:
        # Beside the output, never the recipe's own folder: a run must not resume someone
        # else's checkpoints (or the shipped prior's) by accident.
        config["checkpoint_dir"] = config["output"].rsplit(".safetensors", 1)[0] + ".ckpt"
    config.setdefault("command", shlex.join(["restora", "train", *argv]))
    try:
        cfg = resolve_config(config, args.recipe, None)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    return cfg, args.recipe, args


def missing_data_message(cfg: TrainConfig, recipe: str | None) -> str | None:
    """Why the training set cannot be opened (with how to build it), or None when it can."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(cfg.data, **(cfg.storage_options or {}))
        if fs.exists(path):
            return None
    except Exception as exc:  # noqa: BLE001 - any failure to look is reported the same way
        return f"--data: cannot open '{cfg.data}': {type(exc).__name__}: {exc}"
    if is_recipe_set(cfg, recipe):
        return (f"--recipe {recipe} trains on '{cfg.data}', which is not built yet: run "
                f"`{_BUILD_HINT.format(recipe=recipe)}` first (or pass --data FILE)")
    return f"--data: '{cfg.data}' does not exist"


def is_recipe_set(cfg: TrainConfig, recipe: str | None) -> bool:
    """Whether ``cfg`` trains on a shipped recipe's own training set (which can be built)."""
    return bool(recipe) and cfg.data == SHIPPED_RECIPES[recipe].get("data")


def build_recipe_set(cfg: TrainConfig, recipe: str) -> str | None:
    """Build a shipped recipe's missing training set from installed packages (seconds) with
    ``scripts/build_datasets.py --train-only``; returns why it could not, or None."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_datasets.py"
    if not script.exists():
        return (f"--recipe {recipe} trains on '{cfg.data}', which is not built, and "
                f"{script} is not here to build it: run from a clone of the repository")
    target = Path(cfg.data)
    cmd = [sys.executable, str(script), "--only", recipe, "--train-only",
           "--train-dir", str(target.parent)]
    print(f"restora: --recipe {recipe}: its training set '{cfg.data}' is not built yet; "
          f"building it now ({shlex.join(['python', *cmd[1:]])})", file=sys.stderr, flush=True)
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not target.exists():
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        return (f"--recipe {recipe}: building '{cfg.data}' failed (exit {done.returncode}); "
                f"run `{_BUILD_HINT.format(recipe=recipe)}` to see why:\n{tail}")
    print(f"restora: built '{cfg.data}' in {time.monotonic() - start:.1f} s", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    """`restora train`: run the train-prior flow once, here; 0 on success, 1 failed, 2 bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, recipe, args = config_from_argv(argv)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=1))
        return 0
    problem = missing_data_message(cfg, recipe) if cfg.data else "--data: no training set given " \
        "(pass --data or --recipe)"
    try:
        # The config is the flow's parameter and the command goes into the model card.
        refuse_credentials(cfg.storage_options)
    except ValueError as exc:
        problem = f"storage_options {exc}"
    else:
        if problem and is_recipe_set(cfg, recipe):
            problem = build_recipe_set(cfg, recipe)
    if problem:
        print(f"restora: error: {problem}", file=sys.stderr)
        return 2
    try:
        scale = scale_from_args(args)
        if scale is not None:
            from tasks.ray_training import ScaleConfig

            ScaleConfig(**scale)
            if cfg.batch_size % scale["workers"]:
                raise ValueError(f"--batch-size {cfg.batch_size} does not split evenly over "
                                 f"--workers {scale['workers']}")
            if not _keyed(cfg):
                raise ValueError("--workers trains on image sources (a folder, Parquet or "
                                 "WebDataset; --data-mode crop or resize), not on "
                                 f"'{cfg.data}'")
            if scale["gpus_per_worker"] > 0 and cfg.device == "cpu":
                cfg = dataclasses.replace(cfg, device="cuda")
    except ValueError as exc:
        print(f"restora: error: {exc}", file=sys.stderr)
        return 2
    state = train_prior(config=cfg.to_dict(), scale=scale, address=args.address,
                        restart=args.restart, return_state=True)
    run_id = state.state_details.flow_run_id
    if not state.is_completed():
        code = 1
        try:
            state.result()
        except ResumeRefused as exc:  # the user's choice to make, not a failure of the run
            print(f"restora: error: {exc}", file=sys.stderr)
            code = 2
        except Exception as exc:  # noqa: BLE001 - one line, not a second traceback
            print(f"restora: the training run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"flow run: {run_id}", file=sys.stderr)
        return code
    summary = state.result()
    print(f"trained {summary['step']} steps ({summary['stopped_by']}) in {summary['seconds']:.1f} s; "
          f"final loss {summary['final_loss']:.4f}")
    print(f"flow run:   {run_id} (train-prior)")
    print(f"prior:      {summary['prior']} (sha256 {summary['prior_sha256']})")
    print(f"checkpoint: {summary['checkpoint']}")
    if summary.get("resumed_from"):
        print(f"resumed from: {summary['resumed_from']}")
    if summary.get("samples"):
        print(f"samples:    {summary['samples']}")
    if summary.get("holdout_keys"):
        print(f"held out:   {summary['holdout_keys']}")
    return 0
