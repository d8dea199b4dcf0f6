"""recognise(cfg) → Genome, the inverse of expand: round trips, route forms, width multiples, errors.

The oracles are the genomes themselves (presets and seeded random genomes fed through expand),
cfgs rewritten by hand-written helpers here (absolute/relative routes, inserted or deleted rows
with the routes after them renumbered), and, for width_multiple, the model YOLOv7's rules build
(nas.build) from the scaled cfg versus from the recognised genome's expansion.
"""
from __future__ import annotations

import copy
import math
import random

import pytest
import yaml

from nas.cfg import parse_cfg
from nas.errors import ConfigError
from nas.expand import dump_yaml, expand
from nas.genome import (
    BottomUp, Downsample, Elan, Genome, Head, Outputs, Spp, Stage, StemConv, TopDown,
)
from nas.presets import PRESETS
from nas.recognise import recognise, recognise_file

# -- cfg rewriting helpers ----------------------------------------------------------------------

def rows_of(cfg: dict) -> list[list]:
    return cfg["backbone"] + cfg["head"]


def _refs(frm):
    return frm if isinstance(frm, list) else [frm]


def _with_rows(cfg: dict, rows: list[list], n_backbone: int) -> dict:
    out = {k: v for k, v in cfg.items() if k not in ("backbone", "head")}
    out["backbone"], out["head"] = rows[:n_backbone], rows[n_backbone:]
    return out


def rewrite_routes(cfg: dict, style: str) -> dict:
    """Every ``from`` absolute (``style='absolute'``) or relative (``'relative'``); row 0 keeps -1."""
    rows = copy.deepcopy(rows_of(cfg))
    for i, row in enumerate(rows):
        if i == 0:
            continue
        absolute = [r if r >= 0 else i + r for r in _refs(row[0])]
        refs = absolute if style == "absolute" else [a - i for a in absolute]
        row[0] = refs if isinstance(row[0], list) else refs[0]
    return _with_rows(cfg, rows, len(cfg["backbone"]))


def _absolute_rows(cfg: dict) -> list[list]:
    return rows_of(rewrite_routes(cfg, "absolute"))


def _renumber(rows: list[list], start: int, fn) -> None:
    for row in rows[start:]:
        refs = [fn(r) for r in _refs(row[0])]
        row[0] = refs if isinstance(row[0], list) else refs[0]


def insert_row(cfg: dict, pos: int, row: list) -> dict:
    """Insert ``row`` (absolute routes) at ``pos``; later routes to rows ≥ pos move up by one."""
    rows = _absolute_rows(cfg)
    _renumber(rows, pos, lambda r: r + 1 if r >= pos else r)
    rows.insert(pos, row)
    n_backbone = len(cfg["backbone"]) + (pos < len(cfg["backbone"]))
    return _with_rows(cfg, rows, n_backbone)


def delete_row(cfg: dict, pos: int) -> dict:
    """Delete row ``pos``; routes to it now read the row before, later routes move down."""
    rows = _absolute_rows(cfg)
    del rows[pos]
    _renumber(rows, pos, lambda r: r - 1 if r >= pos else r)
    n_backbone = len(cfg["backbone"]) - (pos < len(cfg["backbone"]))
    return _with_rows(cfg, rows, n_backbone)


def set_row(cfg: dict, pos: int, row: list) -> dict:
    rows = copy.deepcopy(rows_of(cfg))
    rows[pos] = row
    return _with_rows(cfg, rows, len(cfg["backbone"]))


def error_of(cfg: dict, source: str = "broken.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        recognise(parse_cfg(cfg, source=source))
    return info.value


def elan_concat_rows(cfg: dict) -> list[int]:
    """Indices of the ELAN concats: right after a 3×3 chain conv, and read by the next row only
    (the transition), whereas the concats that open an ELAN are read by both entry convs."""
    rows = _absolute_rows(cfg)
    return [i for i, r in enumerate(rows[:-2])
            if r[2] == "Concat" and rows[i - 1][2] == "Conv" and rows[i - 1][3][1] == 3
            and rows[i + 1][0] == i and rows[i + 2][0] != i]


# -- genomes --------------------------------------------------------------------------------

def canonical(g: Genome) -> Genome:
    """The form recognise returns: a conv downsample of stages[0] is read as the last stem conv."""
    first = g.stages[0]
    if first.down.kind != "conv":
        return g
    return g.replace(stem=g.stem + (StemConv(first.down.width, 2),),
                     stages=(Stage(Downsample("none"), first.elan), *g.stages[1:]))


WIDTHS = [8, 12, 16, 20, 24, 32, 40, 48, 64, 80]   # multiples of 8 and a few that are not


def _random_elan(rng: random.Random) -> Elan:
    pattern = rng.choice(["every2", "all"])
    depth = rng.choice([2, 4, 6]) if pattern == "every2" else rng.randint(1, 5)
    return Elan(depth, pattern, rng.choice(WIDTHS), rng.choice(WIDTHS), rng.choice(WIDTHS))


def _random_stem(rng: random.Random, stride: int) -> tuple[StemConv, ...]:
    strides = [2] * (stride // 2) + [1] * rng.randint(0, 2)
    rng.shuffle(strides)
    return tuple(StemConv(rng.choice(WIDTHS), s) for s in strides)


def random_genome(rng: random.Random) -> Genome:
    activation = rng.choice(["silu", "leakyrelu", "relu"])
    spp_kinds = ["spp3", "sp"] + (["sppcspc", "sppf", "spp"] if activation == "silu" else [])

    def down(kinds):
        kind = rng.choice(kinds)
        return Downsample(kind, None if kind in ("mp", "none") else rng.choice(WIDTHS))

    first = down(["none", "conv", "mp", "mpc"])
    anchors_per_level = rng.randint(1, 4)
    return Genome(
        activation=activation,
        stem=_random_stem(rng, 4 if first.kind == "none" else 2),
        stages=(Stage(first, _random_elan(rng)),
                *(Stage(down(["conv", "mpc", "mp"]), _random_elan(rng)) for _ in range(3))),
        spp=Spp(rng.choice(spp_kinds), rng.choice(WIDTHS)),
        head=Head(tuple(TopDown(rng.choice(WIDTHS), _random_elan(rng)) for _ in range(2)),
                  tuple(BottomUp(down(["conv", "mpc"]), _random_elan(rng)) for _ in range(2))),
        outputs=Outputs(rng.choice(["conv", "repconv"]), tuple(rng.choice(WIDTHS) for _ in "345")),
        detect=rng.choice(["detect", "idetect"]),
        nc=rng.randint(1, 100),
        anchors=tuple(tuple(rng.randint(1, 500) for _ in range(2 * anchors_per_level))
                      for _ in range(3)),
    )


def scaled_widths(g: Genome, gw: float) -> Genome:
    """YOLOv7's width rule ceil(w·gw/8)·8, leaving the detect output width na·(nc+5) alone."""
    no = len(g.anchors[0]) // 2 * (g.nc + 5)
    return g.map_fields(lambda _path, w: w if w == no else math.ceil(w * gw / 8) * 8)


# -- round trips ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_exactly(name):
    g = PRESETS[name]
    assert recognise(parse_cfg(expand(g), source=name)) == g


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_yaml_file_round_trip(name, tmp_path):
    path = tmp_path / f"{name}.yaml"
    path.write_text(dump_yaml(expand(PRESETS[name])), encoding="utf-8")
    assert recognise_file(path) == PRESETS[name]


def test_deploy_style_detect_and_upstream_none_spelling():
    """Deploy cfgs differ only by Detect; upstream writes ``None``, which YAML reads as 'None'."""
    cfg = expand(PRESETS["yolov7"])
    text = dump_yaml(cfg).replace("IDetect", "Detect").replace("null", "None")
    g = recognise(parse_cfg(yaml.safe_load(text), source="deploy.yaml"))
    assert g == PRESETS["yolov7"].replace(detect="detect")
    tiny = dump_yaml(expand(PRESETS["yolov7-tiny"])).replace("null", "None")
    assert recognise(parse_cfg(yaml.safe_load(tiny))) == PRESETS["yolov7-tiny"]


def test_pool_defaults_written_out_are_the_same_layers():
    cfg = expand(PRESETS["yolov7-tiny"])
    rows = copy.deepcopy(rows_of(cfg))
    for row in rows:
        if row[2] == "MP":
            row[3] = [2]
        elif row[2] == "SP":
            row[3] = row[3] + [1]
    assert recognise(parse_cfg(_with_rows(cfg, rows, len(cfg["backbone"])))) == PRESETS["yolov7-tiny"]
    rows[8][3] = [3]   # MP(3) is another layer
    err = error_of(_with_rows(cfg, rows, len(cfg["backbone"])))
    assert err.layer == 8 and "found MP[3]" in str(err)


def test_random_genomes_round_trip():
    rng = random.Random(1234)
    seen: dict[str, set] = {k: set() for k in ("stage", "head", "spp", "pattern", "act", "out")}
    for _ in range(150):
        g = random_genome(rng)
        cfg = expand(g)
        got = recognise(parse_cfg(cfg, source="random.yaml"))
        assert got == canonical(g)
        if g.stages[0].down.kind != "conv":
            assert got == g
        assert expand(got) == cfg
        seen["stage"] |= {s.down.kind for s in g.stages}
        seen["head"] |= {b.down.kind for b in g.head.bottom_up}
        seen["spp"].add(g.spp.kind)
        seen["pattern"] |= {s.elan.pattern for s in g.stages}
        seen["act"].add(g.activation)
        seen["out"].add((g.outputs.kind, g.detect))
    assert seen["stage"] == {"none", "conv", "mp", "mpc"}
    assert seen["head"] == {"conv", "mpc"}
    assert seen["spp"] == {"sppcspc", "sppf", "spp", "spp3", "sp"}
    assert seen["pattern"] == {"every2", "all"} and len(seen["act"]) == 3
    assert len(seen["out"]) == 4


def test_stage0_conv_downsample_is_read_as_a_stem_conv():
    tiny = PRESETS["yolov7-tiny"]
    g = tiny.replace(stem=tiny.stem[:1],
                     stages=(Stage(Downsample("conv", 64), tiny.stages[0].elan), *tiny.stages[1:]))
    assert expand(g) == expand(tiny)
    assert recognise(parse_cfg(expand(g))) == tiny


# -- route forms and multiples --------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_absolute_and_relative_routes_recognised_equally(name):
    cfg = expand(PRESETS[name])
    absolute, relative = rewrite_routes(cfg, "absolute"), rewrite_routes(cfg, "relative")
    assert rows_of(absolute) != rows_of(relative) != rows_of(cfg)
    assert all(r >= 0 for row in rows_of(absolute)[1:] for r in _refs(row[0]))
    assert all(r < 0 for row in rows_of(relative) for r in _refs(row[0]))
    assert recognise(parse_cfg(absolute)) == recognise(parse_cfg(relative)) == PRESETS[name]


def test_random_genomes_with_rewritten_routes():
    rng = random.Random(99)
    for _ in range(20):
        g = random_genome(rng)
        cfg = expand(g)
        for style in ("absolute", "relative"):
            assert recognise(parse_cfg(rewrite_routes(cfg, style))) == canonical(g)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_width_multiple_half_gives_the_halved_genome(name):
    g = PRESETS[name]
    cfg = dict(expand(g), width_multiple=0.5)
    got = recognise(parse_cfg(cfg))
    half = scaled_widths(g, 0.5)
    assert got == half
    assert expand(got) == expand(half)
    assert got.stages[3].elan.out == g.stages[3].elan.out // 2


def test_width_multiple_on_random_genomes_and_detect_width_is_kept():
    rng = random.Random(5)
    for gw in (0.25, 0.5, 0.75, 1.25):
        g = random_genome(rng)
        got = recognise(parse_cfg(dict(expand(g), width_multiple=gw)))
        assert got == canonical(scaled_widths(g, gw))
    # a conv as wide as the detect output na·(nc+5) = 3·85 = 255 is never scaled
    v7 = PRESETS["yolov7"]
    g = v7.replace(outputs=Outputs("repconv", (255, 200, 1024)))
    got = recognise(parse_cfg(dict(expand(g), width_multiple=0.5)))
    assert got.outputs.widths == (255, 104, 512)


def test_width_multiple_recognised_genome_builds_the_same_network():
    """YOLOv7's rules (nas.build) on the scaled cfg and on expand(recognised) agree per layer."""
    from nas.build import build_model

    cfg = dict(expand(PRESETS["yolov7-tiny"]), width_multiple=0.375)
    scaled = build_model(parse_cfg(cfg))
    rebuilt = build_model(parse_cfg(expand(recognise(parse_cfg(cfg)))))
    assert [i.out_channels for i in scaled.info] == [i.out_channels for i in rebuilt.info]
    assert [i.params for i in scaled.info] == [i.params for i in rebuilt.info]


def test_depth_multiple_is_harmless_but_repeats_are_refused():
    g = PRESETS["yolov7"]
    assert recognise(parse_cfg(dict(expand(g), depth_multiple=0.33))) == g
    cfg = expand(g)
    rows = rows_of(cfg)
    cfg = set_row(cfg, 7, [rows[7][0], 2, *rows[7][2:]])
    err = error_of(cfg)
    assert err.layer == 7 and "number 2" in str(err)


# -- broken structures ----------------------------------------------------------------------

def test_error_names_file_and_layer():
    cfg = expand(PRESETS["yolov7"])
    cat = elan_concat_rows(cfg)[0]
    assert cat == 10
    cfg = set_row(cfg, cat, [[-1, -2, -5, -6], 1, "Concat", [1]])
    err = error_of(cfg, source="my.yaml")
    assert err.source == "my.yaml" and err.layer == 10
    assert str(err).startswith("my.yaml, layer 10: expected the concat of the ELAN of backbone "
                               "stage P2 after 4 chain convs")
    assert "every2 [9, 7, 5, 4]" in str(err) and "all [9, 8, 7, 6, 5, 4]" in str(err)
    assert "found Concat of layers [9, 8, 5, 4]" in str(err)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_elan_concat_with_wrong_from_list(name):
    cfg = expand(PRESETS[name])
    concats = elan_concat_rows(cfg)
    assert len(concats) == 8          # 4 backbone stages, 4 head levels
    for cat in concats[::3]:
        row = rows_of(cfg)[cat]
        refs = row[0][:-1] + [row[0][-1] - 1]   # the last route one layer too far back
        err = error_of(set_row(cfg, cat, [refs, *row[1:]]))
        assert err.layer == cat and "concat of the ELAN" in str(err)


def test_missing_transition_conv():
    cfg = expand(PRESETS["yolov7"])
    err = error_of(delete_row(cfg, 11))   # stage P2's transition; row 11 is now the MP
    assert err.layer == 11
    assert "transition conv of the ELAN of backbone stage P2" in str(err)
    assert "found MP from layer 10" in str(err)


@pytest.mark.parametrize("pos, row, words", [
    (12, [11, 1, "Conv", [64, 1, 1]], "downsample opening backbone stage P3"),
    (8, [7, 1, "Conv", [64, 1, 1]], "concat of the ELAN of backbone stage P2"),
    (53, [52, 1, "nn.MaxPool2d", [3, 1, 1]], "upsample of top-down level P4"),
    (102, [101, 1, "Conv", [512, 1, 1]], "P3 output conv"),
])
def test_unknown_extra_layer_in_the_middle(pos, row, words):
    err = error_of(insert_row(expand(PRESETS["yolov7"]), pos, row))
    assert err.layer == pos and words in str(err)


def test_four_detect_levels_are_not_p5():
    cfg = expand(PRESETS["yolov7"])
    rows = _absolute_rows(cfg)
    detect = rows.pop()
    rows.append([88, 1, "RepConv", [256, 3, 1]])      # a 4th output level
    rows.append([[102, 103, 104, 105], 1, "IDetect", ["nc", "anchors"]])
    cfg = _with_rows(dict(cfg, anchors=cfg["anchors"] + [[1, 2, 3, 4, 5, 6]]), rows,
                     len(cfg["backbone"]))
    assert detect[0] == [102, 103, 104]
    err = error_of(cfg)
    assert err.layer == 105 and "P5 detectors with 3 output levels" in str(err)

    rows[-2:] = [[[102, 103, 104, 101], 1, "IDetect", ["nc", "anchors"]]]
    err = error_of(_with_rows(cfg, rows, len(cfg["backbone"])))
    assert err.layer == 105 and "IDetect reads 4 levels" in str(err)


@pytest.mark.parametrize("edit, layer, words", [
    (lambda rows: rows[4].__setitem__(3, [64, 1, 1, None, 1, "nn.ReLU()"]), 4,
     "Conv uses relu but layer 0 uses silu"),
    (lambda rows: rows[5].__setitem__(3, [32, 1, 1]), 5, "is 32 wide, not 64"),
    (lambda rows: rows[54].__setitem__(0, 24), 54, "backbone stage P4's output (Conv 1×1 from "
                                                   "layer 37), found Conv 1×1 from layer 24"),
    (lambda rows: rows[51].__setitem__(3, [512, 2]), 51, "takes only its width"),
    (lambda rows: rows[6].__setitem__(3, [64, 3, 1, 0]), 6, "padding 0"),
    (lambda rows: rows[6].__setitem__(3, [64, 3, 1, None, 2]), 6, "groups 2"),
    (lambda rows: rows[105].__setitem__(3, [80, "anchors"]), 105, None),
    (lambda rows: rows[105].__setitem__(3, [3, "anchors"]), 105, "expected [nc, anchors]"),
    (lambda rows: rows.append([104, 1, "Conv", [8, 1, 1]]), 106, "after the detect head"),
])
def test_other_broken_rows(edit, layer, words):
    cfg = expand(PRESETS["yolov7"])
    rows = copy.deepcopy(rows_of(cfg))
    edit(rows)
    cfg = _with_rows(cfg, rows, len(cfg["backbone"]))
    if words is None:   # nc written out as its value is the same network
        assert recognise(parse_cfg(cfg)) == PRESETS["yolov7"]
        return
    err = error_of(cfg)
    assert err.layer == layer and words in str(err), str(err)


def test_leakyrelu_with_another_slope_and_sppcspc_with_leakyrelu_are_refused():
    tiny = expand(PRESETS["yolov7-tiny"])
    rows = copy.deepcopy(rows_of(tiny))
    rows[3][3][-1] = "nn.LeakyReLU(0.2)"
    err = error_of(_with_rows(tiny, rows, len(tiny["backbone"])))
    assert err.layer == 3 and "activation 'nn.LeakyReLU(0.2)'" in str(err)

    v7 = PRESETS["yolov7"].replace(activation="leakyrelu", spp=Spp("sp", 512))
    cfg = set_row(expand(v7), 51, [-1, 1, "SPPCSPC", [512]])
    err = error_of(cfg)
    assert err.layer == 51 and "SPPCSPC uses silu but layer 0 uses leakyrelu" in str(err)


def test_truncated_cfg_and_foreign_stem():
    cfg = expand(PRESETS["yolov7-tiny"])
    err = error_of(_with_rows(cfg, rows_of(cfg)[:40], len(cfg["backbone"])))
    assert "the cfg ends after layer 39" in str(err)
    err = error_of(set_row(cfg, 0, [-1, 1, "ReOrg", []]))
    assert err.layer == 0 and "expected stem conv 0 (Conv 3×3 from the input), found ReOrg" in str(err)
