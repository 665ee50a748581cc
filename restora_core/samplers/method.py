"""What a restoration method is: one registry entry with its sampler, typed parameters, cost and
sources.

A method's parameters are a frozen dataclass whose field defaults are the method's generic
defaults (the published configuration file's); ``task_defaults`` overrides some of them per task
with the authors' per-task settings. Those two places are the only ones that hold a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..degradations import DEFAULT_SIGMA_Y, TASKS, get_task
from ..noise import Generators
from ..params import ParamInfo, as_dict, build_params, defaults_of, param, param_info
from .common import Velocity

__all__ = ["Method", "ParamInfo", "Sample", "param", "params_dict"]

# Outpainting has no published setting in any method's sources: entries borrow their box
# inpainting setting (a missing region, like it) and say so in ``sources["outpaint"]``.
BORROWED = "outpaint borrows the box inpainting setting (none is published for it): "

Sample = Callable[[Velocity, torch.Tensor, torch.Tensor, Any, float, Generators], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A registry entry: everything the API, the pipeline and the CLI need to know of a method.

    ``sample(velocity, y, mask, params, noise, generator)`` restores ``y: (B, C, H, W)`` in [-1, 1]
    with ``mask: (B, 1, H, W)`` (1 = known; all ones for denoising) whose known pixels carry
    Gaussian noise of std ``noise``. ``nfe(params, noise)`` is its cost in network evaluations.
    ``sources`` says where each number came from: key ``"defaults"`` for the dataclass defaults,
    a task name for that task's overrides. ``stochastic`` is False for a method whose result
    does not depend on its generator (several samples of it would all be the same image).
    """

    name: str
    summary: str
    paper: str
    params: type
    sample: Sample
    nfe: Callable[[Any, float], int]
    tasks: tuple[str, ...]
    task_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    needs_mask: bool = True
    stochastic: bool = True

    def __post_init__(self) -> None:
        unknown = [t for t in (*self.tasks, *self.task_defaults) if t not in TASKS]
        if unknown:
            raise ValueError(f"method '{self.name}' names unknown tasks {unknown}")
        for task, overrides in self.task_defaults.items():
            self.make_params(task, overrides)  # a bad published default fails at import

    def param_info(self) -> list[ParamInfo]:
        """The parameters with their types, generic defaults, meaning and range."""
        return param_info(self.params)

    def defaults(self, task: str | None = None) -> dict[str, Any]:
        """The parameter values for ``task`` (generic defaults when None or not overridden)."""
        values = defaults_of(self.params)
        if task is not None:
            values.update(self.task_defaults.get(task, {}))
        return values

    def make_params(self, task: str | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
        """Validated parameters: ``task``'s defaults updated with ``overrides`` (None = not given).

        Raises ValueError naming the parameter for an unknown name, a wrong type or a value out
        of range, or when the method does not do ``task``.
        """
        if task is not None and task not in self.tasks:
            raise ValueError(f"method '{self.name}' does not do task '{task}'; it does "
                             f"{list(self.tasks)}")
        return build_params(self.params, self.defaults(task), overrides, f"method '{self.name}'")

    def denoises(self, task: str | None) -> bool:
        """Whether a run for ``task`` is denoising: every pixel observed, with noise sigma (a
        method doing only denoising tasks denoises whatever task it is asked for)."""
        if task is not None:
            return get_task(task).denoising
        return all(get_task(t).denoising for t in self.tasks)

    def default_noise(self, task: str | None, denoising: bool) -> float:
        """The observation noise when none is given: for a denoising run the default of its
        task's noise parameter (the method's first denoising task when ``task`` is not one),
        otherwise the measurement noise sigma_y."""
        if denoising:
            names = [task] if task is not None and get_task(task).denoising else list(self.tasks)
            for name in names:
                if get_task(name).denoising:
                    return get_task(name).default_noise()
        return DEFAULT_SIGMA_Y

    def cost(self, task: str | None = None, overrides: Mapping[str, Any] | None = None,
             noise: float | None = None) -> int:
        """Network evaluations for ``task``'s defaults updated with ``overrides``, at observation
        noise ``noise`` (None: ``default_noise``)."""
        if noise is None:
            noise = self.default_noise(task, self.denoises(task))
        return self.nfe(self.make_params(task, overrides), noise)


def params_dict(params: Any) -> dict[str, Any]:
    """A parameter dataclass as a plain dict (JSON values)."""
    return as_dict(params)
