"""Samplers: plain functions of (velocity, y, mask, *, schedule parameters, generator)."""

from .baselines import ot_ode, ot_ode_nfe, pnp_flow
from .restora_flow import denoise_nfe, restora_flow, restora_flow_denoise

__all__ = ["denoise_nfe", "ot_ode", "ot_ode_nfe", "pnp_flow", "restora_flow",
           "restora_flow_denoise"]
