"""Mask-ODE: Restora-Flow without trajectory corrections (c = 0), the ablation of its paper."""

from __future__ import annotations

from dataclasses import dataclass

from .method import BORROWED, Method, param
from .restora_flow import (
    PAPER,
    TASK_SOURCE,
    TASK_STEPS,
    RestoraFlowParams,
    restora_flow,
    wants_cuda_graph,
)


@dataclass(frozen=True)
class MaskODEParams:
    """Mask-ODE's parameters: Restora-Flow's grid, no corrections."""

    steps: int = param(RestoraFlowParams.steps, "grid size T: Euler steps of 1/T", ge=1)
    paste_known: bool = param(RestoraFlowParams.paste_known,
                              "copy the observed pixels into the result (noise-free y only)")


def _sample(velocity, y, mask, p: MaskODEParams, noise, generator):
    return restora_flow(velocity, y, mask, steps=p.steps, corrections=0, generator=generator,
                        paste_known=p.paste_known, cuda_graph=wants_cuda_graph(velocity, y))


ENTRY = Method(
    name="mask_ode",
    summary="Restora-Flow's mask-guided Euler walk with c = 0 (no corrections)",
    paper=PAPER + ", its c = 0 ablation",
    params=MaskODEParams,
    sample=_sample,
    nfe=lambda p, noise: p.steps,
    tasks=("inpaint", "box", "random", "superres", "outpaint"),
    task_defaults={**{task: {"steps": t} for task, t in TASK_STEPS.items()},
                   "outpaint": {"steps": TASK_STEPS["box"]}},
    sources={"defaults": "restora_flow's per-task T with c = 0 (the Restora-Flow paper's "
                         "ablation); " + TASK_SOURCE,
             "outpaint": BORROWED + "T=64 with c = 0; " + TASK_SOURCE},
)
