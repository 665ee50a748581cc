"""Named UNet architectures: the published checkpoints' and the priors Restora ships."""

from __future__ import annotations

from typing import Any

from .unet import UNet

_PUBLISHED = {"ch": 32, "ch_mult": (1, 2, 4, 8), "num_res_blocks": 6,
              "attn_resolutions": (16, 8), "resamp_with_conv": True, "dropout": 0.0}

PRESETS: dict[str, dict[str, Any]] = {
    "celeba128": dict(input_channels=3, input_height=128, **_PUBLISHED),
    "afhq256": dict(input_channels=3, input_height=256, **_PUBLISHED),
    "coco128": dict(input_channels=3, input_height=128, **_PUBLISHED),
}

_ARCH_KEYS = ("input_channels", "input_height", "ch", "output_channels", "ch_mult",
              "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv")


def architecture_config(config: dict[str, Any]) -> dict[str, Any]:
    """Keep the UNet constructor arguments of ``config``, lists normalised to tuples."""
    unknown = set(config) - set(_ARCH_KEYS)
    if unknown:
        raise ValueError(f"unknown UNet config keys {sorted(unknown)}; expected some of {_ARCH_KEYS}")
    out = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
    for required in ("input_channels", "input_height", "ch"):
        if required not in out:
            raise ValueError(f"UNet config lacks '{required}'")
    return out


def build_model(config: dict[str, Any] | str) -> UNet:
    """Build a UNet from a preset name or a dict of constructor arguments."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown preset '{config}'; known: {sorted(PRESETS)}")
        config = PRESETS[config]
    return UNet(**architecture_config(dict(config)))
