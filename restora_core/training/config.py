"""Typed training configuration, and the recipes of the priors Restora ships."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# Fields that must not change when a run resumes from a checkpoint (they fix the model, the
# data order and the noise): a mismatch raises instead of silently mixing two runs.
RESUME_INVARIANT = ("data", "resolution", "channels", "model", "batch_size", "seed",
                    "ot_coupling", "data_mode", "scales", "hflip", "rot90", "holdout",
                    "stream", "data_streams")


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
    data_mode: str = "auto"            # image sources: "crop" (random R-crops, the auto
                                       # choice), "resize" (centre square) or "multiscale"
                                       # (CropSourceSet: block-mean crops at `scales`)
    scales: list[int] | None = None    # multiscale crop scales (None: [1, 2, 4])
    hflip: bool | None = None          # None: the dataset's default (digits none, photos on)
    rot90: bool | None = None
    holdout: float = 0.0               # image sources: fraction held out of training, chosen
                                       # by a hash of each image's key (recorded in the card)
    stream: bool | None = None         # image sources: read shards while training instead of
                                       # decoding all first (None: when the shards' bytes
                                       # exceed stream_above_mb)
    stream_above_mb: float = 1024.0
    data_streams: int | None = None    # streaming: independent shard streams (None: one per
                                       # worker); fixed streams give the same batches on any
                                       # worker count that divides them
    decode_threads: int = 2            # streaming: decoder threads per worker
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


# The shipped priors, trained on one GPU with bf16 autocast (the GPU stage, ``priors/gpu_stage.py``,
# adds ``device="cuda", bf16=True`` and its own time limits). Same UNet family as the published
# checkpoints; every file stays under 15 MB:
#   digits32: ch=32 (1.62 M parameters, 6.5 MB fp32) - the demo/test default, fast on CPUs.
#   photo32:  ch=64, mult (1, 2, 2), 2 blocks (6.47 M, 12.9 MB fp16).
#   photo64:  ch=64, mult (1, 2, 2, 2), 1 block (6.08 M, 12.2 MB fp16): one block per level
#             keeps the 64x64 level cheap, so a short GPU budget buys more steps.
#   mri64:    ch=32, mult (1, 2, 2, 2), 2 blocks (2.24 M, 4.5 MB fp16): one template brain.
# photo32 and photo64 read the same file of source photographs, cropped at their own scales.
_COMMON: dict[str, Any] = dict(  # noqa: C408
    batch_size=128, lr=4e-4, warmup_steps=500, ema_decay=0.9995, grad_clip=1.0,
    ot_coupling=True, max_steps=200_000, max_seconds=240.0, log_every=100,
    checkpoint_every=2000, sample_count=64, sample_steps=64)


def _recipe(name: str, data: str, resolution: int, channels: int, model: dict[str, Any],
            **overrides: Any) -> dict[str, Any]:
    return {**_COMMON, "name": name, "data": f".cache/datasets/{data}",
            "resolution": resolution, "channels": channels,
            "model": {**model, "dropout": 0.0}, "output": f"restora_core/weights/{name}.safetensors",
            "checkpoint_dir": f".cache/checkpoints/{name}", **overrides}


SHIPPED_RECIPES: dict[str, dict[str, Any]] = {
    "digits32": _recipe("digits32", "digits32_train.npz", 32, 1, {
        "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [16]},
        save_half=False),
    "photo32": _recipe("photo32", "photos_train.npz", 32, 3, {
        "ch": 64, "ch_mult": [1, 2, 2], "num_res_blocks": 2, "attn_resolutions": [16]},
        scales=[1, 2, 4], save_half=True),
    "photo64": _recipe("photo64", "photos_train.npz", 64, 3, {
        "ch": 64, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "attn_resolutions": [16]},
        scales=[1, 2], save_half=True, ema_decay=0.999),
    "mri64": _recipe("mri64", "mri64_train.npz", 64, 1, {
        "ch": 32, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 2, "attn_resolutions": [16]},
        hflip=True, save_half=True, ema_decay=0.999),
}
