"""Restora-Flow (Hadzic et al., WACV 2026, arXiv 2511.20152): mask-guided flow sampling with
trajectory corrections.

Time convention: t=0 noise, t=1 data, x_t = t*x1 + (1-t)*x0; ``velocity(x, t)`` with t of shape (B,).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..noise import Generators, PerImageNoise, as_generator_list
from ..runtime import runtime_of
from ..schedule import correction_schedule
from .common import Callback, Velocity, one_step_denoiser, tvec
from .method import BORROWED, Method, param

PAPER = "Hadzic et al., Restora-Flow, WACV 2026 (arXiv 2511.20152)"
# The authors' per-task grid sizes T at 128^2 (c = 1 for every task); shared by the c=0 ablation.
TASK_STEPS = {"box": 64, "random": 128, "superres": 128}
TASK_SOURCE = ("Restora-Flow's per-task settings at 128^2 (T=64 box, T=128 random inpainting and "
               "super-resolution, c=1), as recorded in issue 9 from the authors' natural/config; "
               "that repository was not in the search index to re-read")


@torch.inference_mode()
def restora_flow(
    velocity: Velocity,
    y: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int,
    corrections: int,
    generator: Generators,
    paste_known: bool = False,
    cuda_graph: bool = False,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Restore ``y: (B, C, H, W)`` in [-1, 1] where ``mask: (B, 1, H, W)`` is 1 (known pixels).

    Walks the jump schedule of ``correction_schedule(steps, corrections)``: up-steps re-impose the
    known pixels at the current noise level, then take an Euler step; down-steps predict the clean
    image and re-noise it one level lower. Costs ``steps + 2*corrections*(steps-1)`` network
    evaluations. ``paste_known`` (off by default) copies the observed pixels into the result, which
    is right only for noise-free observations. ``corrections=0`` is the mask-guided ODE ablation.
    ``cuda_graph`` (opt-in) runs every transition after the first on static buffers and, on CUDA,
    replays one captured graph per transition kind (re-imposition, network and step together);
    the batch is fixed for the call and the pixels match the eager walk.
    """
    gens = as_generator_list(generator, y.shape[0])
    draw = PerImageNoise(gens, y.shape[1:], device=y.device, dtype=y.dtype)
    mask = mask.to(dtype=y.dtype)
    keep = 1.0 - mask
    x = draw()
    schedule = correction_schedule(steps, corrections)
    if cuda_graph:
        x = _walk_static(velocity, y, mask, x, schedule, draw, callback)
        return mask * y + keep * x if paste_known else x
    for i, (t, t_next) in enumerate(schedule):
        if t_next > t:
            if i > 0:
                x = mask * (t * y + (1.0 - t) * draw()) + keep * x
            x = x + (t_next - t) * velocity(x, tvec(t, x))
        else:
            x = t_next * one_step_denoiser(velocity, x, t) + (1.0 - t_next) * draw()
        if callback is not None:
            callback({"i": i, "t": t, "t_next": t_next, "x": x})
    if paste_known:
        x = mask * y + keep * x
    return x


class StaticTransitions:
    """Restora-Flow's two transition kinds over fixed buffers, optionally captured as CUDA graphs.

    The state ``x``, the noise and the coefficients (t, 1-t, t'-t, t', 1-t') live in buffers that
    every step overwrites, so one captured graph serves every transition of its kind. The first
    transition of each kind runs eagerly (on CUDA on a side stream, as the capture's warm-up),
    later ones replay the graph. Without ``capture`` the same steps run eagerly.
    """

    def __init__(self, velocity: Velocity, y: torch.Tensor, mask: torch.Tensor,
                 schedule: list[tuple[float, float]], capture: bool):
        self.velocity, self.y, self.mask, self.keep = velocity, y, mask, 1.0 - mask
        self.x = torch.empty_like(y)
        self.noise = torch.empty_like(y)
        coefs = [(t, 1.0 - t, t_next - t, t_next, 1.0 - t_next) for t, t_next in schedule]
        self.table = torch.tensor(coefs, dtype=y.dtype).to(y.device)
        self.kinds = ["up" if t_next > t else "down" for t, t_next in schedule]
        self.c = torch.empty(5, dtype=y.dtype, device=y.device)
        self.tvec = torch.empty(y.shape[0], dtype=y.dtype, device=y.device)
        self.capture = capture
        self.graphs: dict[str, torch.cuda.CUDAGraph] = {}
        self._pool = None

    def _tvec(self) -> torch.Tensor:
        # A contiguous (B,) time like the eager walk's, so compiled networks see the same input.
        self.tvec.copy_(self.c[0].expand(self.tvec.shape[0]))
        return self.tvec

    def _up(self) -> None:
        c = self.c
        x = self.mask * (c[0] * self.y + c[1] * self.noise) + self.keep * self.x
        self.x.copy_(x + c[2] * self.velocity(x, self._tvec()))

    def _down(self) -> None:
        c = self.c
        x1 = self.x + c[1] * self.velocity(self.x, self._tvec())
        self.x.copy_(c[3] * x1 + c[4] * self.noise)

    def step(self, i: int, noise: torch.Tensor) -> torch.Tensor:
        """Take transition ``i`` of the schedule with ``noise``; returns the state buffer."""
        self.c.copy_(self.table[i])
        self.noise.copy_(noise)
        kind = self.kinds[i]
        fn = self._up if kind == "up" else self._down
        if not self.capture:
            fn()
        elif kind in self.graphs:
            self.graphs[kind].replay()
        elif kind + "_warm" not in self.graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()
            torch.cuda.current_stream().wait_stream(side)
            self.graphs[kind + "_warm"] = None  # type: ignore[assignment]
        else:
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads (a worker preparing its next batch) may use CUDA.
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                fn()
            self._pool = graph.pool()
            self.graphs[kind] = graph
            graph.replay()
        return self.x


def _walk_static(velocity: Velocity, y: torch.Tensor, mask: torch.Tensor, x: torch.Tensor,
                 schedule: list[tuple[float, float]], draw: PerImageNoise,
                 callback: Callback | None) -> torch.Tensor:
    """``restora_flow``'s walk with every transition after the first on ``StaticTransitions``."""
    t, t_next = schedule[0]
    if t_next <= t:
        raise ValueError("a Restora-Flow schedule starts with an up-step")
    x = x + (t_next - t) * velocity(x, tvec(t, x))
    if callback is not None:
        callback({"i": 0, "t": t, "t_next": t_next, "x": x})
    static = StaticTransitions(velocity, y, mask, schedule, capture=y.is_cuda)
    static.x.copy_(x)
    for i in range(1, len(schedule)):
        out = static.step(i, draw())
        if callback is not None:
            t, t_next = schedule[i]
            callback({"i": i, "t": t, "t_next": t_next, "x": out.clone()})
    return static.x.clone()


def restora_flow_nfe(steps: int, corrections: int) -> int:
    """Network evaluations of ``restora_flow``: one per transition of the jump schedule."""
    return steps + 2 * corrections * (steps - 1)


def wants_cuda_graph(velocity: Velocity, y: torch.Tensor) -> bool:
    """Whether ``velocity`` was prepared with ``cuda_graph=True`` and ``y`` lives on a GPU."""
    runtime = runtime_of(velocity)
    return bool(runtime is not None and runtime.cuda_graph and y.is_cuda)


@dataclass(frozen=True)
class RestoraFlowParams:
    """Restora-Flow's parameters; the defaults are the box-inpainting setting."""

    steps: int = param(TASK_STEPS["box"], "grid size T: Euler steps of 1/T from t=0 to 1", ge=1)
    corrections: int = param(1, "trajectory corrections c after each step from t=2/T on", ge=0)
    paste_known: bool = param(False, "copy the observed pixels into the result (noise-free y only)")


def _sample(velocity, y, mask, p: RestoraFlowParams, noise, generator):
    return restora_flow(velocity, y, mask, steps=p.steps, corrections=p.corrections,
                        generator=generator, paste_known=p.paste_known,
                        cuda_graph=wants_cuda_graph(velocity, y))


ENTRY = Method(
    name="restora_flow",
    summary="mask-guided Euler steps, each followed by c predict-and-re-noise corrections",
    paper=PAPER,
    params=RestoraFlowParams,
    sample=_sample,
    nfe=lambda p, noise: restora_flow_nfe(p.steps, p.corrections),
    tasks=("inpaint", "box", "random", "superres", "outpaint"),
    task_defaults={**{task: {"steps": t} for task, t in TASK_STEPS.items()},
                   "outpaint": {"steps": TASK_STEPS["box"]}},
    sources={"defaults": TASK_SOURCE, "outpaint": BORROWED + TASK_SOURCE},
)
