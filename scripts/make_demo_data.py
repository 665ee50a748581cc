"""Write the bundled sample set (64 gray 32x32 digits as PNGs, plus box masks) to a folder.

    python scripts/make_demo_data.py demo_out/input

writes ``<dir>/images/digit_NN_labelL.png`` and ``<dir>/masks/...`` (same names; 0 = missing,
255 = known: a centred 10x10 box). Restore it with the shipped ``digits32`` prior:

    restora restore --input <dir>/images --output demo_out/restored --task box --inputs clean \
        --prior digits32
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 64 evaluation digits shipped with restora_core: (64, 32, 32) uint8 and labels."""
    path = resources.files("restora_core") / "data" / "digits32_eval.npz"
    with resources.as_file(path) as file, np.load(file) as data:
        return data["images"][..., 0], data["labels"]


def write_demo_set(out: Path, box: int = 10) -> int:
    """Write images/ and masks/ under ``out``; return the number of images."""
    images, labels = load_digits()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    side = images.shape[-1]
    mask = np.full((side, side), 255, np.uint8)
    lo = (side - box) // 2
    mask[lo:lo + box, lo:lo + box] = 0
    for i, (img, label) in enumerate(zip(images, labels)):
        name = f"digit_{i:02d}_label{int(label)}.png"
        Image.fromarray(img).save(out / "images" / name)
        Image.fromarray(mask).save(out / "masks" / name)
    return len(images)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write images/ and masks/ into")
    args = parser.parse_args(argv)
    count = write_demo_set(args.out)
    print(f"wrote {count} images to {args.out / 'images'} and masks to {args.out / 'masks'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
