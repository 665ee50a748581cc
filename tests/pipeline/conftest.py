"""Fixtures for the pipeline unit tests: tiny images, a tiny prior, a quiet environment."""

from __future__ import annotations

import io
import os

for _key, _value in {"RAY_USAGE_STATS_ENABLED": "0",
                     "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "DO_NOT_TRACK": "1",
                     "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_key, _value)

import numpy as np
import pytest
from PIL import Image


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    """Encode an array as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_prior_path(tmp_path_factory) -> str:
    """A random 16x16 gray UNet saved as .safetensors (fast; the pixels are not the point)."""
    import torch

    from restora_core import save_prior
    from restora_core.models import build_model

    torch.manual_seed(0)
    cfg = {"input_channels": 1, "input_height": 16, "ch": 32, "ch_mult": (1, 2),
           "num_res_blocks": 1, "attn_resolutions": ()}
    path = str(tmp_path_factory.mktemp("prior") / "tiny16.safetensors")
    save_prior(build_model(cfg), {"architecture": cfg, "name": "tiny16"}, path)
    return path


def png_job(tmp_path, prior_path: str, count: int, *, seed: int, **fields):
    """``count`` random 16x16 gray PNGs under ``tmp_path/in``, a box spec over them (plus
    ``fields``) and its CPU RunInfo: (spec, info, batch items for ``load_batch``)."""
    from restora_core import load_prior
    from tasks.spec import RunInfo, parse_spec

    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        path = tmp_path / "in" / f"im{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(png_bytes(rng.integers(0, 256, (16, 16), dtype=np.uint8)))
        items.append({"id": path.stem, "source": str(path)})
    spec = parse_spec({"input_uri": str(tmp_path / "in"), "output_uri": str(tmp_path / "out"),
                       "task": "box", "prior": prior_path, **fields})
    model_id = load_prior(prior_path).model_id
    info = RunInfo(model_id, spec.config_hash(model_id, "cpu", "fp32"), 1, 16, "cpu", "fp32")
    return spec, info, items
