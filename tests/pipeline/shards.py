"""WebDataset tar shards for tests, laid out as img2dataset writes them."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
from PIL import Image


def png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """An uncompressed tar holding ``members`` (name, bytes) in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def img2dataset_members(images: list[np.ndarray], shard: int = 0,
                        masks: list[np.ndarray | None] | None = None) -> list[tuple[str, bytes]]:
    """img2dataset's members per sample: ``key.png``, ``key.txt``, ``key.json`` (+ ``key.mask.png``)."""
    members = []
    for i, image in enumerate(images):
        key = f"{shard:05d}{i:04d}"
        meta = {"url": f"https://example.com/{key}.png", "key": key, "status": "success",
                "caption": f"sample {i}", "width": image.shape[1], "height": image.shape[0]}
        members.append((f"{key}.png", png(image)))
        if masks is not None and masks[i] is not None:
            members.append((f"{key}.mask.png", png(masks[i])))
        members.append((f"{key}.txt", meta["caption"].encode()))
        members.append((f"{key}.json", json.dumps(meta).encode()))
    return members
