"""The method registry. A new method is one new file in this package defining ``ENTRY`` (a
``method.Method``) plus its module name in ``_MODULES``."""

from __future__ import annotations

from importlib import import_module

from .method import Method

_MODULES = (
    "restora_flow",
    "mask_ode",
    "restora_flow_denoise",
    "ot_ode",
    "pnp_flow",
    "flower",
)

REGISTRY: dict[str, Method] = {}
for _name in _MODULES:
    _entry: Method = import_module(f"{__package__}.{_name}").ENTRY
    REGISTRY[_entry.name] = _entry
METHODS = tuple(REGISTRY)


def get_method(name: str) -> Method:
    """The registry entry of method ``name``; ValueError naming the known methods otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method '{name}'; expected one of {METHODS}") from None


def methods_for_task(task: str) -> tuple[str, ...]:
    """Names of the methods that do ``task``."""
    return tuple(name for name, entry in REGISTRY.items() if task in entry.tasks)
