"""Helpers shared by the dataset builders: package versions, hashes, writing an eval set."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from restora_core.datasets.arrays import npz_bytes

EVAL_COUNT = 64


def version(dist: str) -> str:
    """Installed version of distribution ``dist`` ("unknown" when absent)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def sha256_bytes(data: bytes) -> str:
    """sha256 hex of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 hex of a local file."""
    return sha256_bytes(Path(path).read_bytes())


def to_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W)`` or ``(H, W, C>=3)`` -> ``(H, W, 3)`` (gray replicated, alpha dropped)."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def write_eval_set(arrays: dict[str, np.ndarray], provenance: dict[str, Any],
                   npz_path: str | os.PathLike) -> str:
    """Write the evaluation ``.npz`` and its provenance ``.json`` beside it; returns the npz's
    sha256 (also stored in the JSON as ``eval.file_sha256``)."""
    npz_path = Path(npz_path)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    data = npz_bytes(arrays)
    npz_path.write_bytes(data)
    digest = sha256_bytes(data)
    provenance = {**provenance, "eval": {**provenance["eval"], "file": npz_path.name,
                                         "file_sha256": digest}}
    npz_path.with_suffix(".json").write_text(json.dumps(provenance, indent=1, sort_keys=True)
                                             + "\n")
    return digest
