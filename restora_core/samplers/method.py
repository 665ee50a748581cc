"""What a restoration method is: one registry entry with its sampler, typed parameters, cost and
sources.

A method's parameters are a frozen dataclass whose field defaults are the method's generic
defaults (the published configuration file's); ``task_defaults`` overrides some of them per task
with the authors' per-task settings. Those two places are the only ones that hold a default.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..noise import Generators
from ..observations import DEFAULT_DENOISE_SIGMA, DEFAULT_SIGMA_Y, TASKS
from .common import Velocity

Sample = Callable[[Velocity, torch.Tensor, torch.Tensor, Any, float, Generators], torch.Tensor]


def param(default: Any, help: str, *, ge: float | None = None, gt: float | None = None,
          le: float | None = None, lt: float | None = None,
          choices: tuple[str, ...] | None = None) -> Any:
    """A parameter field: its default, a one-line meaning and its allowed range or choices."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    return field(default=default, metadata=meta)


def _coerce(name: str, kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{name} must be a number, got {value!r}")
    if isinstance(value, str):
        return value
    raise ValueError(f"{name} must be a string, got {value!r}")


def _check_range(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ValueError(f"{name} must be one of {list(meta['choices'])}, got {value!r}")
    bounds = (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
              ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<"))
    for key, ok, text in bounds:
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            raise ValueError(f"{name} must be {text} {bound}, got {value}")


@dataclass(frozen=True)
class ParamInfo:
    """One parameter as ``restora methods`` lists it."""

    name: str
    type: str
    default: Any
    help: str


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
        """The parameters with their types, generic defaults and meaning."""
        hints = typing.get_type_hints(self.params)
        return [ParamInfo(f.name, hints[f.name].__name__, f.default, f.metadata.get("help", ""))
                for f in dataclasses.fields(self.params)]

    def defaults(self, task: str | None = None) -> dict[str, Any]:
        """The parameter values for ``task`` (generic defaults when None or not overridden)."""
        values = {f.name: f.default for f in dataclasses.fields(self.params)}
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
        fields = {f.name: f for f in dataclasses.fields(self.params)}
        hints = typing.get_type_hints(self.params)
        values = self.defaults(task)
        for name, value in (overrides or {}).items():
            if name not in fields:
                raise ValueError(f"method '{self.name}' has no parameter '{name}'; it takes "
                                 f"{list(fields)}")
            if value is not None:
                values[name] = value
        checked = {}
        for name, value in values.items():
            value = _coerce(name, hints[name], value)
            _check_range(name, value, fields[name].metadata)
            checked[name] = value
        return self.params(**checked)

    def denoises(self, task: str | None) -> bool:
        """Whether a run for ``task`` is denoising: every pixel observed, with noise sigma."""
        return task == "denoise" or self.tasks == ("denoise",)

    def cost(self, task: str | None = None, overrides: Mapping[str, Any] | None = None,
             noise: float | None = None) -> int:
        """Network evaluations for ``task``'s defaults updated with ``overrides``, at observation
        noise ``noise`` (None: the default sigma for denoising, sigma_y otherwise)."""
        if noise is None:
            noise = DEFAULT_DENOISE_SIGMA if self.denoises(task) else DEFAULT_SIGMA_Y
        return self.nfe(self.make_params(task, overrides), noise)


def params_dict(params: Any) -> dict[str, Any]:
    """A parameter dataclass as a plain dict (JSON values)."""
    return dataclasses.asdict(params)
