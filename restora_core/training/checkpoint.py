"""Training checkpoints on any fsspec URI, written atomically.

Layout under a checkpoint directory ``<dir>``::

    <dir>/step_000001000.pt   torch.save of {model, ema, optimizer, step, config, ...}
    <dir>/latest.json         {"step": 1000, "file": "step_000001000.pt"}, written last

Each file is written with ``restora_core.storage.write_atomic`` (a hidden temporary name and a
rename on a local disk, one PUT on an object store), so an interrupted write never leaves a
readable half-checkpoint. ``latest.json`` is the commit marker; if it is
missing or points at a file that is gone, the highest ``step_*.pt`` is used.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

import fsspec
import torch

from ..storage import write_atomic

_STEP_RE = re.compile(r"step_(\d+)\.pt$")


def _fs(uri: str, storage_options: dict[str, Any] | None):
    return fsspec.core.url_to_fs(uri, **(storage_options or {}))


def save_checkpoint(state: dict[str, Any], directory: str, step: int, *, keep: int = 2,
                    storage_options: dict[str, Any] | None = None) -> str:
    """Write ``state`` as ``<directory>/step_<step>.pt``, update ``latest.json``, and delete all
    but the newest ``keep`` checkpoints; returns the checkpoint's URI."""
    fs, root = _fs(directory, storage_options)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    name = f"step_{step:09d}.pt"
    buf = io.BytesIO()
    torch.save(state, buf)
    write_atomic(fs, f"{root}/{name}", buf.getvalue())
    write_atomic(fs, f"{root}/latest.json",
                  json.dumps({"step": int(step), "file": name}).encode())
    if keep > 0:
        for old in _list_steps(fs, root)[:-keep]:
            fs.rm(f"{root}/{old[1]}")
    return f"{directory.rstrip('/')}/{name}"


def _list_steps(fs, root: str) -> list[tuple[int, str]]:
    if not fs.exists(root):
        return []
    out = []
    for p in fs.ls(root, detail=False):
        m = _STEP_RE.search(p)
        if m:
            out.append((int(m.group(1)), p.rsplit("/", 1)[-1]))
    return sorted(out)


def latest_checkpoint(directory: str, storage_options: dict[str, Any] | None = None
                      ) -> str | None:
    """URI of the newest complete checkpoint in ``directory``, or ``None``."""
    fs, root = _fs(directory, storage_options)
    root = root.rstrip("/")
    pointer = f"{root}/latest.json"
    if fs.exists(pointer):
        with fs.open(pointer, "rb") as f:
            name = json.loads(f.read())["file"]
        if fs.exists(f"{root}/{name}"):
            return f"{directory.rstrip('/')}/{name}"
    steps = _list_steps(fs, root)
    return f"{directory.rstrip('/')}/{steps[-1][1]}" if steps else None


def load_checkpoint(uri: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only``, onto the CPU)."""
    with fsspec.open(uri, "rb", **(storage_options or {})) as f:
        data = f.read()
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
