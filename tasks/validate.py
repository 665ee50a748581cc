"""Fail fast: check a job spec against the world (storage, prior) before any work starts."""

from __future__ import annotations

from typing import Any

from restora_core.degradations import get_task

from .spec import JobSpec, JobSpecError, RunInfo
from .storage import is_object_store, is_within, open_fs


def _check_location(uri: str, field: str, storage_options: dict[str, Any], must_exist: bool) -> None:
    try:
        fs, path = open_fs(uri, storage_options)
    except (ValueError, ImportError) as exc:
        raise JobSpecError(f"{field}: cannot open '{uri}': {exc}") from None
    try:
        if is_object_store(fs):
            bucket = path.split("/", 1)[0]
            if not fs.exists(bucket):
                raise JobSpecError(f"{field}: bucket '{bucket}' of '{uri}' does not exist")
        # An output need not exist yet, but looking at it shows a prefix we may not read.
        if not fs.exists(path) and must_exist:
            raise JobSpecError(f"{field}: '{uri}' does not exist")
    except JobSpecError:
        raise
    except PermissionError as exc:
        raise JobSpecError(f"{field}: access denied to '{uri}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any storage failure is a spec problem here
        raise JobSpecError(f"{field}: cannot reach '{uri}': {type(exc).__name__}: {exc}") from None


def _check_output_outside_input(spec: JobSpec) -> None:
    """An output under the input would be read back as input by every later run."""
    if is_within(spec.output_uri, spec.input_uri):
        raise JobSpecError(f"output_uri: '{spec.output_uri}' lies inside the input "
                           f"'{spec.input_uri}'; later runs would read its manifests and images "
                           "as input; choose an output outside the input")


def validate_job(spec: JobSpec, device: str = "cpu") -> RunInfo:
    """Check storage and prior (the spec checked the method); return the RunInfo resolved for
    actors on ``device`` (``cpu`` or ``cuda``: ``tasks.pool.actor_device``) or one JobSpecError."""
    from restora_core import load_prior
    from restora_core.runtime import resolve_precision

    _check_output_outside_input(spec)
    _check_location(spec.input_uri, "input_uri", spec.storage_options, must_exist=True)
    if spec.masks_uri:
        _check_location(spec.masks_uri, "masks_uri", spec.storage_options, must_exist=True)
    _check_location(spec.output_uri, "output_uri", spec.storage_options, must_exist=False)
    try:
        prior = load_prior(spec.prior, preset=spec.prior_preset,
                           storage_options=spec.storage_options)
    except Exception as exc:  # noqa: BLE001 - report any load failure as one line
        raise JobSpecError(f"prior: cannot load '{spec.prior}': {type(exc).__name__}: {exc}") from None
    try:
        get_task(spec.task).input_for((prior.resolution, prior.resolution), spec.task_params)
    except ValueError as exc:
        raise JobSpecError(f"task_params: {exc}") from None
    if spec.lpips_weights:
        from restora_core.metrics import lpips_available

        if not lpips_available(spec.lpips_weights):
            raise JobSpecError(f"lpips_weights: no LPIPS weights at '{spec.lpips_weights}' "
                               "(build them with `make weights`)")
    import torch

    precision = resolve_precision(spec.precision, torch.device(device))
    return RunInfo(model_id=prior.model_id, channels=prior.channels, resolution=prior.resolution,
                   device=device, precision=precision,
                   config_hash=spec.config_hash(prior.model_id, device, precision))
