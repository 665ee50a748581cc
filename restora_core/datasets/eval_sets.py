"""Reader of the committed held-out evaluation sets (``restora_core/data/<name>_eval.npz``).

Each set is an ``.npz`` of uint8 arrays: ``images`` ``(N, H, W, C)`` (and ``labels`` for the
digits), with a provenance ``.json`` beside it that says how it was drawn and what was kept out
of training. The builders live outside the engine, in ``priors/recipes``.
"""

from __future__ import annotations

import io
from importlib import resources

import numpy as np


def eval_set_names() -> list[str]:
    """Names of the committed evaluation sets (``digits32``, ``photo32``, ...)."""
    root = resources.files("restora_core") / "data"
    return sorted(p.name[: -len("_eval.npz")] for p in root.iterdir()
                  if p.name.endswith("_eval.npz"))


def load_eval_set(name: str) -> dict[str, np.ndarray]:
    """A committed evaluation set as a dict of uint8 arrays: ``images`` ``(N, H, W, C)`` (and
    ``labels`` for the digits)."""
    path = resources.files("restora_core") / "data" / f"{name}_eval.npz"
    if not path.is_file():
        raise ValueError(f"no evaluation set '{name}'; known: {eval_set_names()}")
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
