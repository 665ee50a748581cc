"""``python -m restora_core.training``: the training loop without Prefect.

Needs only torch, numpy, scipy, safetensors and fsspec when the data is a .npz/.npy file.

    python -m restora_core.training --recipe digits32 --device cuda --bf16
    python -m restora_core.training --config run.json --max-steps 5000
    python -m restora_core.training --data imgs/ --channels 3 --resolution 32 \\
        --model '{"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": []}' \\
        --output prior.safetensors

Precedence: recipe < --config JSON < flags. Every TrainConfig field has a flag
(``--max-seconds``, ``--checkpoint-dir``, ``--ot-coupling/--no-ot-coupling``, ...); lists and
dicts are JSON. One JSON line per log interval goes to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import types
import typing
from typing import Any

from .config import SHIPPED_RECIPES, TrainConfig


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m restora_core.training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", choices=sorted(SHIPPED_RECIPES), help="a shipped prior's recipe")
    ap.add_argument("--config", help="JSON file of TrainConfig fields")
    ap.add_argument("--print-config", action="store_true", help="print the config and exit")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        base, optional = hint, False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
            base = next(a for a in typing.get_args(hint) if a is not type(None))
            optional = True
        if base is bool:
            ap.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                            default=argparse.SUPPRESS)
        elif base in (int, float, str):
            ap.add_argument(flag, dest=f.name, type=_optional(base) if optional else base,
                            default=argparse.SUPPRESS,
                            help="'none' for no limit / unset" if optional else None)
        else:  # lists, dicts
            ap.add_argument(flag, dest=f.name, type=json.loads, default=argparse.SUPPRESS,
                            help="JSON")
    return ap


def _optional(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def config_from_args(argv: list[str]) -> TrainConfig:
    """Build the TrainConfig of a command line (recipe < config file < flags)."""
    ns = vars(_parser().parse_args(argv))
    fields: dict[str, Any] = {}
    recipe = ns.pop("recipe", None)
    if recipe:
        fields.update(SHIPPED_RECIPES[recipe])
    config_path = ns.pop("config", None)
    if config_path:
        with open(config_path) as f:
            fields.update(json.load(f))
    ns.pop("print_config", None)
    fields.update(ns)
    fields.setdefault("command", shlex.join(["python", "-m", "restora_core.training", *argv]))
    return TrainConfig.from_dict(fields)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = config_from_args(argv)
    if _parser().parse_args(argv).print_config:
        print(json.dumps(cfg.to_dict(), indent=1))
        return 0
    import torch

    if cfg.device.startswith("cuda") and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    from .loop import train

    def log(event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    result = train(cfg, callback=log)
    if result.samples is not None and cfg.output:
        _write_grid(result.samples, cfg.output.rsplit(".", 1)[0] + "_samples.png", cfg)
    print(json.dumps({"event": "summary", "step": result.step, "final_loss": result.final_loss,
                      "seconds": round(result.seconds, 1), "steps_per_s": result.steps_per_s,
                      "stopped_by": result.stopped_by, "prior": result.prior_uri,
                      "prior_sha256": result.prior_sha256, "checkpoint": result.checkpoint,
                      "resumed_from": result.resumed_from}), flush=True)
    return 0


def _write_grid(samples, path: str, cfg: TrainConfig) -> None:
    """Save the sample grid as PNG when PIL is available, else as .npy (bare GPU boxes)."""
    import fsspec

    from .sampling import image_grid

    grid = image_grid(samples)
    try:
        from .sampling import grid_png

        data, target = grid_png(grid), path
    except ImportError:
        import io

        import numpy as np

        buf = io.BytesIO()
        np.save(buf, grid)
        data, target = buf.getvalue(), path[:-4] + ".npy"
    with fsspec.open(target, "wb", **(cfg.storage_options or {})) as f:
        f.write(data)
    print(json.dumps({"event": "samples", "uri": target}), flush=True)
