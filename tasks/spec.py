"""The job spec: one typed, validated description of a dataset-restoration run."""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from restora_core.choices import ESTIMATES, Precision
from restora_core.degradations import TASKS, get_task

from .credentials import refuse_credentials
from .readers import reader_names
from .writers import LEGACY_FORMAT, writer_names

Task = Literal[TASKS]  # the degradation registry's tasks (`restora tasks`)
Estimate = Literal[ESTIMATES]
SizePolicy = Literal["tile", "error", "resize", "center-crop"]
InputKind = Literal["observed", "clean"]


class JobSpecError(ValueError):
    """A job spec that cannot run; the message says which field and why."""


# The spec in parts: each stage receives only the part it reads (a reader the input part, a
# writer the output part, the worker the restoration part, the pool the runtime part), so a
# stage's signature says what it depends on. Each field and its default is declared once, in
# its part; the flat JobSpec below is their union, the format users write (flags, --spec files,
# the flow's parameter).


class _Part(BaseModel):
    # hide_input_in_errors: a refused credential must not come back inside the error's text.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class _Stored(_Part):
    """A part that opens storage: the one ``storage_options`` every part shares."""

    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options (endpoint_url, anon, profile...); "
        "never credentials, which come from the environment (docs/security.md)")

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The spec is the flow's parameter: Prefect stores and shows it, so no secret may ride in it.
        refuse_credentials(value)
        return value


def _location(value: str) -> str:
    """A URI with no trailing '/'; ValueError when blank."""
    if not value.strip():
        raise ValueError("must not be empty")
    return value.rstrip("/") if len(value) > 1 else value


def _registered(value: str, names: tuple[str, ...], what: str) -> str:
    """``value`` when it is ``auto`` or one of the registered ``names``; ValueError otherwise."""
    if value != "auto" and value not in names:
        raise ValueError(f"unknown {what} format '{value}'; expected auto or one of "
                         f"{', '.join(names)}")
    return value


class InputSpec(_Stored):
    """What the readers and the decoder need: where the images are, how they are stored, how
    many a read request takes, and the caps that turn an oversized image into an error row."""

    input_uri: str = Field(description="folder/prefix of images, or of Parquet shards (fsspec URI)")
    input_format: str = Field("auto", description="auto, or a format registered in tasks.readers")
    masks_uri: str | None = Field(None, description="prefix of masks with the images' relative paths")
    id_column: str = "id"
    image_column: str = "image"
    mask_column: str = "mask"
    shard_size: int = Field(256, ge=1, description="images per shard for folder inputs")
    read_batch: int = Field(16, ge=1, le=4096, description="images per read request (one Ray "
                            "read task, one write task)")
    # Here, not with the restoration: the decoder enforces it on the bytes a reader returns,
    # before any restoration setting applies (the training-set builder reads with it too).
    max_pixels: int = Field(50_000_000, ge=1, description="decompression-bomb cap per image")
    max_row_group_bytes: int = Field(
        1 << 30, ge=1, description="cap on the uncompressed bytes a Parquet row group declares "
        "for the columns read; rows of a larger group are error rows")

    @field_validator("input_uri")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _location(value)

    @field_validator("input_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        return _registered(value, reader_names(), "input")

    def row_limits(self) -> dict[str, Any]:
        """The input settings that decide which rows become error rows (so the config hash
        covers them): ``max_pixels``, and ``max_row_group_bytes`` only away from its default,
        which keeps the hashes of runs from before it existed."""
        limits: dict[str, Any] = {"max_pixels": self.max_pixels}
        if self.max_row_group_bytes != InputSpec.model_fields["max_row_group_bytes"].default:
            limits["max_row_group_bytes"] = self.max_row_group_bytes
        return limits


class OutputSpec(_Stored):
    """What the writers and the commit need: where results go, in which format, and which
    side files are stored beside them."""

    output_uri: str = Field(description="folder/prefix for images/ or data/, manifests/, "
                            "plan/, summary.json")
    output_format: str = Field("auto", description="auto (the input's format), or a format "
                               "registered in tasks.writers")
    save_inputs: bool = False
    save_uncertainty: bool = Field(False, description="write each image's per-pixel std as a "
                                   "16-bit PNG under uncertainty/ (needs samples > 1)")

    @field_validator("output_uri")
    @classmethod
    def _output_not_blank(cls, value: str) -> str:
        return _location(value)

    @field_validator("output_format")
    @classmethod
    def _known_output_format(cls, value: str) -> str:
        return _registered(value, writer_names(), "output")


class RestorationSpec(_Stored):
    """What decides the restored pixels and the manifest rows: the task, the method and its
    parameters, the seed, the prior, how an image is fitted to it, and the samples per image;
    plus ``network_batch``, the rows per network pass, which changes no pixel. The config hash
    is derived from this part (``config_hash``); ``storage_options`` read the prior."""

    task: Task = "inpaint"
    task_params: dict[str, Any] = Field(
        default_factory=dict, description="the task's parameters (see `restora tasks`); unset "
        "ones take the task's defaults")
    method: str = Field("restora_flow", description="a method of `restora methods`")
    method_params: dict[str, Any] = Field(
        default_factory=dict, description="the method's parameters (see `restora methods`); "
        "unset ones take the task's published defaults")
    steps: int | None = Field(None, ge=1, le=10_000, description="shorthand for method_params.steps")
    corrections: int | None = Field(None, ge=0, le=100,
                                    description="shorthand for method_params.corrections")
    seed: int = Field(0, ge=0)
    samples: int = Field(1, ge=1, le=1024, description="samples per image; K > 1 writes their "
                         "per-pixel estimate and records their spread (uncertainty_*, flag)")
    estimate: Estimate = Field("mean", description="what the output is for samples > 1: the "
                               "per-pixel mean, median, or the first sample")
    uncertainty_threshold: float | None = Field(
        None, gt=0, description="uncertainty_mean above which a row's flag is 'uncertain' "
        "(needs samples > 1; none: flag is null)")
    prior: str = "digits32"
    prior_preset: str | None = None
    # Here, not with the input: it decides how an image is fitted to the prior's canvas (and
    # so the restored pixels), and a size the prior cannot take is a restoration question.
    size_policy: SizePolicy = Field(
        "tile", description="images whose size differs from the task's input size for the prior: "
        "tile restores them at their own size in prior-sized tiles (docs/tiling.md); error "
        "refuses them; resize and center-crop map them onto the prior's grid")
    inputs: InputKind = Field(
        "observed", description="observed: images are already degraded (production); clean: "
        "degrade them synthetically and score against them (psnr, ssim, psnr_hole)")
    lpips_weights: str | None = Field(
        None, description="LPIPS AlexNet .safetensors (make weights); scores lpips when inputs are clean")
    network_batch: int = Field(16, ge=1, le=4096, description="rows per network pass (K samples "
                               "of an image are K rows); changes no pixel")

    @field_validator("task_params", "method_params")
    @classmethod
    def _json_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be JSON values: {exc}") from exc
        return value

    @field_validator("task_params")
    @classmethod
    def _task_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if info.data.get("task") in TASKS:  # an unknown task is reported on its own
            get_task(info.data["task"]).make_params(value)
        return value

    @model_validator(mode="after")
    def _runnable(self) -> RestorationSpec:
        # The method registry imports torch, so it is imported where validation needs it: a spec
        # unpickled in an I/O worker is never validated again and never loads it.
        from restora_core.samplers import METHODS, get_method, methods_for_task

        if self.method not in METHODS:
            raise ValueError(f"method: unknown method '{self.method}'; expected one of {METHODS}")
        if self.task not in get_method(self.method).tasks:
            raise ValueError(f"method '{self.method}' does not do task '{self.task}'; methods "
                             f"for '{self.task}': {list(methods_for_task(self.task))}")
        self.resolved_params  # noqa: B018 - validates the parameters against the method
        if self.samples > 1 and not get_method(self.method).stochastic:
            raise ValueError(f"samples: method '{self.method}' is deterministic, so "
                             f"{self.samples} samples would be the same image; use samples 1 or "
                             f"a stochastic method for '{self.task}'")
        if self.samples == 1 and self.uncertainty_threshold is not None:
            raise ValueError("samples: save_uncertainty and uncertainty_threshold need samples > 1")
        return self

    @property
    def requested_params(self) -> dict[str, Any]:
        """The method parameters the spec sets: ``method_params`` plus the shorthands."""
        params = dict(self.method_params)
        for name in ("steps", "corrections"):
            value = getattr(self, name)
            if value is None:
                continue
            if params.get(name, value) != value:
                raise ValueError(f"{name}: {value} contradicts method_params.{name} = {params[name]}")
            params[name] = value
        return params

    @property
    def resolved_params(self) -> dict[str, Any]:
        """Every parameter of the method as it will run: the task's defaults plus the spec's."""
        from restora_core.samplers import get_method, params_dict

        try:
            chosen = get_method(self.method).make_params(self.task, self.requested_params)
        except ValueError as exc:
            raise ValueError(f"method_params: {exc}") from None
        return params_dict(chosen)

    @property
    def resolved_task_params(self) -> dict[str, Any]:
        """Every parameter of the task as it will run: its defaults plus ``task_params``."""
        return get_task(self.task).resolved(self.task_params)

    @property
    def uses_references(self) -> bool:
        """Whether inputs are clean references the restored images are scored against."""
        return self.inputs == "clean"


class RuntimeSpec(_Part):
    """How the run is spread over the cluster: actors, their resources, what is in flight, and
    the network precision asked for (``RunInfo.precision`` is what it resolved to)."""

    precision: Precision = Field(
        "auto", description="network precision: auto = the device's entry in "
        "restora_core.runtime.DEVICE_DEFAULTS; bf16w = bf16 weights, fp32 GroupNorm")
    num_actors: int = Field(1, ge=1)
    cpus_per_actor: float = Field(0.5, gt=0)
    gpus_per_actor: float | None = Field(None, ge=0, description="None: 1 if the cluster has GPUs")
    max_inflight_batches: int = Field(4, ge=1, description="per shard; bounds memory")
    max_concurrent_shards: int = Field(2, ge=1)


# Restoration fields that change neither pixels nor rows, so they stay out of the config hash:
# the rows per network pass (each image's noise comes from image_seed(seed, id)), where the
# prior is read from, and the shorthands (they enter resolved, inside method_params). Any
# other restoration field enters the hash: a new one that should keep earlier runs' hashes is
# hashed only away from its default (as InputSpec.row_limits does for max_row_group_bytes).
_UNHASHED = ("network_batch", "storage_options", "steps", "corrections")
# Only with several samples per image: one sample restores the same pixels as before they existed.
_SAMPLING_FIELDS = ("samples", "estimate", "uncertainty_threshold")


def config_hash(restoration: RestorationSpec, source: InputSpec, model_id: str, device: str,
                precision: str, output_format: str = LEGACY_FORMAT) -> str:
    """sha256 (16 hex) of what changes results: every restoration field but ``_UNHASHED`` (the
    method's and the task's parameters resolved, so changing a published default invalidates
    committed shards), the input's row limits (``InputSpec.row_limits``), the prior's weights
    hash, the device kind the actors run on (cpu/cuda) and the precision ``auto`` resolved to
    there: a CPU rerun of a GPU job (fp32 vs bf16 pixels) must not take the GPU's shards as
    done. The output format enters as resolved (it changes every row's output_uri), and only
    away from image files, the layout of every run before formats existed. Runtime fields and
    read batching never enter."""
    skipped = _UNHASHED + (() if restoration.samples > 1 else _SAMPLING_FIELDS)
    payload: dict[str, Any] = {name: getattr(restoration, name)
                               for name in RestorationSpec.model_fields if name not in skipped}
    payload.update(method_params=restoration.resolved_params, model_id=model_id, device=device,
                   precision=precision, task_params=restoration.resolved_task_params,
                   **source.row_limits())
    if output_format != LEGACY_FORMAT:
        payload["output_format"] = output_format
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _part(cls: type[_Part], spec: BaseModel) -> Any:
    # The flat spec was validated as a whole: its fields build the part without validating again.
    return cls.model_construct(**{name: getattr(spec, name) for name in cls.model_fields})


class JobSpec(RuntimeSpec, RestorationSpec, OutputSpec, InputSpec):
    """Everything a restoration run needs, flat as users write it; validated once at the edge
    (CLI, deployment, test). Stages take its parts: ``.input``, ``.output``, ``.restoration``,
    ``.runtime``."""

    batch_size: int | None = Field(
        None, ge=1, le=4096, exclude=True, deprecated="batch_size sets both read_batch and "
        "network_batch; set those instead",
        description="deprecated: sets read_batch and network_batch where they are not given")

    @model_validator(mode="before")
    @classmethod
    def _batch_size_alias(cls, data: Any) -> Any:
        # Old spec files and commands keep working: batch_size meant both batch sizes.
        if isinstance(data, dict) and data.get("batch_size") is not None:
            data = {"read_batch": data["batch_size"], "network_batch": data["batch_size"], **data}
        return data

    @model_validator(mode="after")
    def _coherent(self) -> JobSpec:
        if self.masks_uri and get_task(self.task).side_input != "mask":
            users = [name for name in TASKS if get_task(name).side_input == "mask"]
            raise ValueError(f"masks_uri is only used by the tasks that take a mask {users}, "
                             f"not '{self.task}'")
        if self.samples == 1 and self.save_uncertainty:
            raise ValueError("samples: save_uncertainty and uncertainty_threshold need samples > 1")
        if self.input_uri == self.output_uri:
            raise ValueError("output_uri must differ from input_uri")
        return self

    @property
    def input(self) -> InputSpec:
        """The readers' and the decoder's part."""
        return _part(InputSpec, self)

    @property
    def output(self) -> OutputSpec:
        """The writers' and the commit's part."""
        return _part(OutputSpec, self)

    @property
    def restoration(self) -> RestorationSpec:
        """The worker's part, from which the config hash is derived."""
        return _part(RestorationSpec, self)

    @property
    def runtime(self) -> RuntimeSpec:
        """The actor pool's and the shard scheduler's part."""
        return _part(RuntimeSpec, self)

    def config_hash(self, model_id: str, device: str, precision: str,
                    output_format: str = LEGACY_FORMAT) -> str:
        """``config_hash`` of this spec's restoration and input parts."""
        return config_hash(self.restoration, self.input, model_id, device, precision, output_format)


def field_choices(name: str) -> list[str]:
    """The allowed values of a JobSpec field typed as a Literal (for help texts and errors)."""
    return [str(v) for v in typing.get_args(JobSpec.model_fields[name].annotation)]


def parse_spec(data: dict[str, Any]) -> JobSpec:
    """Build a JobSpec, turning pydantic's report into one JobSpecError line per problem."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "spec"
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        raise JobSpecError("invalid job spec: " + "; ".join(problems)) from None


@dataclass(frozen=True)
class RunInfo:
    """What validating a spec resolved: the prior's identity and shape, the device kind the
    actors run on with the precision resolved for it, and the config hash over all of them."""

    model_id: str
    config_hash: str
    channels: int
    resolution: int
    device: str
    precision: str
    # The output lease generation this run holds (tasks.lease); image writes and the shard's
    # commit stop when a newer one exists. None outside a flow run (no lease to check).
    lease_generation: int | None = None
    # The output format as resolved for the run's input (tasks.writers.resolve_output_format).
    output_format: str = LEGACY_FORMAT

    def writing(self, spec: JobSpec, output_format: str) -> RunInfo:
        """This RunInfo for a run that writes ``output_format`` (its config hash follows)."""
        return replace(self, output_format=output_format, config_hash=spec.config_hash(
            self.model_id, self.device, self.precision, output_format))

    @property
    def prior_size(self) -> tuple[int, int]:
        """The prior's (height, width): the canvas every observation is built on."""
        return self.resolution, self.resolution

    def input_size(self, restoration: RestorationSpec,
                   params: dict[str, Any] | None = None) -> tuple[int, int]:
        """(height, width) inputs are decoded to: the task's input geometry for the prior when
        inputs are observed (superres: 1/factor, outpaint: minus the pads), the prior's size
        for clean references. ``params`` are a row's task parameters (``task_params`` when
        None); ValueError when they do not fit the prior."""
        chosen = restoration.task_params if params is None else params
        size = get_task(restoration.task).input_for(self.prior_size, chosen)
        return size if restoration.inputs == "observed" else self.prior_size
