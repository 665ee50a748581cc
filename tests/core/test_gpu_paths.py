"""On a CUDA device: the captured-graph walk and the bf16 paths give the eager fp32 pictures.

Skipped without a GPU; `scripts/gpu_session.sh` runs them on a lent one.
"""

from __future__ import annotations

import pytest
import torch

from restora_core.degradations import box_mask, centered_box
from restora_core.models import build_model
from restora_core.noise import generators_for_seeds
from restora_core.runtime import RuntimeConfig, prepare_velocity
from restora_core.samplers import restora_flow

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY = {"input_channels": 3, "input_height": 16, "ch": 32, "ch_mult": (1, 2),
        "num_res_blocks": 1, "attn_resolutions": (8,)}


def _problem(b: int = 4):
    torch.manual_seed(0)
    net = build_model(TINY).eval()
    mask = box_mask(b, 16, 16, centered_box(16, 16, 6))
    y = (torch.rand(b, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1) * mask
    return net, y.cuda(), mask.cuda()


def _run(velocity, y, mask, **kw):
    return restora_flow(velocity, y, mask, steps=6, corrections=1,
                        generator=generators_for_seeds(range(y.shape[0]), y.device), **kw)


def test_captured_cuda_graph_walk_matches_the_eager_walk_on_the_gpu():
    net, y, mask = _problem()
    v = prepare_velocity(net, "cuda", RuntimeConfig("fp32"))
    eager = _run(v, y, mask)
    graphed = _run(v, y, mask, cuda_graph=True)
    assert (eager - graphed).abs().max().item() < 1e-4


@pytest.mark.parametrize("precision", ["bf16", "bf16w"])
def test_bf16_paths_restore_the_hole_close_to_fp32_on_the_gpu(precision):
    net, y, mask = _problem()
    ref = _run(prepare_velocity(net, "cuda", RuntimeConfig("fp32")), y, mask)
    out = _run(prepare_velocity(net, "cuda", RuntimeConfig(precision)), y, mask)
    hole = (1 - mask).bool().expand_as(out)
    mse = ((out - ref)[hole] ** 2).mean().item()
    # Random weights amplify rounding; 25 dB on the [-1, 1] scale still catches a broken path.
    assert 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-20))).item() > 25.0
