"""Fast paths leave the network alone, keep the pictures, and the defaults live in one table."""

from __future__ import annotations

import torch

from restora_core.degradations import box_mask, centered_box
from restora_core.models import build_model
from restora_core.noise import generators_for_seeds
from restora_core.runtime import (
    DEVICE_DEFAULTS,
    RuntimeConfig,
    describe,
    prepare_velocity,
    resolve_runtime,
)
from restora_core.samplers import restora_flow

TINY = {"input_channels": 3, "input_height": 16, "ch": 32, "ch_mult": (1, 2),
        "num_res_blocks": 1, "attn_resolutions": (8,)}


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY).eval()


def test_preparing_fast_paths_leaves_the_shared_network_unchanged():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.3)
    with torch.inference_mode():
        ref = net(x, t)
    for cfg in (RuntimeConfig("bf16w", channels_last=True), RuntimeConfig("bf16", channels_last=True),
                RuntimeConfig("bf16w")):
        prepare_velocity(net, "cpu", cfg)(x, t)
    for name, value in net.state_dict().items():
        assert value.dtype == torch.float32 and value.is_contiguous(), name
        assert torch.equal(value, before[name]), name
    with torch.inference_mode():
        assert torch.equal(net(x, t), ref)


def test_bf16_weights_keep_groupnorm_in_float32_and_stay_close_to_fp32():
    net = _net()
    v = prepare_velocity(net, "cpu", RuntimeConfig("bf16w"))
    norms = [m for m in v.modules() if isinstance(m, torch.nn.GroupNorm)]
    convs = [m for m in v.modules() if isinstance(m, torch.nn.Conv2d)]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.7)
    with torch.inference_mode():
        out, ref = v(x, t), net(x, t)
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_auto_resolves_from_the_device_table_and_labels_name_every_setting():
    assert resolve_runtime(RuntimeConfig(), "cpu") == DEVICE_DEFAULTS["cpu"]
    assert resolve_runtime(RuntimeConfig(), "cuda") == DEVICE_DEFAULTS["cuda"]
    explicit = resolve_runtime(RuntimeConfig("bf16w", channels_last=True, compile=True,
                                             cuda_graph=True), "cuda")
    assert describe(explicit) == "bf16w+channels_last+compile:default+cuda_graph"
    # Capture needs CUDA: elsewhere the flag resolves off and the label says so.
    assert not resolve_runtime(RuntimeConfig(cuda_graph=True), "cpu").cuda_graph
    assert describe(resolve_runtime(RuntimeConfig(cudnn_benchmark=True), "cuda")).endswith(
        "+cudnn_benchmark")
    assert prepare_velocity(_net(), "cpu").runtime == DEVICE_DEFAULTS["cpu"]


def test_static_transitions_match_the_eager_walk_exactly():
    net = _net()
    b = 3
    mask = box_mask(b, 16, 16, centered_box(16, 16, 6))
    y = (torch.rand(b, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1) * mask
    for corrections in (0, 1, 2):
        eager = restora_flow(net, y, mask, steps=5, corrections=corrections,
                             generator=generators_for_seeds(range(b)))
        static = restora_flow(net, y, mask, steps=5, corrections=corrections,
                              generator=generators_for_seeds(range(b)), cuda_graph=True)
        assert torch.equal(eager, static)
