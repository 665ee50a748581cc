"""The method registry: one line per method. A new method is one new file with its ``ENTRY``
(see ``method.Method``) plus one line here."""

from __future__ import annotations

from .flower import ENTRY as FLOWER
from .mask_ode import ENTRY as MASK_ODE
from .method import Method
from .ot_ode import ENTRY as OT_ODE
from .pnp_flow import ENTRY as PNP_FLOW
from .restora_flow import ENTRY as RESTORA_FLOW
from .restora_flow_denoise import ENTRY as RESTORA_FLOW_DENOISE

REGISTRY: dict[str, Method] = {entry.name: entry for entry in (
    RESTORA_FLOW,
    MASK_ODE,
    RESTORA_FLOW_DENOISE,
    OT_ODE,
    PNP_FLOW,
    FLOWER,
)}
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
