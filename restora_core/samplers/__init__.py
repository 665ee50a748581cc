"""Samplers: plain functions of (velocity, y, mask, *, their parameters, generator), and the
registry that describes each one (parameters, per-task defaults, cost, sources)."""

from .flower import flower
from .method import Method, params_dict
from .ot_ode import ot_ode, ot_ode_nfe
from .pnp_flow import pnp_flow
from .registry import METHODS, REGISTRY, get_method, methods_for_task
from .restora_flow import restora_flow, restora_flow_nfe
from .restora_flow_denoise import restora_flow_denoise, restora_flow_denoise_nfe

__all__ = ["METHODS", "REGISTRY", "Method", "flower", "get_method", "methods_for_task", "ot_ode",
           "ot_ode_nfe", "params_dict", "pnp_flow", "restora_flow", "restora_flow_denoise",
           "restora_flow_denoise_nfe", "restora_flow_nfe"]
