"""The names the engine accepts for its options, importable without torch.

The job spec validates against these in processes that only read and write images (Ray's I/O
workers), which should not pay torch's import in time and memory.
"""

from __future__ import annotations

from typing import Literal

ESTIMATES = ("mean", "sample", "median")  # what ``restore(..., samples=K).images`` holds
Precision = Literal["auto", "fp32", "tf32", "bf16", "bf16w"]
CompileMode = Literal["auto", "off", "default", "max-autotune"]
PRECISIONS = ("fp32", "tf32", "bf16", "bf16w")
COMPILE_MODES = ("off", "default", "max-autotune")
