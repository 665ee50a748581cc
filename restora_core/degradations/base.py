"""What a degradation (task) is: one registry entry with its typed parameters, its observation
paths, its input geometry and its side inputs.

Torch-free at import: the job spec, the readers and the I/O stages read the entries' metadata
in processes that never import torch; the observation paths import it when they run.
Sizes are ``(height, width)``; ``size`` is always the prior's (the canvas the sampler restores).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..params import ParamInfo, as_dict, build_params, defaults_of, param_info

if TYPE_CHECKING:
    import torch

    from ..noise import Generators

Size = tuple[int, int]
# Measurement noise std (on the [-1, 1] scale) of simulated observations of non-denoising tasks,
# and the noise a sampler assumes on known pixels when none is given.
DEFAULT_SIGMA_Y = 0.01


@dataclass(frozen=True)
class Observation:
    """What a sampler restores from: ``y`` (B, C, H, W), ``mask`` (B, 1, H, W) or None, noise level."""

    y: torch.Tensor
    mask: torch.Tensor | None
    task: str
    sigma: float | None = None


# (params, observed image (B, C, h, w), the prior's size or None, generator, side-input mask)
FromObserved = Callable[[Any, "torch.Tensor", "Size | None", "Generators | None",
                         "torch.Tensor | None"], Observation]
# (params, clean reference (B, C, H, W) at the prior's size, generator, side-input mask, sigma_y)
Simulate = Callable[[Any, "torch.Tensor", "Generators", "torch.Tensor | None", float], Observation]
# (params, clean or observed image (B, C, H, W) on the canvas, generator, side-input mask) -> mask
CanvasMask = Callable[[Any, "torch.Tensor", "Generators | None", "torch.Tensor | None"],
                      "torch.Tensor"]


def _same_size(params: Any, size: Size) -> Size:
    return size


def _any_size(params: Any, size: Size) -> None:
    return None


@dataclass(frozen=True)
class Degradation:
    """A registry entry: everything the API, the pipeline and the CLI need to know of a task.

    ``params`` is a frozen dataclass of ``params.param`` fields (the only place its defaults
    live). ``simulate`` degrades a clean reference at the prior's size and adds measurement noise
    (evaluation); ``from_observed`` turns an already degraded input into the observation
    (production). ``input_size(params, size)`` is the observed input's (height, width) for a
    prior of ``size``, ``geometry`` says the same in words; ``check_size(params, size)`` raises
    ValueError naming the numbers when the pair is impossible. ``side_input`` is ``"mask"`` for a
    task that reads a mask per image, else None. ``noise_param`` names the parameter holding the
    noise std of a denoising task (every pixel observed, noisy); None for the others.
    ``whole_image``: every pixel of the output is restored (denoising, super-resolution), so an
    image larger than the prior is restored as one tiled window; False: only the missing pixels
    are, so it is restored in windows around them and its known pixels are kept exactly.
    """

    name: str
    summary: str
    params: type
    from_observed: FromObserved
    simulate: Simulate
    geometry: str = "the prior's size"
    input_size: Callable[[Any, Size], Size] = _same_size
    check_size: Callable[[Any, Size], None] = _any_size
    side_input: str | None = None
    noise_param: str | None = None
    whole_image: bool = False

    def __post_init__(self) -> None:
        if self.side_input not in (None, "mask"):
            raise ValueError(f"task '{self.name}': side_input must be 'mask' or None")
        self.make_params()  # a bad default fails at import

    @property
    def denoising(self) -> bool:
        """Whether this is a denoising task: every pixel observed with noise ``noise_param``."""
        return self.noise_param is not None

    def param_info(self) -> list[ParamInfo]:
        """The parameters with their types, defaults, meaning and range."""
        return param_info(self.params)

    def defaults(self) -> dict[str, Any]:
        """The parameter defaults (JSON values)."""
        return as_dict(self.params(**defaults_of(self.params)))

    def make_params(self, overrides: Mapping[str, Any] | None = None) -> Any:
        """Validated parameters: the defaults updated with ``overrides`` (None = not given).
        ValueError naming the parameter for an unknown name, a wrong type or a bad value."""
        return build_params(self.params, defaults_of(self.params), overrides,
                            f"task '{self.name}'")

    def resolved(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every parameter as it will run (defaults filled in), as JSON values."""
        return as_dict(self.make_params(overrides))

    def default_noise(self) -> float:
        """The observation noise std a run assumes when none is given."""
        return float(self.defaults()[self.noise_param]) if self.denoising else DEFAULT_SIGMA_Y

    def input_for(self, size: Size, overrides: Mapping[str, Any] | None = None) -> Size:
        """The observed input's (height, width) for a prior of ``size`` (checked first)."""
        params = self.make_params(overrides)
        self.check_size(params, size)
        return self.input_size(params, size)


def on_canvas(canvas_mask: CanvasMask) -> tuple[FromObserved, Simulate]:
    """The observation paths of a task whose input is the whole canvas and whose observation is
    a mask over it: the input times the mask; simulated, the clean pixels plus noise sigma_y
    times the mask (the mask is drawn before the noise, from the same generator)."""

    def from_observed(params, image, size, generator, mask):
        m = canvas_mask(params, image, generator, mask).to(image.device)
        return Observation(image * m, m, "")

    return from_observed, masked_simulation(canvas_mask)


def masked_simulation(canvas_mask: CanvasMask) -> Simulate:
    """A ``simulate`` for a task whose observation is ``canvas_mask`` over the prior's grid."""

    def simulate(params, clean, generator, mask, sigma_y):
        from .operators import add_noise

        m = canvas_mask(params, clean, generator, mask).to(clean.device)
        return Observation(m * add_noise(clean, sigma_y, generator), m, "")

    return simulate


