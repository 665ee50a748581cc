"""Connect to Ray: reuse a running connection, join RAY_ADDRESS/--ray-address, or start locally."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray

# Ray workers must import `tasks` and `restora_core` even when the project is not pip-installed.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])


@contextmanager
def ray_connection(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Use the Ray this process is connected to, else connect (``address``, then RAY_ADDRESS via
    ray.init's own lookup, else a new local instance); shut down only what was started here."""
    if ray.is_initialized():
        yield
        return
    runtime_env = {"env_vars": {"PYTHONPATH": _REPO_ROOT}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
