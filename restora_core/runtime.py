"""Running a velocity network fast on a device: precision, memory layout, compilation.

CPU and float32 are the defaults; faster paths are opt-in, and ``precision="auto"`` picks the
fastest path measured to keep the picture (bfloat16 autocast, NCHW layout) on CUDA only: on an
H100 it ran the celeba128 UNet 2.3x faster than fp32 at batch 128 and changed the restored
pictures by under 1e-3 (72.8 dB PSNR on random weights; benchmarks/results/gpu_128.md), while
channels-last was slower there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "tf32", "bf16"]


@dataclass(frozen=True)
class RuntimeConfig:
    """How to run the network: ``precision``, channels-last layout, ``torch.compile``."""

    precision: Precision = "auto"
    channels_last: bool | None = None
    compile: bool = False


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """The concrete precision ``auto`` means on ``device``: bf16 on CUDA, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"unknown precision '{precision}'; expected auto, fp32, tf32 or bf16")
    return precision


class FastVelocity(torch.nn.Module):
    """Wraps a velocity network: inputs in float32, network in the chosen precision and layout,
    outputs back in float32, so samplers keep their state in float32."""

    def __init__(self, net: torch.nn.Module, precision: str, channels_last: bool):
        super().__init__()
        self.net, self.precision, self.channels_last = net, precision, channels_last

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v(x, t) with ``x: (B, C, H, W)`` float32 and ``t: (B,)``; returns float32."""
        xin = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        if self.precision == "bf16":
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                out = self.net(xin, t)
        else:
            out = self.net(xin, t)
        return out.float().contiguous()


def prepare_velocity(net: torch.nn.Module, device: torch.device | str,
                     config: RuntimeConfig = RuntimeConfig()) -> torch.nn.Module:
    """Move ``net`` to ``device`` and wrap it per ``config``; returns a ``v(x, t)`` module."""
    device = torch.device(device)
    precision = resolve_precision(config.precision, device)
    channels_last = bool(config.channels_last)
    net = net.to(device).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        # TF32 is a process-wide switch; set it only where asked, at the edge.
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    wrapped = FastVelocity(net, precision, channels_last)
    if config.compile:
        wrapped = torch.compile(wrapped, dynamic=False)
    return wrapped
