"""The `train-prior` Prefect flow: train a flow-matching prior with restora_core's loop and report
loss, steps per second and a grid of Euler samples as Prefect artifacts.

    from flows.train_prior import train_prior
    train_prior(recipe="digits32", overrides={"device": "cuda", "bf16": True})
    train_prior(config={"data": "s3://bucket/faces/", "channels": 3, "resolution": 64, ...})

The loop itself (``restora_core.training.train``) is the same one the CLI
``python -m restora_core.training`` runs; this flow only adds orchestration: a live progress
artifact, a loss table, a markdown summary with the sample grid, and the grid PNG beside the
prior. Resuming is the loop's: rerun with the same ``checkpoint_dir``.
"""

from __future__ import annotations

import base64
import json
import shlex
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from restora_core.training import SHIPPED_RECIPES, TrainConfig, image_grid, train
from restora_core.training.sampling import grid_png


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


@task(name="train-prior-loop")
def run_training(cfg: TrainConfig) -> dict[str, Any]:
    """Run the loop; stream progress to a Prefect progress artifact and the run log. Returns a
    JSON-able summary plus the sample grid as uint8 (H, W, C)."""
    logger = get_run_logger()
    progress_id = create_progress_artifact(progress=0.0, key="train-progress",
                                           description=f"steps of {cfg.max_steps}")

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "log":
            logger.info("step %d  loss %.4f  %.2f steps/s  lr %.2e", event["step"],
                        event["loss"], event["steps_per_s"], event["lr"])
            update_progress_artifact(progress_id, 100.0 * event["step"] / cfg.max_steps)
        elif event["event"] == "checkpoint":
            logger.info("checkpoint %s", event["uri"])

    result = train(cfg, callback=on_event)
    update_progress_artifact(progress_id, 100.0)
    grid = image_grid(result.samples) if result.samples is not None else None
    return {"step": result.step, "final_loss": result.final_loss, "seconds": result.seconds,
            "steps_per_s": result.steps_per_s, "stopped_by": result.stopped_by,
            "history": result.history, "prior": result.prior_uri,
            "prior_sha256": result.prior_sha256, "checkpoint": result.checkpoint,
            "resumed_from": result.resumed_from, "card": result.card, "grid": grid}


@task(name="write-sample-grid", retries=2, retry_delay_seconds=5)
def write_grid(png: bytes, uri: str, storage_options: dict[str, Any] | None) -> str:
    """Write the sample grid PNG to any fsspec URI (atomically)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    with fs.open(path + ".partial", "wb") as f:
        f.write(png)
    fs.mv(path + ".partial", path)
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
        "",
        "```json", json.dumps(card["architecture"]), "```",
    ]
    if png is not None:
        lines += ["", "## Euler samples of the EMA model", "",
                  f"![samples](data:image/png;base64,{base64.b64encode(png).decode()})"]
    return "\n".join(lines) + "\n"


@flow(name="train-prior")
def train_prior(config: dict[str, Any] | None = None, recipe: str | None = None,
                overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a prior (fields of ``restora_core.training.TrainConfig``; ``recipe`` is a shipped
    prior's recipe, e.g. ``"digits32"``) and publish artifacts ``train-loss`` (table),
    ``train-summary`` (markdown with the sample grid) and ``train-progress``. Returns the
    summary (step, final_loss, seconds, steps_per_s, prior, prior_sha256, card, ...)."""
    cfg = resolve_config(config, recipe, overrides)
    summary = run_training(cfg)
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
