"""The degradation (task) registry. A new task is one new file in this package defining
``ENTRY`` (a ``base.Degradation``) plus its module name in ``_MODULES``. Torch-free."""

from __future__ import annotations

from importlib import import_module

from .base import Degradation

_MODULES = (
    "inpaint",
    "box",
    "random",
    "superres",
    "denoise",
    "outpaint",
)

REGISTRY: dict[str, Degradation] = {}
for _name in _MODULES:
    _entry: Degradation = import_module(f"{__package__}.{_name}").ENTRY
    REGISTRY[_entry.name] = _entry
TASKS = tuple(REGISTRY)


def get_task(name: str) -> Degradation:
    """The registry entry of task ``name``; ValueError naming the known tasks otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task '{name}'; expected one of {TASKS}") from None
