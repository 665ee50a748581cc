"""Loading and saving flow-matching priors: a UNet velocity field plus its model card.

Checkpoints are untrusted input: ``.pt``/``.pth`` files are read with ``weights_only=True`` and
``.safetensors`` never execute code. A prior's identity is the sha256 of its weights file.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import fsspec
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .models import PRESETS, architecture_config, build_model
from .runtime import RuntimeConfig, prepare_velocity
from .storage import write_uri_atomic

CARD_KEY = "restora_card"
SHIPPED_PRIORS = ("digits32", "photo32", "photo64", "mri64")


@dataclass(frozen=True)
class Prior:
    """A velocity field ``velocity(x, t)`` with its model card and identity."""

    velocity: torch.nn.Module
    card: dict[str, Any] = field(default_factory=dict)
    model_id: str = ""
    source: str = ""

    @property
    def channels(self) -> int:
        """Image channels the prior takes (1 gray, 3 RGB)."""
        return int(self.card["architecture"]["input_channels"])

    @property
    def resolution(self) -> int:
        """Side of the square images the prior was built for."""
        return int(self.card["architecture"]["input_height"])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Prior:
        """The same prior with its network moved to ``device`` (and ``dtype``)."""
        return replace(self, velocity=self.velocity.to(device=device, dtype=dtype))

    def prepare(self, device: torch.device | str, runtime: RuntimeConfig | None = None) -> Prior:
        """The same prior on ``device``, run at ``runtime``'s precision, layout and compilation."""
        return replace(self, velocity=prepare_velocity(self.velocity, device,
                                                       runtime or RuntimeConfig()))


def shipped_prior_path(name: str) -> Path:
    """Where the shipped prior ``name`` lives inside the package."""
    return Path(str(resources.files("restora_core") / "weights" / f"{name}.safetensors"))


def _read_bytes(uri: str, storage_options: dict[str, Any] | None) -> bytes:
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as f:
            return f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"prior checkpoint '{uri}' does not exist") from e


def _safetensors_metadata(data: bytes, uri: str) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError(f"'{uri}' is not a safetensors file: only {len(data)} bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"'{uri}' is truncated: its safetensors header claims {n} bytes")
    header = json.loads(data[8 : 8 + n])
    return header.get("__metadata__") or {}


def _load_state_dict(data: bytes, uri: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and embedded card (safetensors only) of a checkpoint's bytes."""
    if uri.endswith(".safetensors"):
        try:
            meta = _safetensors_metadata(data, uri)
            sd = st_load(data)
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"could not read safetensors checkpoint '{uri}': {e}") from e
        card = json.loads(meta[CARD_KEY]) if CARD_KEY in meta else {}
        return sd, card
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"could not read checkpoint '{uri}' as a weights-only torch file "
            f"(truncated, not a checkpoint, or it holds pickled objects): {e}"
        ) from e
    for key in ("state_dict", "model", "ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint '{uri}' does not hold a state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj, {}


def _sidecar_card(uri: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    for candidate in (uri + ".json", uri.rsplit(".", 1)[0] + ".json"):
        fs, path = fsspec.core.url_to_fs(candidate, **(storage_options or {}))
        if fs.exists(path):
            with fs.open(path, "r") as f:
                return json.load(f)
    return {}


def _describe_mismatch(model: torch.nn.Module, sd: dict[str, torch.Tensor], uri: str) -> str:
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shapes = [f"{k}: file {got[k]} vs model {want[k]}" for k in sorted(set(want) & set(got))
              if want[k] != got[k]]
    parts = [f"checkpoint '{uri}' does not match the architecture"]
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:3]})")
    return "; ".join(parts) + ". Pass the right preset= or config=."


def load_prior(
    source: str,
    *,
    preset: str | None = None,
    config: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Prior:
    """Load a prior by shipped name (``"digits32"``) or from any fsspec URI (.pt/.pth/.safetensors).

    The architecture comes from ``config``, else ``preset``, else the model card (safetensors
    metadata or a sidecar ``<file>.json``). Raises ``ValueError`` naming the file and what did not
    match when the file is truncated, not a checkpoint, or the wrong architecture.
    """
    uri = str(shipped_prior_path(source)) if source in SHIPPED_PRIORS else str(source)
    if source in SHIPPED_PRIORS and not Path(uri).exists():
        raise FileNotFoundError(
            f"prior '{source}' has a training recipe but its weights are not shipped in this "
            f"release yet: train it with `restora train --recipe {source} --output FILE` (or "
            "`python -m priors.gpu_stage` on a GPU) and pass --prior FILE")
    if not uri.endswith((".pt", ".pth", ".safetensors", ".ckpt")):
        raise ValueError(
            f"prior '{source}' is neither a shipped prior {SHIPPED_PRIORS} nor a .pt/.pth/"
            ".safetensors file"
        )
    data = _read_bytes(uri, storage_options)
    model_id = hashlib.sha256(data).hexdigest()
    sd, card = _load_state_dict(data, uri)
    if not card:
        card = _sidecar_card(uri, storage_options)
    if config is not None:
        arch = architecture_config(config)
    elif preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset '{preset}'; known: {sorted(PRESETS)}")
        arch = architecture_config(PRESETS[preset])
    elif "architecture" in card:
        arch = architecture_config(card["architecture"])
    else:
        raise ValueError(
            f"checkpoint '{uri}' carries no model card: pass preset= (one of {sorted(PRESETS)}) "
            "or config="
        )
    model = build_model(arch)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(_describe_mismatch(model, sd, uri)) from e
    model.eval().requires_grad_(False)
    card = {**card, "architecture": {k: list(v) if isinstance(v, tuple) else v
                                     for k, v in arch.items()}}
    card.setdefault("value_range", [-1.0, 1.0])
    return Prior(velocity=model, card=card, model_id=model_id, source=uri)


def save_prior(model: torch.nn.Module, card: dict[str, Any], uri: str, *,
               half: bool = False, storage_options: dict[str, Any] | None = None) -> str:
    """Write ``model``'s weights as .safetensors with ``card`` in its metadata; returns the sha256."""
    if not uri.endswith(".safetensors"):
        raise ValueError(f"priors are saved as .safetensors, got '{uri}'")
    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
          for k, v in model.state_dict().items()}
    data = st_save(sd, metadata={CARD_KEY: json.dumps(card, sort_keys=True)})
    write_uri_atomic(uri, data, storage_options)
    return hashlib.sha256(data).hexdigest()
