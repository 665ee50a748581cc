"""Training samples whose randomness is keyed by ``(seed, step, global sample index)``.

Step ``k`` of a run with global batch ``B`` trains on the global sample indices
``k*B .. k*B + B - 1``. Everything random about sample ``g`` (its crop window, its flip, its noise
``x0`` and its time ``t``) comes from a generator seeded by ``(seed, k, g)``, and which image it
shows comes from a per-epoch permutation seeded by ``(seed, epoch)``. A worker of rank ``r`` out
of ``W`` takes the contiguous slice ``k*B + r*B/W .. k*B + (r+1)*B/W - 1``, so the union of the
workers' batches is the one batch a single process would draw: with gradients averaged across
workers, 2 workers x B/2 train the same weights as 1 worker x B (up to float summation order).

Minibatch OT pairing, when on, is solved over each worker's own slice (it needs the whole slice
on one process): with it, runs on different worker counts pair noise differently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .flow_matching import CFMBatch, linear_path, ot_permutation

MODES = ("crop", "resize")


def keyed_seed(*parts: int | str) -> int:
    """63-bit seed derived from ``parts`` (SHA-256, so neighbouring keys are unrelated)."""
    text = "\x00".join(str(p) for p in ("restora-keyed", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order ``(n,)`` int64 in which epoch ``epoch`` visits ``n`` items (seeded permutation)."""
    return np.random.default_rng(keyed_seed(seed, "epoch", epoch)).permutation(n)


@dataclass(frozen=True)
class SampleRule:
    """How an image of any size becomes a ``resolution`` square training sample.

    mode "crop": a uniformly placed ``resolution`` window (images with a side shorter than the
    resolution are first enlarged so that side fits); "resize": the centre square resized to the
    resolution (done once, when the image is read). ``hflip``: mirror with p = 1/2.
    """

    resolution: int
    channels: int
    mode: str = "crop"
    hflip: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"data mode must be one of {MODES}, got '{self.mode}'")
        if self.resolution < 1 or self.channels not in (1, 3):
            raise ValueError(f"bad sample rule {self}")


def prepare_image(img: np.ndarray, rule: SampleRule) -> np.ndarray:
    """``img: (H, W, C)`` uint8 made ready for :func:`keyed_sample` (done once per image read):
    resized to the square in mode "resize", enlarged to fit one window in mode "crop"."""
    from ..datasets.arrays import resize_square

    if img.ndim != 3 or img.dtype != np.uint8 or img.shape[-1] != rule.channels:
        raise ValueError(f"expected (H, W, {rule.channels}) uint8, got {img.shape} {img.dtype}")
    r = rule.resolution
    h, w = img.shape[:2]
    if rule.mode == "resize":
        return resize_square(img, r)
    if min(h, w) >= r:
        return img
    scale = r / min(h, w)
    size = (max(r, round(w * scale)), max(r, round(h * scale)))
    from PIL import Image

    pil = Image.fromarray(img[..., 0] if rule.channels == 1 else img)
    out = np.asarray(pil.resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)
    return out[..., None] if out.ndim == 2 else out


def keyed_sample(img: np.ndarray, rule: SampleRule, seed: int, step: int, index: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample ``index`` of step ``step``: ``(x1, x0, t)`` with ``x1, x0: (C, R, R)`` float32
    (``x1`` in [-1, 1], ``x0 ~ N(0, I)``) and ``t: ()`` in [0, 1), all drawn from the key.

    ``img``: an image made ready by :func:`prepare_image`.
    """
    gen = torch.Generator().manual_seed(keyed_seed(seed, step, index))
    r = rule.resolution
    h, w = img.shape[:2]
    y = int(torch.randint(0, h - r + 1, (), generator=gen))
    x = int(torch.randint(0, w - r + 1, (), generator=gen))
    flip = bool(torch.rand((), generator=gen) < 0.5)
    window = img[y:y + r, x:x + r]
    if rule.hflip and flip:
        window = window[:, ::-1]
    x1 = torch.from_numpy(window.transpose(2, 0, 1).copy()).float()  # images may be read-only
    x1 = x1.div_(127.5).sub_(1.0)
    x0 = torch.randn((rule.channels, r, r), generator=gen)
    t = torch.rand((), generator=gen)
    return x1, x0, t


def keyed_batch(images: Sequence[np.ndarray], rule: SampleRule, seed: int, step: int,
                first_index: int, *, ot: bool = False) -> CFMBatch:
    """The CFM batch of ``images`` (prepared), sample ``i`` keyed by ``first_index + i``;
    with ``ot`` the noise is re-paired over this batch by the exact OT assignment."""
    parts = [keyed_sample(img, rule, seed, step, first_index + i) for i, img in enumerate(images)]
    return cfm_batch(torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]),
                     torch.stack([p[2] for p in parts]), ot=ot)


def cfm_batch(x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, *, ot: bool = False
              ) -> CFMBatch:
    """The CFM batch of images ``x1``, noise ``x0`` (both ``(B, C, H, W)``) and times ``t: (B,)``;
    with ``ot`` the noise is re-paired with the images by the exact OT assignment over the batch."""
    if ot:
        x0 = x0[ot_permutation(x0, x1)]
    x_t, u_t = linear_path(x0, x1, t)
    return CFMBatch(x_t=x_t, t=t, u_t=u_t)


def local_slice(step: int, batch_size: int, rank: int, world_size: int) -> range:
    """The global sample indices of step ``step`` that worker ``rank`` of ``world_size`` trains."""
    if batch_size % world_size:
        raise ValueError(f"the global batch {batch_size} does not split evenly over "
                         f"{world_size} workers")
    local = batch_size // world_size
    start = step * batch_size + rank * local
    return range(start, start + local)


class KeyedImages:
    """An in-memory image list served as keyed batches: global sample ``g`` shows image
    ``epoch_order(seed, g // n)[g % n]`` (the same image on any worker count)."""

    def __init__(self, images: Sequence[np.ndarray], rule: SampleRule, seed: int, *,
                 batch_size: int, rank: int = 0, world_size: int = 1, ot: bool = False):
        if not images:
            raise ValueError("the training set is empty")
        self.images = [prepare_image(im, rule) for im in images]
        self.rule, self.seed, self.ot = rule, int(seed), bool(ot)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        local_slice(0, self.batch_size, self.rank, self.world_size)  # check the split early
        self._orders: dict[int, np.ndarray] = {}
        self.description = ("keyed in-memory: image of sample g = epoch_order(seed, g // n)"
                            "[g % n]; crop, flip, noise, time from keyed_seed(seed, step, g)")

    def __len__(self) -> int:
        return len(self.images)

    def _image(self, g: int) -> np.ndarray:
        n = len(self.images)
        epoch = g // n
        if epoch not in self._orders:
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = epoch_order(self.seed, epoch, n)
        return self.images[int(self._orders[epoch][g % n])]

    def batch(self, step: int) -> CFMBatch:
        """This worker's part of step ``step`` (CPU tensors)."""
        idx = local_slice(step, self.batch_size, self.rank, self.world_size)
        return keyed_batch([self._image(g) for g in idx], self.rule, self.seed, step,
                           idx.start, ot=self.ot)

    def position(self, step: int) -> dict:
        """Where the data stands before step ``step`` (a pure function of the step here)."""
        return {"kind": "keyed-memory", "next_step": int(step),
                "next_sample": int(step) * self.batch_size}

    def restore(self, positions: list[dict], step: int) -> None:
        """Check that the stored positions are this scheme's at ``step`` (the position is a
        pure function of the step, so nothing else is needed)."""
        for pos in positions:
            if pos.get("kind") != "keyed-memory" or pos.get("next_step") != step:
                raise ValueError(f"the checkpoint's data position {pos} is not the in-memory "
                                 f"keyed position of step {step}: the data path changed")

    def close(self) -> None:
        """Nothing to stop (the interface of streaming sources)."""
