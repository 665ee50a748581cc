"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of ``model`` whose parameters track ``decay``-averages of the live ones.

    The effective decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so
    short runs are not dominated by the random initialisation. Buffers are copied as is.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def effective_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        d = self.effective_decay()
        ema_p = [p for p in self.module.parameters()]
        live_p = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, live_p, 1.0 - d)
        for eb, lb in zip(self.module.buffers(), model.buffers()):
            eb.copy_(lb)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.module.load_state_dict(state["module"])
