"""Running a velocity network fast on a device: precision, memory layout, compilation, graphs.

CPU and float32 are the defaults; faster paths are opt-in. ``RuntimeConfig()`` (every field
"auto") resolves to ``DEVICE_DEFAULTS[device.type]``: the one place to change what "auto" means.
The CUDA entry is the fastest setting measured (benchmarks/results/gpu_128.md) whose restored
pixels stay within 40 dB PSNR of fp32 on a trained prior and on random weights.

Precisions: ``fp32``; ``tf32`` (fp32 storage, TF32 matrix units); ``bf16`` (fp32 weights under
bfloat16 autocast); ``bf16w`` (a bfloat16 copy of the weights, GroupNorm and the time embedding
computed in float32). ``prepare_velocity`` never changes the network it is given.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from .choices import COMPILE_MODES, PRECISIONS, CompileMode, Precision


@dataclass(frozen=True)
class RuntimeConfig:
    """How to run the network; "auto"/None fields take the device's entry in ``DEVICE_DEFAULTS``.

    ``compile``: inductor mode ("default", "max-autotune") or "off" (True/False are accepted).
    ``cuda_graph``: samplers replay one captured CUDA graph per transition kind (fixed batch).
    ``cudnn_benchmark``: let cuDNN time its convolution algorithms per shape (CUDA only).
    """

    precision: Precision = "auto"
    channels_last: bool | None = None
    compile: CompileMode | bool = "auto"
    cuda_graph: bool | None = None
    cudnn_benchmark: bool | None = None


# What "auto" means per device type. Change the defaults here and nowhere else.
DEVICE_DEFAULTS: dict[str, RuntimeConfig] = {
    "cuda": RuntimeConfig(precision="bf16", channels_last=False, compile="off", cuda_graph=False,
                          cudnn_benchmark=False),
    "cpu": RuntimeConfig(precision="fp32", channels_last=False, compile="off", cuda_graph=False,
                         cudnn_benchmark=False),
}


def resolve_runtime(config: RuntimeConfig, device: torch.device | str) -> RuntimeConfig:
    """``config`` with every "auto"/None field replaced by ``device``'s default; validated."""
    device = torch.device(device)
    base = DEVICE_DEFAULTS.get(device.type, DEVICE_DEFAULTS["cpu"])
    compile_mode = {True: "default", False: "off"}.get(config.compile, config.compile)  # type: ignore[arg-type]
    out = RuntimeConfig(
        precision=base.precision if config.precision == "auto" else config.precision,
        channels_last=base.channels_last if config.channels_last is None else config.channels_last,
        compile=base.compile if compile_mode == "auto" else compile_mode,
        cuda_graph=base.cuda_graph if config.cuda_graph is None else config.cuda_graph,
        cudnn_benchmark=(base.cudnn_benchmark if config.cudnn_benchmark is None
                         else config.cudnn_benchmark))
    if out.precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{out.precision}'; expected auto or one of {PRECISIONS}")
    if out.compile not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode '{out.compile}'; expected auto or one of {COMPILE_MODES}")
    if device.type != "cuda":  # capture and cuDNN need CUDA; elsewhere run eagerly
        out = replace(out, cuda_graph=False, cudnn_benchmark=False)
    return out


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """The concrete precision ``precision`` means on ``device``."""
    return resolve_runtime(RuntimeConfig(precision=precision), device).precision


def describe(config: RuntimeConfig) -> str:
    """A short label naming every setting of a resolved config, e.g. ``bf16w+cl+compile:default``."""
    parts = [str(config.precision)]
    parts.append("channels_last" if config.channels_last else "nchw")
    if config.compile != "off":
        parts.append(f"compile:{config.compile}")
    if config.cudnn_benchmark:
        parts.append("cudnn_benchmark")
    if config.cuda_graph:
        parts.append("cuda_graph")
    return "+".join(parts)


class _Float32Norm(nn.Module):
    """Runs a GroupNorm in float32 on a lower-precision input; returns the input's dtype."""

    def __init__(self, norm: nn.GroupNorm):
        super().__init__()
        self.norm = norm.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """GroupNorm of ``x`` computed in float32."""
        n = self.norm
        return F.group_norm(x.float(), n.num_groups, n.weight, n.bias, n.eps).to(x.dtype)


class _Float32Embedding(nn.Module):
    """Runs the time embedding (it starts from float32 sinusoids) in float32, returns ``dtype``."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module, self.dtype = module.float(), dtype

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embedding of ``t: (B,)`` cast to the network's dtype."""
        return self.module(t).to(self.dtype)


def bf16_weights(net: nn.Module) -> nn.Module:
    """A bfloat16 copy of ``net`` whose GroupNorms and time embedding stay in float32."""
    net = copy.deepcopy(net).to(torch.bfloat16)

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, _Float32Norm(child))
            elif type(child).__name__ == "TimestepEmbedding":
                setattr(parent, name, _Float32Embedding(child, torch.bfloat16))
            else:
                swap(child)

    swap(net)
    return net


class FastVelocity(nn.Module):
    """Wraps a velocity network: inputs in float32, network in the chosen precision and layout,
    outputs back in float32, so samplers keep their state in float32."""

    def __init__(self, net: nn.Module, precision: str, channels_last: bool,
                 cudnn_benchmark: bool = False):
        super().__init__()
        self.net, self.precision, self.channels_last = net, precision, channels_last
        self.cudnn_benchmark = cudnn_benchmark

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v(x, t) with ``x: (B, C, H, W)`` float32 and ``t: (B,)``; returns float32."""
        if x.is_cuda:
            # TF32 and cuDNN autotuning are process-wide switches: set them per call so that
            # each velocity runs as it was prepared.
            tf32 = self.precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        xin = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        if self.precision == "bf16":
            # No cast cache: each weight is used once per call, and cached casts must not
            # outlive a CUDA graph capture.
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16,
                                cache_enabled=False):
                out = self.net(xin, t)
        elif self.precision == "bf16w":
            out = self.net(xin.to(torch.bfloat16), t)
        else:
            out = self.net(xin, t)
        return out.float().contiguous()


def prepare_velocity(net: nn.Module, device: torch.device | str,
                     config: RuntimeConfig = RuntimeConfig()) -> nn.Module:
    """A ``v(x, t)`` module running ``net`` on ``device`` per ``config``; ``net`` is left as it was.

    The returned module holds a copy of the weights whenever the device, dtype or layout must
    change, so preparing one network several ways measures each way on the original weights.
    The resolved settings are the returned module's ``runtime`` attribute.
    """
    device = torch.device(device)
    cfg = resolve_runtime(config, device)
    if cfg.precision == "bf16w":
        work = bf16_weights(net).to(device)
    else:
        on_device = all(p.device == device for p in net.parameters())
        shared = on_device and not cfg.channels_last and not net.training
        work = net if shared else copy.deepcopy(net).to(device)
    work = work.eval()
    if cfg.channels_last:
        work = work.to(memory_format=torch.channels_last)
    if cfg.compile != "off":
        # Static shapes: one compilation per batch size, each fully specialised. The network
        # alone is compiled; the casts and process-wide switches around it stay eager.
        work = torch.compile(work, mode=cfg.compile, dynamic=False)
    wrapped = FastVelocity(work, cfg.precision, bool(cfg.channels_last), bool(cfg.cudnn_benchmark))
    wrapped.runtime = cfg
    return wrapped


def runtime_of(velocity: object) -> RuntimeConfig | None:
    """The resolved ``RuntimeConfig`` a velocity was prepared with, if any."""
    return getattr(velocity, "runtime", None)
