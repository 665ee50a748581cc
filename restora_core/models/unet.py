"""DDPM-style UNet velocity field, parameter-compatible with the published PnP-Flow / Restora-Flow
checkpoints (the sdeflow-light UNet).

Called as ``model(x, t)`` with ``x: (B, C, H, W)`` and ``t: (B,)`` in [0, 1] (t=0 noise, t=1 data);
``t`` enters the sinusoidal embedding unscaled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1)


def _conv1x1(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=1, padding=0)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of ``t: (B,)`` into ``(B, dim)`` (sin half, then cos half)."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(10000.0) / (half - 1))
    )
    angles = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal features followed by a two-layer MLP with SiLU."""

    def __init__(self, embedding_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.main = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, output_dim)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed ``t: (B,)`` into ``(B, output_dim)``."""
        return self.main(sinusoidal_embedding(t, self.embedding_dim))


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block with an additive time embedding."""

    def __init__(self, in_ch: int, temb_ch: int, out_ch: int, dropout: float):
        super().__init__()
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm1 = _group_norm(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch)
        self.norm2 = _group_norm(out_ch)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.shortcut = _conv1x1(in_ch, out_ch) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x: (B, in_ch, H, W)`` given ``temb: (B, temb_ch)``."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.shortcut is not None:
            x = self.shortcut(x)
        return x + h


class SelfAttention(nn.Module):
    """Single-head spatial self-attention with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.attn_q = _conv1x1(channels, channels)
        self.attn_k = _conv1x1(channels, channels)
        self.attn_v = _conv1x1(channels, channels)
        self.proj_out = _conv1x1(channels, channels)
        self.norm = _group_norm(channels)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """Attend over the H*W positions of ``x: (B, C, H, W)``."""
        b, c, h, w = x.shape
        z = self.norm(x)
        # (B, HW, C) layout lets the fused attention kernel do the softmax(q k^T / sqrt(C)) v.
        q = self.attn_q(z).reshape(b, c, h * w).transpose(1, 2)
        k = self.attn_k(z).reshape(b, c, h * w).transpose(1, 2)
        v = self.attn_v(z).reshape(b, c, h * w).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling, optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.up_conv = _conv3x3(channels, channels) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Double the spatial size of ``x``."""
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.up_conv(x) if self.up_conv is not None else x


def _downsample(channels: int, with_conv: bool) -> nn.Module:
    return _conv3x3(channels, channels, stride=2) if with_conv else nn.AvgPool2d(2, 2)


class UNet(nn.Module):
    """The UNet velocity field ``v(x, t)``; state-dict compatible with the published checkpoints."""

    def __init__(
        self,
        input_channels: int,
        input_height: int,
        ch: int,
        output_channels: int | None = None,
        ch_mult: Sequence[int] = (1, 2, 4, 8),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
    ):
        super().__init__()
        self.input_channels = input_channels
        self.input_height = input_height
        self.output_channels = output_channels or input_channels
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.attn_resolutions = tuple(attn_resolutions)
        temb_ch = 4 * ch

        self.temb_net = TimestepEmbedding(ch, temb_ch, temb_ch)
        self.begin_conv = _conv3x3(input_channels, ch)

        skip_chs = [ch]
        in_ch, res = ch, input_height
        self.down_modules = nn.ModuleList()
        for level, mult in enumerate(ch_mult):
            blocks: dict[str, nn.Module] = {}
            out_ch = ch * mult
            for i in range(num_res_blocks):
                blocks[f"{level}a_{i}a_block"] = ResidualBlock(in_ch, temb_ch, out_ch, dropout)
                in_ch = out_ch
                if res in self.attn_resolutions:
                    blocks[f"{level}a_{i}b_attn"] = SelfAttention(in_ch)
                skip_chs.append(in_ch)
            if level != self.num_resolutions - 1:
                blocks[f"{level}b_downsample"] = _downsample(in_ch, resamp_with_conv)
                res //= 2
                skip_chs.append(in_ch)
            self.down_modules.append(nn.ModuleDict(blocks))

        self.mid_modules = nn.ModuleList(
            [
                ResidualBlock(in_ch, temb_ch, in_ch, dropout),
                SelfAttention(in_ch),
                ResidualBlock(in_ch, temb_ch, in_ch, dropout),
            ]
        )

        self.up_modules = nn.ModuleList()
        for level in reversed(range(self.num_resolutions)):
            blocks = {}
            out_ch = ch * ch_mult[level]
            for i in range(num_res_blocks + 1):
                blocks[f"{level}a_{i}a_block"] = ResidualBlock(
                    in_ch + skip_chs.pop(), temb_ch, out_ch, dropout
                )
                in_ch = out_ch
                if res in self.attn_resolutions:
                    blocks[f"{level}a_{i}b_attn"] = SelfAttention(in_ch)
            if level != 0:
                blocks[f"{level}b_upsample"] = Upsample(in_ch, resamp_with_conv)
                res *= 2
            self.up_modules.append(nn.ModuleDict(blocks))
        assert not skip_chs

        self.end_conv = nn.Sequential(
            _group_norm(in_ch), nn.SiLU(), _conv3x3(in_ch, self.output_channels)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity at ``x: (B, C, H, W)``, ``t: (B,)`` in [0, 1]; returns ``(B, C_out, H, W)``."""
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        temb = self.temb_net(t)
        hs = [self.begin_conv(x)]
        for level, blocks in enumerate(self.down_modules):
            for i in range(self.num_res_blocks):
                h = blocks[f"{level}a_{i}a_block"](hs[-1], temb)
                attn = f"{level}a_{i}b_attn"
                if attn in blocks:
                    h = blocks[attn](h)
                hs.append(h)
            if level != self.num_resolutions - 1:
                hs.append(blocks[f"{level}b_downsample"](hs[-1]))

        h = self.mid_modules[0](hs[-1], temb)
        h = self.mid_modules[1](h)
        h = self.mid_modules[2](h, temb)

        for idx, level in enumerate(reversed(range(self.num_resolutions))):
            blocks = self.up_modules[idx]
            for i in range(self.num_res_blocks + 1):
                h = blocks[f"{level}a_{i}a_block"](torch.cat([h, hs.pop()], dim=1), temb)
                attn = f"{level}a_{i}b_attn"
                if attn in blocks:
                    h = blocks[attn](h)
            if level != 0:
                h = blocks[f"{level}b_upsample"](h)
        return self.end_conv(h)
