"""Training flow-matching priors (conditional flow matching, linear path).

Time convention, as in the rest of ``restora_core``: t = 0 is Gaussian noise x0, t = 1 is data
x1, ``x_t = t*x1 + (1-t)*x0``, target velocity ``x1 - x0``, ``t ~ U(0, 1)``; the model is called
``model(x_t, t)`` with ``t: (B,)``.

    from restora_core.training import TrainConfig, train
    result = train(TrainConfig(data="digits.npz", channels=1, resolution=32, max_steps=2000,
                               checkpoint_dir="s3://bucket/run1", output="digits.safetensors"))

Command line: ``restora train`` (the Prefect flow ``flows/train_prior.py``, which also runs the
loop on Ray Train workers). Image sources train on keyed samples (``keyed``: every draw a
function of seed, step and global sample index) through a ``parallel.BatchSource``; a
``parallel.WorkerGroup`` makes the loop one of several data-parallel workers.

Shipped recipes (``SHIPPED_RECIPES``: digits32, photo32, photo64, mri64; the GPU stage
``python -m priors.gpu_stage`` trains them under a hard time budget): UNets of the published
checkpoints' family, batch 128, AdamW lr 4e-4 with 500 warmup steps, EMA, grad clip 1,
minibatch OT coupling, bf16 autocast on CUDA. Batches are drawn on the training device when the
dataset fits (``device_batches``).
"""

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import SHIPPED_RECIPES, TrainConfig
from .ema import EMA
from .flow_matching import CFMBatch, cfm_loss, linear_path, make_cfm_batch, ot_permutation
from .loop import TrainResult, load_training_set, model_card, step_seed, train
from .sampling import euler_sample, image_grid

__all__ = [
           "EMA",
           "SHIPPED_RECIPES",
           "CFMBatch",
           "TrainConfig",
           "TrainResult",
           "cfm_loss",
           "euler_sample",
           "image_grid",
           "latest_checkpoint",
           "linear_path",
           "load_checkpoint",
           "load_training_set",
           "make_cfm_batch",
           "model_card",
           "ot_permutation",
           "save_checkpoint",
           "step_seed",
           "train",
]
