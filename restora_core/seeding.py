"""Seeds derived from (run seed, image id), so a retry, another batch size or another worker
restores an image with the same noise."""

from __future__ import annotations

import hashlib


def image_seed(run_seed: int, image_id: str | int) -> int:
    """A 63-bit seed for one image, derived from the run seed and the image's id."""
    digest = hashlib.sha256(f"{int(run_seed)}\x00{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
