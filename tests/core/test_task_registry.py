"""The degradation (task) registry: every task listed, typed parameters validated at the edge,
input geometry per prior size, and a torch-free import for the I/O workers."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from restora_core.degradations import REGISTRY, TASKS, get_task
from restora_core.degradations.registry import _MODULES

REPO = Path(__file__).resolve().parents[2]


def test_every_task_module_is_registered_under_its_name():
    assert TASKS == ("inpaint", "box", "random", "superres", "denoise", "outpaint")
    assert set(_MODULES) == set(REGISTRY)
    with pytest.raises(ValueError, match=r"unknown task 'colorize'; expected one of \(.*'outpaint'"):
        get_task("colorize")


def test_task_parameters_take_their_defaults_and_overrides():
    assert get_task("superres").resolved() == {"factor": 2}
    assert get_task("random").resolved({"p": 0.5}) == {"p": 0.5}
    assert get_task("box").resolved({"box": [1, 2, 3, 4]}) == {"box": [1, 2, 3, 4], "box_size": None}
    assert get_task("denoise").resolved({"sigma": None}) == {"sigma": 0.2}  # None = not given
    assert get_task("inpaint").resolved() == {}


@pytest.mark.parametrize(("task", "params", "message"), [
    ("superres", {"facto": 2}, "task 'superres' has no parameter 'facto'; it takes ['factor']"),
    ("superres", {"factor": "2x"}, "factor must be an integer, got '2x'"),
    ("superres", {"factor": 0}, "factor must be >= 1, got 0"),
    ("random", {"p": 1.0}, "p must be < 1.0, got 1.0"),
    ("denoise", {"sigma": True}, "sigma must be a number, got True"),
    ("box", {"box": [1, 2, 3]}, "box must be a list of 4 ints, got [1, 2, 3]"),
    ("outpaint", {"pad": [2, -1, 2, 2]}, "pad must each be >= 0, got [2, -1, 2, 2]"),
])
def test_bad_task_parameters_are_refused_naming_the_parameter(task, params, message):
    with pytest.raises(ValueError) as caught:
        get_task(task).make_params(params)
    assert str(caught.value) == message


def test_input_geometry_follows_the_prior_size():
    assert get_task("box").input_for((16, 16)) == (16, 16)
    assert get_task("superres").input_for((16, 16)) == (8, 8)
    assert get_task("superres").input_for((16, 16), {"factor": 4}) == (4, 4)
    assert get_task("outpaint").input_for((16, 16)) == (12, 12)  # 1/8 of the side per edge
    assert get_task("outpaint").input_for((128, 128)) == (96, 96)
    assert get_task("outpaint").input_for((16, 16), {"pad": [1, 2, 3, 4]}) == (12, 10)


@pytest.mark.parametrize(("task", "params", "message"), [
    ("superres", {"factor": 3}, "factor 3 does not divide the prior's resolution 16"),
    ("outpaint", {"pad": [8, 0, 8, 0]}, ("pad [8, 0, 8, 0] leaves no known pixels of the "
                                         "prior's 16x16 (top + bottom = 16, left + right = 0)")),
    ("box", {"box_size": 17}, "box_size 17 does not fit in the prior's 16x16"),
    ("box", {"box": [10, 0, 8, 8]}, "box [10, 0, 8, 8] does not fit in the prior's 16x16"),
])
def test_impossible_prior_size_and_parameter_pairs_name_the_numbers(task, params, message):
    with pytest.raises(ValueError) as caught:
        get_task(task).input_for((16, 16), params)
    assert str(caught.value) == message


def test_only_inpaint_takes_a_mask_and_only_denoise_is_denoising():
    assert [t for t in TASKS if get_task(t).side_input == "mask"] == ["inpaint"]
    assert [t for t in TASKS if get_task(t).denoising] == ["denoise"]
    assert get_task("denoise").default_noise() == 0.2
    assert get_task("box").default_noise() == 0.01


def test_a_methods_default_noise_and_cost_come_from_the_task_entry():
    from restora_core.samplers import get_method
    from restora_core.samplers.restora_flow_denoise import restora_flow_denoise_nfe

    sigma = get_task("denoise").defaults()["sigma"]
    entry = get_method("restora_flow_denoise")
    assert entry.denoises(None) and not get_method("flower").denoises("box")
    assert entry.cost("denoise") == restora_flow_denoise_nfe(64, sigma) == 13


def test_a_method_naming_an_unregistered_task_is_refused():
    from restora_core.samplers.method import Method
    from restora_core.samplers.restora_flow import ENTRY

    @dataclass(frozen=True)
    class NoParams:
        pass

    with pytest.raises(ValueError, match=r"method 'x' names unknown tasks \['colorize'\]"):
        Method(name="x", summary="", paper="", params=NoParams, sample=ENTRY.sample,
               nfe=lambda p, noise: 1, tasks=("box", "colorize"))


def test_outpaint_is_done_by_the_mask_methods_with_box_settings_marked_as_borrowed():
    from restora_core.samplers import get_method, methods_for_task

    assert set(methods_for_task("outpaint")) == {"restora_flow", "mask_ode", "ot_ode",
                                                 "pnp_flow", "flower"}
    for name in methods_for_task("outpaint"):
        entry = get_method(name)
        assert entry.defaults("outpaint") == entry.defaults("box"), name
        assert "borrows the box inpainting setting" in entry.sources["outpaint"], name


def test_the_registry_and_its_parameters_import_without_torch():
    code = ("import sys; from restora_core.degradations import REGISTRY, get_task; "
            "[e.input_for((32, 32)) and e.param_info() for e in REGISTRY.values()]; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == "False"
