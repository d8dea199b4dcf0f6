"""The hand design at a budget: shrinking a preset with the compound scaler (φ < 0)."""
from __future__ import annotations

import pytest

from nas.errors import ScalingError
from nas.presets import PRESETS
from nas.search import deploy_costs
from scaling.baseline import fit_to_budget, hand_design, shrink_phi, shrunk
from scaling.coefficients import Coefficients
from search_spaces import get_space

EFFICIENTNET = Coefficients(1.2, 1.1, 1.15)


def test_shrink_phi_on_a_step_cost_returns_an_evaluated_feasible_phi():
    calls = []

    def cost(phi):                      # steps of 1 at every integer φ: cost(φ) = 10 + floor(φ)
        calls.append(phi)
        return 10 + (phi // 1)

    phi = shrink_phi(cost, limit=7.0, tol=1e-3)
    assert phi in calls and cost(phi) <= 7.0
    assert -2.0 - 1e-3 <= phi < -2.0       # cost <= 7 means floor(φ) <= -3: the plateau φ < -2
    assert shrink_phi(cost, limit=10.0) == 0.0       # fits already: unchanged
    with pytest.raises(ScalingError, match="over the budget"):
        shrink_phi(cost, limit=0.5, phi_floor=-8)        # φ = -8 still costs 2


def test_a_preset_shrunk_to_a_gflops_budget_fits_and_is_the_largest_that_does():
    preset = PRESETS["yolov7-tiny"].replace(nc=3)
    cost = lambda g: deploy_costs(g, 64)["gflops"]      # noqa: E731
    assert cost(preset) > 0.05
    genome, phi = fit_to_budget(preset, EFFICIENTNET, cost, 0.05)
    assert phi < 0 and cost(genome) <= 0.05
    assert cost(shrunk(preset, EFFICIENTNET, phi + 0.01)) > 0.05     # a little less shrinking is over
    assert genome.activation == preset.activation and len(genome.stages) == len(preset.stages)
    assert fit_to_budget(preset, EFFICIENTNET, cost, 1.0) == (preset, 0.0)


def test_hand_design_of_a_space_with_the_runs_activation():
    space = get_space("yolov7-tiny-cpu", nc=3)
    name, genome = hand_design("preset", space)
    assert name == "yolov7-tiny" and genome == PRESETS["yolov7-tiny"].replace(nc=3)
    name, relu = hand_design("preset", space, activation="relu")
    assert name == "yolov7-tiny (relu)" and relu.activation == "relu" and relu.spp.kind == genome.spp.kind
    name, silu_free = hand_design("yolov7", get_space("yolov7", nc=3), activation="leakyrelu")
    assert silu_free.spp.kind == "spp3" and PRESETS["yolov7"].spp.kind == "sppcspc"
    assert hand_design("none", space) is None


def test_hand_design_from_files_and_bad_input(tmp_path):
    from nas.expand import dump_yaml, expand

    flat = tmp_path / "mine.yaml"
    flat.write_text(dump_yaml(expand(PRESETS["yolov7-tiny"])))
    name, genome = hand_design(str(flat), get_space("yolov7-tiny", nc=5))
    assert name == "mine" and genome == PRESETS["yolov7-tiny"].replace(nc=5)
    with pytest.raises(ScalingError) as info:
        hand_design(str(tmp_path / "missing.yaml"), get_space("yolov7-tiny"))
    assert str(info.value).startswith("--baseline ") and "no such file" in str(info.value)
    assert "\n" not in str(info.value)
