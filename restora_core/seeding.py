"""Seeds derived from (run seed, image id), so a retry, another batch size or another worker
restores an image with the same noise."""

from __future__ import annotations

import hashlib


def image_seed(run_seed: int, image_id: str | int) -> int:
    """A 63-bit seed for one image, derived from the run seed and the image's id."""
    digest = hashlib.sha256(f"{int(run_seed)}\x00{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def sample_seed(image_seed_: int, k: int) -> int:
    """The seed of sample ``k`` of an image: sample 0 uses the image's own seed (so one sample is
    exactly a plain restoration), later ones a seed derived from (image seed, k)."""
    if k < 0:
        raise ValueError(f"sample index must be >= 0, got {k}")
    return int(image_seed_) if k == 0 else image_seed(image_seed_, f"sample:{k}")
