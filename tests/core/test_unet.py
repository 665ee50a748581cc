"""The UNet reproduces the published architecture: golden outputs, names and shapes."""

import json
from pathlib import Path

import pytest
import torch

from restora_core.models import PRESETS, UNet, build_model

REF = Path(__file__).parent.parent / "data" / "reference"


@pytest.mark.parametrize("name", ["A", "B"])
def test_golden_unet_outputs_are_reproduced(name):
    cfg = json.loads((REF / f"golden_unet_{name}.json").read_text())
    golden = torch.load(REF / f"golden_unet_{name}.pt", weights_only=True)
    model = UNet(**cfg)
    model.load_state_dict(golden["state_dict"], strict=True)
    model.eval()
    with torch.no_grad():
        out = model(golden["x"], golden["t"])
    rel = ((out - golden["out"]).norm() / golden["out"].norm()).item()
    assert rel < 1e-5


@pytest.mark.parametrize("preset", ["celeba128", "afhq256"])
def test_presets_match_published_parameter_names_and_shapes(preset):
    ref = json.loads((REF / "pnpflow_unet_state_dicts.json").read_text())[preset]
    model = build_model(preset)
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == ref["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]


def test_published_state_dict_loads_strictly_and_runs():
    model = build_model("celeba128")
    clone = build_model(PRESETS["coco128"])
    clone.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert clone(x, torch.tensor([0.5])).shape == (1, 3, 128, 128)


def test_unknown_preset_is_named_in_the_error():
    with pytest.raises(ValueError, match="unknown preset 'celeba64'"):
        build_model("celeba64")
