"""Concatenation-aware compound scaling of genomes (scaling/compound.py).

Oracles: hand-computed chain lengths / resolutions, the paper's yolov7 → yolov7x pair
(REFERENCE.md), and channel counts read off the built nn.Module.
"""
from __future__ import annotations

import math

import pytest

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.errors import ScalingError
from nas.expand import expand
from nas.genome import Elan
from nas.presets import PRESETS
from scaling.coefficients import EFFICIENTNET, Coefficients
from scaling.compound import (
    concat_width, elan_scalings, scale_chain, scale_genome, scale_member,
)
from scaling.rounding import round_filters

ELAN_PATHS = ["stages[0].elan", "stages[1].elan", "stages[2].elan", "stages[3].elan",
              "head.top_down[0].elan", "head.top_down[1].elan",
              "head.bottom_up[0].elan", "head.bottom_up[1].elan"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_unit_multipliers_give_the_same_genome(name):
    assert scale_genome(PRESETS[name], 1.0, 1.0) == PRESETS[name]
    g, img = scale_member(PRESETS[name], EFFICIENTNET, 0, 640)
    assert g == PRESETS[name] and img == 640


def test_concat_width_counts_the_concatenated_inputs():
    # every2, depth 4: chain outputs 4 and 2 + both entries = 4 inputs; depth 6: 5 inputs.
    assert concat_width(Elan(4, "every2", 64, 64, 256)) == 4 * 64
    assert concat_width(Elan(6, "every2", 64, 64, 320)) == 5 * 64
    # all (ELAN-H), yolov7 head: 2 entries of 256 + 4 chain outputs of 128.
    assert concat_width(Elan(4, "all", 256, 128, 256)) == 2 * 256 + 4 * 128


def test_chain_lengths_ceil_and_every2_rounds_up_to_even():
    # all: ceil(n·d)
    assert [scale_chain(2, EFFICIENTNET.alpha ** p, "all") for p in (1, 2, 3)] == [3, 3, 4]
    # every2: ceil(4·1.2)=5 → 6, ceil(4·1.44)=6, ceil(4·1.728)=7 → 8; i.e. 2·ceil(2·d)
    assert [scale_chain(4, EFFICIENTNET.alpha ** p, "every2") for p in (1, 2, 3)] == [6, 6, 8]
    for d in (1.0, 1.1, 1.25, 1.5, 1.7, 2.3):
        assert scale_chain(4, d, "every2") == 2 * math.ceil(2 * d - 1e-12)
    assert scale_chain(4, 1.5, "every2") == 6  # yolov7 → yolov7x


@pytest.mark.parametrize("name", ["yolov7-tiny", "yolov7"])
@pytest.mark.parametrize("phi", [1, 2, 3])
def test_members_follow_the_rounding_rules(name, phi):
    base = PRESETS[name]
    g, img = scale_member(base, EFFICIENTNET, phi, 640)
    d, w, _ = EFFICIENTNET.at(phi)
    for path in ELAN_PATHS:
        old, new = base.get(path), g.get(path)
        expected = math.ceil(round(old.depth * d, 9))
        if old.pattern == "every2" and expected % 2:
            expected += 1
        assert new.depth == expected, path
        assert new.pattern == old.pattern
    assert all(v % 8 == 0 and v > 0 for v in g.leaves("width").values())
    assert img % 32 == 0
    assert img == {1: 736, 2: 832, 3: 960}[phi]  # 640·1.15^φ = 736, 846.4, 973.4 → nearest ×32
    # every non-ELAN width is round_filters(base, w)
    for path, value in base.leaves("width").items():
        if not any(path.startswith(p + ".") for p in ELAN_PATHS):
            assert g.get(path) == round_filters(value, w), path


def _elan_transitions(model):
    """(concat layer, transition layer) of every ELAN block of a built model, in layer order.

    An ELAN concat is recognised structurally: among its inputs are exactly two 1×1 Convs that
    read the same layer (the two entries) and all other inputs are 3×3 Convs (the chain).
    """
    info = model.info
    found = []
    for i, row in enumerate(info):
        if row.module != "Concat":
            continue
        kinds = [(info[s].module, info[s].args[2] if info[s].module == "Conv" else None, info[s].sources)
                 for s in row.sources]
        entries = [k for k in kinds if k[:2] == ("Conv", 1)]
        chain = [k for k in kinds if k[:2] == ("Conv", 3)]
        if len(entries) == 2 and entries[0][2] == entries[1][2] and len(entries) + len(chain) == len(kinds):
            nxt = model.layers[i + 1]
            assert info[i + 1].sources == (i,)
            found.append((i, nxt))
    return found


@pytest.mark.parametrize("name,phi", [("yolov7-tiny", 3), ("yolov7", 1)])
def test_transitions_follow_the_concatenated_width(name, phi):
    base = PRESETS[name]
    g, _ = scale_member(base, EFFICIENTNET, phi, 640)
    _, w, _ = EFFICIENTNET.at(phi)
    model = build_model(parse_cfg(expand(g)))
    transitions = _elan_transitions(model)
    assert len(transitions) == len(ELAN_PATHS)
    for path, (concat_index, transition) in zip(ELAN_PATHS, transitions):
        old, new = base.get(path), g.get(path)
        concat_in = sum(model.info[s].out_channels for s in model.info[concat_index].sources)
        # the transition's input is the concatenated width of the deepened, widened block ...
        assert transition.conv.in_channels == concat_in == concat_width(new), path
        # ... and its output keeps the base block's in:out ratio (rounded to a multiple of 8)
        rho = concat_width(new) / concat_width(old)
        assert transition.conv.out_channels == new.out == round_filters(old.out, rho), path
        assert abs(new.out / (old.out * rho) - 1) < 0.1, path
        # ρ is the depth-induced concat growth times the width multiplier, up to entry/chain rounding
        depth_rho = concat_width(Elan(new.depth, old.pattern, old.entry, old.chain, old.out)) \
            / concat_width(old)
        assert rho == pytest.approx(depth_rho * w, rel=0.1), path


def test_tiny_phi3_concat_ratio_by_hand():
    # tiny stage P5 ELAN: all, depth 2, entry = chain = 256, out 512. φ=3: depth ceil(3.456) = 4,
    # widths round_filters(256, 1.331) = 344 (340.7 → 344). concat 2·256+2·256 = 1024 →
    # 2·344+4·344 = 2064; transition 512·2064/1024 = 1032 → 1032.
    s = {x.path: x for x in elan_scalings(PRESETS["yolov7-tiny"], 1.2 ** 3, 1.1 ** 3)}["stages[3].elan"]
    assert (s.new.depth, s.new.entry, s.new.chain) == (4, 344, 344)
    assert (s.concat_old, s.concat_new, s.new.out) == (1024, 2064, 1032)


def test_yolov7_to_yolov7x():
    """Paper §3.2: yolov7x = yolov7 with depth ×1.5 (chains 4 → 6) and width ×1.25.

    Matching with the compound rule (block width = width): every chain length, the concat
    pattern [-1,-3,-5,-7,-8] of the backbone, stem 40/80/80/160, downsample branches 160/320/640
    (backbone) and 160/320 (head), SPPCSPC 640, head laterals 320/160, output convs
    320/640/1280. Different: the rule also widens ELAN entry/chain ×1.25 (64 → 80 …) so the
    transitions follow concat ×1.5625 (256 → 400), while yolov7x keeps entry/chain and its
    transitions grow by the concat alone (256 → 320).
    With ``block_width_mult=1`` (the paper's variant) the backbone ELANs match exactly
    (entry/chain kept, transitions 256/512/1024/1024 → 320/640/1280/1280), and the head ELAN
    transitions match too (256/128/256/512 → 320/160/320/640). What remains different are
    yolov7x's own head choices: ELAN pattern every2 (yolov7: all), chain width = entry width
    (yolov7: half), and Conv output convs (yolov7: RepConv).
    """
    v7, x = PRESETS["yolov7"], PRESETS["yolov7x"]
    g = scale_genome(v7, 1.5, 1.25)
    expand_x, expand_g = expand(x), expand(g)
    assert [r[0] for r in expand_g["backbone"] if r[2] == "Concat"][:4] == \
        [r[0] for r in expand_x["backbone"] if r[2] == "Concat"][:4]
    assert [-1, -3, -5, -7, -8] in [r[0] for r in expand_g["backbone"]]

    compound_same = [p for p in x.leaves() if not any(p.startswith(e + ".") for e in ELAN_PATHS)
                     and p != "outputs.kind"]
    for path in compound_same + [e + ".depth" for e in ELAN_PATHS]:
        assert g.get(path) == x.get(path), path
    assert g.get("stages[0].elan.out") == 400 and x.get("stages[0].elan.out") == 320

    p = scale_genome(v7, 1.5, 1.25, block_width_mult=1.0)
    for path in compound_same + [e + ".depth" for e in ELAN_PATHS] + \
            [e + "." + f for e in ELAN_PATHS[:4] for f in ("pattern", "entry", "chain", "out")] + \
            [e + ".out" for e in ELAN_PATHS[4:]] + [e + ".entry" for e in ELAN_PATHS[4:]]:
        assert p.get(path) == x.get(path), path
    differ = {path for path in x.leaves() if p.get(path) != x.get(path)}
    assert differ == {"outputs.kind"} | {e + "." + f for e in ELAN_PATHS[4:] for f in ("pattern", "chain")}


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_bad_multipliers_are_one_scaling_error(bad):
    with pytest.raises(ScalingError):
        scale_genome(PRESETS["yolov7-tiny"], bad, 1.0)
    with pytest.raises(ScalingError):
        scale_genome(PRESETS["yolov7-tiny"], 1.0, bad)


@pytest.mark.parametrize("img", [0, 100, -32, 64.0])
def test_base_image_must_be_a_multiple_of_32(img):
    with pytest.raises(ScalingError, match="multiple"):
        scale_member(PRESETS["yolov7-tiny"], EFFICIENTNET, 1, img)


def test_coefficients_below_one_and_negative_phi_are_refused():
    with pytest.raises(ScalingError, match="alpha"):
        Coefficients(0.9, 1.1, 1.15)
    with pytest.raises(ScalingError, match="phi"):
        scale_member(PRESETS["yolov7-tiny"], EFFICIENTNET, -1, 640)


def test_a_scaled_genome_past_the_genome_bounds_is_one_scaling_error():
    # depth ×40 turns yolov7's chains of 4 into 160 convs, past nas.genome.MAX_ELAN_DEPTH (64)
    with pytest.raises(ScalingError, match=r"depth x40, width x1 gives an invalid genome: "
                                           r"'stages\[0\].elan.depth' must be 1 to 64, got 160") as err:
        scale_genome(PRESETS["yolov7"], 40, 1.0)
    assert "\n" not in str(err.value)
    assert scale_genome(PRESETS["yolov7"], 16, 1.0).get("stages[0].elan.depth") == 64  # the bound itself
