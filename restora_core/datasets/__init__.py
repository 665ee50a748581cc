"""Training images for flow-matching priors.

* :mod:`.arrays` — in-memory sets serving seeded uint8 batches, saved as one ``.npz``
  (numpy only: what the training CLI needs on a bare GPU box).
* Folders, Parquet and WebDataset shards become such sets through the pipeline's readers
  (``tasks.training_data``, what ``restora train --data`` runs).
* :mod:`.eval_sets` — the committed held-out evaluation sets (``load_eval_set``). Their
  builders, like those of the shipped priors' training sets, are tooling: ``priors/recipes``.

Pixels are uint8 in storage and ``[-1, 1]`` floats (``to_model_range``) for the model.
"""

from .arrays import (
                     Augment,
                     CropBox,
                     CropSourceSet,
                     ImageArraySet,
                     TrainingSet,
                     block_mean,
                     content_sha256,
                     load_npz,
                     resize_square,
                     save_npz,
                     sha256_file,
                     to_model_range,
)
from .eval_sets import eval_set_names, load_eval_set

__all__ = ["Augment", "CropBox", "CropSourceSet", "ImageArraySet", "TrainingSet", "block_mean",
           "content_sha256", "eval_set_names", "load_eval_set", "load_npz", "resize_square", "save_npz", "sha256_file", "to_model_range"]
