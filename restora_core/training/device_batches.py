"""Training batches drawn on the training device: the dataset is held there as uint8 once, and
every step's image choice, crops, flips, quarter turns, noise and times are drawn there from a
generator seeded by ``(seed, step)``, so nothing but a few kernel launches happens on the host.

The minibatch OT pairing is split so that the host's part overlaps the network: :meth:`DeviceBatches.draw`
queues step k's draws and the (float64) cost matrix, starts its copy to the host and, on CUDA,
hands the wait for that copy and the exact assignment (``scipy.optimize.linear_sum_assignment``,
which releases the GIL) to a worker thread; the loop launches step k-1's network meanwhile, and
:meth:`DeviceBatches.finish` then only gathers the paired noise and queues the path point and target. Batches are a pure function of
``(seed, step, device type)``: a resumed run replays an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..datasets.arrays import CropSourceSet, ImageArraySet, TrainingSet
from .flow_matching import CFMBatch, linear_path


def _seed(*parts: int | str) -> int:
    text = "\x00".join(str(p) for p in ("restora-device-batch", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def dataset_bytes(dataset: TrainingSet) -> int:
    """Bytes the dataset takes on the device (crop sets: every scale level, padded)."""
    if isinstance(dataset, ImageArraySet):
        return int(dataset.images.nbytes)
    levels = [lv for s in dataset.scales for lv in dataset._levels[s]]
    h = max(lv.shape[0] for lv in levels)
    w = max(lv.shape[1] for lv in levels)
    return len(levels) * h * w * dataset.channels


def fits_on(dataset: TrainingSet, device: torch.device, fraction: float = 0.25) -> bool:
    """Whether the dataset takes at most ``fraction`` of the device's free memory (always on
    the CPU, where the dataset already lives)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return dataset_bytes(dataset) <= fraction * free


@dataclass
class PendingBatch:
    """Step ``step``'s draws on the device, waiting for the host's OT assignment."""

    step: int
    x1: torch.Tensor
    x0: torch.Tensor
    t: torch.Tensor
    cost: torch.Tensor | None = None       # host copy of the (B, B) cost (pinned on CUDA)
    ready: torch.cuda.Event | None = None  # recorded after the copy was queued
    perm: Future | None = None             # the assignment, solved in the worker thread


def _assignment(cost: torch.Tensor, ready: torch.cuda.Event | None) -> np.ndarray:
    """``perm`` with ``perm[i]`` the noise index paired with image ``i`` (minimum total cost)."""
    from scipy.optimize import linear_sum_assignment

    if ready is not None:
        ready.synchronize()
    rows, cols = linear_sum_assignment(cost.numpy())
    perm = np.empty(len(rows), np.int64)
    perm[rows] = cols
    return perm


class DeviceBatches:
    """Seeded training batches of ``dataset`` drawn on ``device``.

    ``x1`` in [-1, 1], ``(B, C, res, res)``: image arrays are walked in a seeded permutation per
    epoch and randomly cropped to the resolution when larger; crop sets pick a scale uniformly,
    an image by the set's weights, a window uniformly on that scale's grid (from block-mean
    levels precomputed on the host). Then each image is flipped with p = 1/2 and turned by
    k * 90 deg, as the dataset's ``augment`` allows.
    """

    def __init__(self, dataset: TrainingSet, device: torch.device | str, seed: int = 0,
                 overlap: bool | None = None):
        self.device = torch.device(device)
        # solve assignments in a worker thread (default on CUDA; on the CPU the solver would
        # compete with torch's own threads)
        self.overlap = self.device.type == "cuda" if overlap is None else bool(overlap)
        self._pool: ThreadPoolExecutor | None = None
        self.seed = int(seed)
        self.res = int(dataset.resolution)
        self.hflip, self.rot90 = bool(dataset.augment.hflip), bool(dataset.augment.rot90)
        self._gen = torch.Generator(self.device)
        self._arange = torch.arange(self.res, device=self.device)
        if isinstance(dataset, ImageArraySet):
            self.kind = "images"
            self.n = len(dataset)
            self.data = torch.from_numpy(dataset.images).permute(0, 3, 1, 2).contiguous().to(
                self.device)
            self._perms: dict[int, torch.Tensor] = {}
        elif isinstance(dataset, CropSourceSet):
            self.kind = "crops"
            self._init_crops(dataset)
        else:
            raise TypeError(f"unsupported training set {type(dataset).__name__}")

    def _init_crops(self, ds: CropSourceSet) -> None:
        scales, n_img = list(ds.scales), len(ds.sources)
        levels = [ds._levels[s][i] for s in scales for i in range(n_img)]
        h = max(lv.shape[0] for lv in levels)
        w = max(lv.shape[1] for lv in levels)
        padded = np.zeros((len(levels), ds.channels, h, w), np.uint8)
        for k, lv in enumerate(levels):
            padded[k, :, :lv.shape[0], :lv.shape[1]] = lv.transpose(2, 0, 1)
        ny = np.zeros((len(scales), n_img), np.int64)
        nx = np.zeros_like(ny)
        for a, s in enumerate(scales):
            for i, im in enumerate(ds.sources):
                ny[a, i], nx[a, i] = ds._positions(im, s)
        self.n_img = n_img
        self.data = torch.from_numpy(padded).to(self.device)
        self.weights = torch.from_numpy(np.stack([ds._weights[s] for s in scales])).to(
            self.device, torch.float32)
        self.ny = torch.from_numpy(ny).to(self.device)
        self.nx = torch.from_numpy(nx).to(self.device)
        self.n_scales = len(scales)

    # ----------------------------------------------------------------------------- images
    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator(self.device).manual_seed(_seed(self.seed, "order", epoch))
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
            self._perms[epoch] = torch.randperm(self.n, generator=g, device=self.device)
        return self._perms[epoch]

    def _indices(self, step: int, b: int) -> torch.Tensor:
        start, stop = step * b, (step + 1) * b
        parts = []
        for epoch in range(start // self.n, (stop - 1) // self.n + 1):
            lo, hi = max(start, epoch * self.n), min(stop, (epoch + 1) * self.n)
            parts.append(self._perm(epoch)[lo - epoch * self.n:hi - epoch * self.n])
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _gather(self, which: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        c = self.data.shape[1]
        rows = (ys[:, None] + self._arange)[:, None, :, None]
        cols = (xs[:, None] + self._arange)[:, None, None, :]
        chans = torch.arange(c, device=self.device)[None, :, None, None]
        return self.data[which[:, None, None, None], chans, rows, cols]

    # --------------------------------------------------------------------------- batches
    def images(self, step: int, batch_size: int) -> torch.Tensor:
        """Step ``step``'s images ``(B, C, res, res)`` float32 in [-1, 1], on the device; also
        leaves the step's generator ready for the noise and times."""
        g = self._gen.manual_seed(_seed(self.seed, "step", step))
        b, r, dev = batch_size, self.res, self.device
        if self.kind == "images":
            idx = self._indices(step, b)
            h, w = self.data.shape[-2:]
            if (h, w) == (r, r):
                u8 = self.data[idx]
            else:
                ys = torch.randint(0, h - r + 1, (b,), generator=g, device=dev)
                xs = torch.randint(0, w - r + 1, (b,), generator=g, device=dev)
                u8 = self._gather(idx, ys, xs)
        else:
            scale = torch.randint(0, self.n_scales, (b,), generator=g, device=dev)
            img = torch.multinomial(self.weights[scale], 1, generator=g).squeeze(1)
            u = torch.rand(2, b, generator=g, device=dev, dtype=torch.float64)
            ys = (u[0] * self.ny[scale, img]).long()
            xs = (u[1] * self.nx[scale, img]).long()
            u8 = self._gather(scale * self.n_img + img, ys, xs)
        x = u8.float().div_(127.5).sub_(1.0)
        if self.hflip:
            flip = torch.rand(b, generator=g, device=dev) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.rot90:
            k = torch.randint(0, 4, (b,), generator=g, device=dev)
            turned = torch.stack([torch.rot90(x, j, (-2, -1)) for j in range(4)])
            x = turned[k, torch.arange(b, device=dev)]
        return x

    def draw(self, step: int, batch_size: int, ot: bool) -> PendingBatch:
        """Queue step ``step``'s images, noise ``x0 ~ N(0, I)``, times ``t ~ U(0, 1)`` and,
        with ``ot``, the squared-distance cost matrix and its copy to the host."""
        x1 = self.images(step, batch_size)
        x0 = torch.randn(x1.shape, generator=self._gen, device=self.device)
        t = torch.rand(x1.shape[0], generator=self._gen, device=self.device)
        pending = PendingBatch(step, x1, x0, t)
        if ot:
            a = x1.flatten(1).double()
            bb = x0.flatten(1).double()
            cost = (a * a).sum(1)[:, None] + (bb * bb).sum(1)[None, :] - 2.0 * (a @ bb.T)
            if self.device.type == "cuda":
                host = torch.empty(cost.shape, dtype=cost.dtype, pin_memory=True)
                host.copy_(cost, non_blocking=True)
                pending.ready = torch.cuda.Event()
                pending.ready.record()
                pending.cost = host
            else:
                pending.cost = cost
            if self.overlap:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="restora-ot")
                pending.perm = self._pool.submit(_assignment, pending.cost, pending.ready)
        return pending

    def close(self) -> None:
        """Stop the assignment thread (if one was started)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def finish(self, pending: PendingBatch) -> CFMBatch:
        """Pair the noise with the images by the exact OT assignment (when a cost was queued)
        and build the path point and target on the device."""
        x0 = pending.x0
        if pending.cost is not None:
            perm = (pending.perm.result() if pending.perm is not None
                    else _assignment(pending.cost, pending.ready))
            perm_t = torch.from_numpy(perm)
            if self.device.type == "cuda":
                perm_t = perm_t.pin_memory().to(self.device, non_blocking=True)
            x0 = x0[perm_t]
        x_t, u_t = linear_path(x0, pending.x1, pending.t)
        return CFMBatch(x_t=x_t, t=pending.t, u_t=u_t)
