"""Typed training configuration, and the recipes of the priors Restora ships."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# Fields that must not change when a run resumes from a checkpoint (they fix the model, the
# data order and the noise): a mismatch raises instead of silently mixing two runs.
RESUME_INVARIANT = ("data", "resolution", "channels", "model", "batch_size", "seed",
                    "ot_coupling", "data_mode", "scales", "hflip", "rot90")


@dataclass
class TrainConfig:
    """Everything a training run depends on. JSON-serialisable (tuples become lists).

    data: a ``.npz``/``.npy`` training set (numpy only) or a folder/prefix of images or Parquet
        shards (needs PIL/pyarrow), local or any fsspec URI.
    model: UNet constructor arguments without ``input_channels``/``input_height`` (taken from
        ``channels``/``resolution``), e.g. ``{"ch": 64, "ch_mult": [1, 2, 2], ...}``.
    max_steps / max_seconds: stop at whichever comes first (``max_seconds`` counts training
        time in this process, not time spent in earlier, resumed runs).
    checkpoint_dir: fsspec URI; a run resumes from its latest checkpoint when ``resume``.
    output: where the EMA weights go as a ``.safetensors`` prior (``save_prior``).
    """

    data: str = ""
    resolution: int = 32
    channels: int = 1
    model: dict[str, Any] = field(default_factory=lambda: {
        "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [16],
        "dropout": 0.0})
    # data
    data_mode: str = "auto"            # folders/Parquet: "resize" or "crop"; auto = resize
    scales: list[int] | None = None    # crop scales (None: the dataset's own, else [1, 2, 4])
    hflip: bool | None = None          # None: the dataset's default (digits none, photos on)
    rot90: bool | None = None
    # optimisation
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ot_coupling: bool = False
    max_steps: int = 1000
    max_seconds: float | None = None
    seed: int = 0
    # runtime
    device: str = "cpu"
    bf16: bool = False                 # bf16 autocast on CUDA (weights and loss stay fp32)
    compile: bool = False              # torch.compile the training model (CUDA, opt-in)
    device_data: bool | None = None    # hold the data on the device, draw batches there
                                       # (None: when it takes <= 1/4 of the free memory)
    prefetch: bool | None = None       # host-side batches only: prepare the next in a thread
    log_every: int = 50
    checkpoint_dir: str | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = True
    # export
    output: str | None = None
    name: str = "prior"
    save_half: bool = False            # store the prior's weights as fp16
    sample_count: int = 16             # images in the final sample grid (0: none)
    sample_steps: int = 32             # Euler steps for the grid
    command: str | None = None         # recorded in the model card (the CLI fills it in)
    storage_options: dict[str, Any] = field(default_factory=dict)

    def architecture(self) -> dict[str, Any]:
        """The UNet config of this run, as stored in the model card."""
        arch = {"input_channels": self.channels, "input_height": self.resolution}
        arch.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.model.items()})
        return arch

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training config keys {sorted(unknown)}")
        return cls(**d)


# The shipped priors: one H100, ~4 minutes each (``max_seconds``), bf16 autocast on CUDA (the
# script adds ``--device cuda --bf16``). Same UNet family as the published checkpoints.
# digits32: ch=32 (1.62 M parameters, 6.5 MB fp32) - it is the demo/test default and must stay
#   fast on CPUs. photo32: ch=64 (6.47 M, 25.9 MB fp32 -> stored fp16, 12.9 MB).
SHIPPED_RECIPES: dict[str, dict[str, Any]] = {
    "digits32": dict(  # noqa: C408
        name="digits32", data=".cache/datasets/digits32_train.npz", resolution=32, channels=1,
        model={"ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [16],
               "dropout": 0.0},
        batch_size=128, lr=4e-4, warmup_steps=500, ema_decay=0.9995, grad_clip=1.0,
        ot_coupling=True, max_steps=200_000, max_seconds=240.0, log_every=100,
        checkpoint_every=2000, save_half=False, sample_count=64, sample_steps=64,
        output="restora_core/weights/digits32.safetensors",
        checkpoint_dir=".cache/checkpoints/digits32"),
    "photo32": dict(  # noqa: C408
        name="photo32", data=".cache/datasets/photo32_train.npz", resolution=32, channels=3,
        model={"ch": 64, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [16],
               "dropout": 0.0},
        batch_size=128, lr=4e-4, warmup_steps=500, ema_decay=0.9995, grad_clip=1.0,
        ot_coupling=True, max_steps=200_000, max_seconds=240.0, log_every=100,
        checkpoint_every=2000, save_half=True, sample_count=64, sample_steps=64,
        output="restora_core/weights/photo32.safetensors",
        checkpoint_dir=".cache/checkpoints/photo32"),
}
