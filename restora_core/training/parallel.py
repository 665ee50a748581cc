"""What the training loop needs to run as one of several data-parallel workers.

The loop stays a plain PyTorch loop; whoever starts the workers (Ray Train in ``tasks/``, which
this package does not import) sets up ``torch.distributed`` and hands the loop a
:class:`WorkerGroup`: its rank, a model wrapper that averages gradients (DDP), and a checkpoint
callback that every rank calls together. Batches come from a :class:`BatchSource`, which gives
each worker its own part of every step's global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from .flow_matching import CFMBatch


class BatchSource(Protocol):
    """A worker's training batches: ``batch(step)`` is this worker's part of step ``step``."""

    description: str

    def batch(self, step: int) -> CFMBatch:
        """This worker's part of step ``step`` as CPU tensors."""

    def position(self, step: int) -> dict[str, Any]:
        """This worker's data position before step ``step`` (stored in checkpoints)."""

    def restore(self, positions: list[dict[str, Any]], step: int) -> None:
        """Continue from the positions every worker stored (one dict per worker at save time)."""

    def close(self) -> None:
        """Stop background readers."""


def _identity(model: nn.Module) -> nn.Module:
    return model


@dataclass
class WorkerGroup:
    """One worker's view of a data-parallel run (``torch.distributed`` already initialised when
    ``world_size > 1``).

    wrap_model: makes the training model average gradients across workers (e.g. DDP).
    save: called by every rank at each checkpoint with ``(state or None, step, metrics)``; rank
        0 passes the state. Returns where the checkpoint went (rank 0) or None.
    resume_state: the checkpoint state this worker resumes from, or None.
    """

    rank: int = 0
    world_size: int = 1
    wrap_model: Callable[[nn.Module], nn.Module] = _identity
    save: Callable[[dict[str, Any] | None, int, dict[str, Any]], str | None] | None = None
    resume_state: dict[str, Any] | None = None
    backend: str = "none"

    @property
    def is_chief(self) -> bool:
        """Whether this worker writes the prior, the samples and the checkpoints' state."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether collectives are needed (more than one worker)."""
        return self.world_size > 1

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over the workers (a copy; ``value`` itself on one worker)."""
        if not self.distributed:
            return value
        out = value.detach().clone()
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
        return out / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any worker (so that every worker stops at the same step)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather(self, obj: Any) -> list[Any]:
        """Every worker's ``obj``, in rank order (on every worker)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under a DDP (or similar ``.module``) wrapper."""
    return getattr(model, "module", model)
