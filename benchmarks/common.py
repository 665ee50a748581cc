"""What every benchmark section shares: the run context (date, machine, versions, command), the
priors under test (shipped weights or a same-architecture random stand-in), timing, and writing
one section's rows as Parquet plus a markdown table.

Timings are wall-clock on a shared machine: sections measure ratios side by side in one run, and
nothing here is a pass/fail test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from restora_core import Prior, load_prior
from restora_core.models import PRESETS, architecture_config, build_model
from restora_core.priors import shipped_prior_path
from restora_core.storage import write_uri_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent

# Architectures of the shipped priors, as in their training recipes
# (restora_core/training/config.py SHIPPED_RECIPES); used for random-weight stand-ins until the
# trained weights exist.
SHIPPED_ARCH = {
    "digits32": {"input_channels": 1, "input_height": 32, "ch": 32, "ch_mult": (1, 2, 2),
                     "num_res_blocks": 2, "attn_resolutions": (16,), "dropout": 0.0},
    "photo32": {"input_channels": 3, "input_height": 32, "ch": 64, "ch_mult": (1, 2, 2),
                    "num_res_blocks": 2, "attn_resolutions": (16,), "dropout": 0.0},
}


@dataclasses.dataclass
class Context:
    """One benchmark run: where results go, how big it is, and what reproduces it."""

    out_dir: Path
    quick: bool
    command: str
    threads: int
    models: tuple[str, ...] = ("digits32", "celeba128")
    started: float = dataclasses.field(default_factory=time.perf_counter)
    # taken when the run starts: a header written at the end would otherwise show the load
    # the run itself made
    load_at_start: str = dataclasses.field(default_factory=lambda: load_average())

    def machine(self) -> dict[str, Any]:
        """Date, machine, thread count and library versions for a table header."""
        return {**machine_info(self.threads), "load_average_at_start": self.load_at_start}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: Path = REPO_ROOT) -> str:
    """``repo``'s short HEAD commit, ``+dirty`` when tracked files changed ("unknown" without git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=repo,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               check=False, cwd=repo, capture_output=True, text=True,
                               timeout=10)
        if not out.stdout.strip():
            return "unknown"
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages now ("n/a" where the system has none)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info(threads: int) -> dict[str, Any]:
    """Date, CPU, cores, torch threads, load average and versions of the libraries measured."""
    import pyarrow

    load = load_average()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} cores",
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": threads,
        "load_average_at_start": load,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "git_commit": git_commit(),
    }


def context_from_args(module: str, argv: list[str], args: Any, **extra: Any) -> Context:
    """A benchmark CLI's run context from its ``--out``, ``--quick`` and ``--threads`` (set here;
    a CLI without one of them gets False / 1 torch thread): results go to
    benchmarks/results[/quick] unless ``--out``; the command is the exact one."""
    import shlex

    quick, threads = getattr(args, "quick", False), getattr(args, "threads", 1)
    out = Path(args.out) if args.out else REPO_ROOT / "benchmarks" / "results" / (
        "quick" if quick else "")
    set_threads(threads)
    command = f"python -m {module}" + (" " + shlex.join(argv) if argv else "")
    return Context(out_dir=out, quick=quick, command=command, threads=threads, **extra)


def checkpoint_path(folder: Path, prefix: str, key: Any) -> Path:
    """``folder/<prefix>_<hash>.pt``: a checkpoint file keyed by everything that changes its
    numbers (the hash is of ``repr(key)``)."""
    import hashlib

    return folder / f"{prefix}_{hashlib.sha256(repr(key).encode()).hexdigest()[:12]}.pt"


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """A finished part saved by ``save_checkpoint`` (None when there is none)."""
    return torch.load(path, weights_only=True) if path.exists() else None


def save_checkpoint(path: Path, data: dict[str, Any]) -> None:
    """Save a finished part whole or not at all (a cut-off run leaves no half file)."""
    buf = io.BytesIO()
    torch.save(data, buf)
    write_uri_atomic(str(path), buf.getvalue())


def set_threads(threads: int) -> None:
    """Pin torch's intra-op threads (on a shared 2-core box, more threads than free cores
    oversubscribe and slow every forward by an order of magnitude)."""
    torch.set_num_threads(max(1, int(threads)))


@dataclasses.dataclass(frozen=True)
class PriorUnderTest:
    """A prior to benchmark and how it was obtained (shipped weights or a random stand-in)."""

    name: str
    prior: Prior
    weights: str  # "shipped <sha12>" or "random-weight stand-in"

    @property
    def trained(self) -> bool:
        """True when the weights are trained (quality numbers mean something)."""
        return self.weights.startswith("shipped")


def random_prior(name: str, seed: int = 0) -> Prior:
    """A prior with ``name``'s architecture (shipped prior or preset) and random weights."""
    arch = SHIPPED_ARCH.get(name) or PRESETS.get(name)
    if arch is None:
        raise ValueError(f"no architecture known for '{name}'")
    torch.manual_seed(seed)
    model = build_model(dict(arch)).eval().requires_grad_(False)
    card = {"architecture": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in architecture_config(dict(arch)).items()},
            "value_range": [-1.0, 1.0], "name": f"{name} (random weights)"}
    return Prior(velocity=model, card=card, model_id=f"random-{name}-seed{seed}",
                 source="random")


def prior_under_test(name: str, *, allow_shipped: bool = True) -> PriorUnderTest:
    """``load_prior(name)`` when its shipped weights exist, else a random-weight stand-in."""
    if allow_shipped and name in SHIPPED_ARCH and shipped_prior_path(name).exists():
        prior = load_prior(name)
        return PriorUnderTest(name, prior, f"shipped {prior.model_id[:12]}")
    return PriorUnderTest(name, random_prior(name), "random-weight stand-in")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def eval_images(name: str, indices: list[int] | None = None) -> torch.Tensor:
    """A shipped evaluation set as (N, C, 32, 32) float32 in [-1, 1]."""
    from restora_core.datasets import load_eval_set

    images = load_eval_set(name)["images"]
    if indices is not None:
        images = images[indices]
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)
    return x.permute(0, 3, 1, 2).contiguous()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if not np.isfinite(value):
            return str(value)
        if abs(value) >= 100:
            return f"{value:.1f}"
        if abs(value) >= 1:
            return f"{value:.3g}" if abs(value) < 10 else f"{value:.2f}"
        return f"{value:.3g}"
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Rows as a markdown table (columns: the union of keys in order, unless given)."""
    if not rows:
        return "_no rows_\n"
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_section(ctx: Context, stem: str, title: str, rows: list[dict[str, Any]], *,
                  notes: list[str] | None = None, extra_tables: dict[str, list[dict]] | None = None,
                  columns: list[str] | None = None, seconds: float | None = None,
                  body: str = "") -> Path:
    """Write ``<stem>.parquet`` (``rows``) and ``<stem>.md`` (header, table, notes) to ``out_dir``."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    info = ctx.machine()
    if rows:
        table = pa.Table.from_pylist(rows)
        meta = {b"restora.benchmark": stem.encode(), b"restora.command": ctx.command.encode(),
                **{f"restora.{k}".encode(): str(v).encode() for k, v in info.items()}}
        pq.write_table(table.replace_schema_metadata(meta), ctx.out_dir / f"{stem}.parquet")
    lines = [f"# {title}", "",
             f"- command: `{ctx.command}`",
             *(f"- {k}: {v}" for k, v in info.items()),
             f"- quick mode: {ctx.quick}"]
    if seconds is not None:
        lines.append(f"- section wall time: {seconds:.0f} s")
    lines += ["", markdown_table(rows, columns)]
    for name, extra in (extra_tables or {}).items():
        lines += [f"### {name}", "", markdown_table(extra)]
    if body:
        lines += [body, ""]
    if notes:
        lines += ["Notes:", "", *(f"- {n}" for n in notes), ""]
    path = ctx.out_dir / f"{stem}.md"
    path.write_text("\n".join(lines))
    return path
