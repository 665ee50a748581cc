"""Velocity-field networks: the UNet and its named presets."""

from .presets import PRESETS, architecture_config, build_model
from .unet import UNet

__all__ = ["PRESETS", "UNet", "architecture_config", "build_model"]
