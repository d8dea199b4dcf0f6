"""Genome: validation, YAML/dict round trips, canonical form and hash, editing helpers."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import yaml

from nas.errors import ConfigError, NasError
from nas.genome import (
    ACTIVATIONS, DETECT_KINDS, ELAN_PATTERNS, HEAD_DOWNSAMPLES, OUTPUT_KINDS, SILU_ONLY_SPP,
    SPP_KINDS, STAGE_DOWNSAMPLES, WIDTHLESS_DOWNSAMPLES, Downsample, Elan, Genome, Spp, StemConv,
)
from nas.presets import PRESETS, get_preset

ALL_KINDS = sorted(set(ACTIVATIONS + DETECT_KINDS + ELAN_PATTERNS + HEAD_DOWNSAMPLES
                       + OUTPUT_KINDS + SPP_KINDS + STAGE_DOWNSAMPLES))


@pytest.fixture(params=sorted(PRESETS))
def preset(request) -> Genome:
    return PRESETS[request.param]


# -- round trips ---------------------------------------------------------------------------

def test_yaml_round_trip(preset):
    text = preset.to_yaml(header="a genome\nsecond line")
    assert text.startswith("# a genome\n# second line\n")
    back = Genome.from_yaml(text, source="g.yaml")
    assert back == preset
    assert back.genome_hash() == preset.genome_hash()
    assert back.canonical() == preset.canonical()


def test_dict_round_trip_and_plain_types(preset):
    data = preset.to_dict()
    assert Genome.from_dict(data) == preset
    # plain YAML/JSON types only, and unset widths are left out
    assert json.loads(json.dumps(data)) == data
    assert "width" not in data["stages"][0]["down"]


def test_hashable_and_value_equality(preset):
    twin = Genome.from_yaml(preset.to_yaml())
    assert twin is not preset and twin == preset and hash(twin) == hash(preset)
    assert len({preset, twin, *PRESETS.values()}) == len(PRESETS)


def test_canonical_form_and_hash_shape(preset):
    canon = preset.canonical()
    assert canon == json.dumps(json.loads(canon), sort_keys=True, separators=(",", ":"))
    assert re.fullmatch(r"[0-9a-f]{12}", preset.genome_hash())
    assert re.fullmatch(r"[0-9a-f]{64}", preset.genome_hash(64))
    assert len({g.genome_hash() for g in PRESETS.values()}) == len(PRESETS)


def _mutations(path, value):
    """(path, new value) edits of one leaf; a downsample kind is swapped with a fitting width."""
    if isinstance(value, int):
        return [(path, v) for v in (value + 2, value + 8, value * 2, value - 1)]
    if path.endswith("down.kind"):
        parent = path[: -len(".kind")]
        return [(parent, Downsample(k, None if k in WIDTHLESS_DOWNSAMPLES else 64))
                for k in ALL_KINDS if k != value]
    return [(path, k) for k in ALL_KINDS if k != value]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_hash_changes_when_any_field_changes(name):
    base = PRESETS[name]
    unchangeable = set()
    for path, value in base.leaves().items():
        changed = []
        for where, candidate in _mutations(path, value):
            try:
                changed.append(base.replace_at(where, candidate))
            except ConfigError:
                continue
        if not changed:
            unchangeable.add(path)
        for other in changed:
            assert other != base and other.genome_hash() != base.genome_hash(), path
    # alone, these only have invalid alternatives: the P2 stride must stay 4, and SPPCSPC has a
    # built-in SiLU
    expected = {f"stem[{i}].stride" for i in range(len(base.stem))} | {"stages[0].down.kind"}
    if base.spp.kind in SILU_ONLY_SPP:
        expected.add("activation")
    assert unchangeable == expected


def test_hash_changes_for_compound_stride_and_downsample_edits():
    v7 = get_preset("yolov7")
    swapped = v7.replace(stem=(StemConv(32, 2), StemConv(64, 1), StemConv(64, 1), StemConv(128, 2)))
    assert swapped.genome_hash() != v7.genome_hash()
    first = dataclasses.replace(v7.stages[0], down=Downsample("conv", 128))
    down_first = v7.replace(stem=v7.stem[:3], stages=(first, *v7.stages[1:]))
    assert down_first.genome_hash() != v7.genome_hash()


# -- bad genome YAML -------------------------------------------------------------------------

def _tiny_yaml_with(edit) -> str:
    data = PRESETS["yolov7-tiny"].to_dict()
    edit(data)
    return yaml.safe_dump(data, sort_keys=False)


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        Genome.from_yaml(text, source="my_genome.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("my_genome.yaml: ")
    return message


@pytest.mark.parametrize("edit, key, words", [
    (lambda d: d["stages"][1]["elan"].pop("depth"), "stages[1].elan.depth", "missing key"),
    (lambda d: d.pop("anchors"), "anchors", "missing key"),
    (lambda d: d["head"].pop("bottom_up"), "head.bottom_up", "missing key"),
    (lambda d: d["stages"][0]["elan"].update(extra=1), "stages[0].elan.extra", "unknown key"),
    (lambda d: d.update(colour="red"), "colour", "unknown key"),
    (lambda d: d["spp"].update(kind="aspp"), "spp.kind", "unknown value 'aspp'"),
    (lambda d: d.update(activation="gelu"), "activation", "unknown value"),
    (lambda d: d.update(detect="iauxdetect"), "detect", "unknown value"),
    (lambda d: d["stages"][2]["down"].update(kind="none"), "stages[2].down.kind", "only for"),
    (lambda d: d["head"]["bottom_up"][1]["down"].update(kind="mp"),
     "head.bottom_up[1].down.kind", "unknown value 'mp'"),
    (lambda d: d["stages"][0]["elan"].update(pattern="every3"), "stages[0].elan.pattern",
     "unknown"),
    (lambda d: d["head"]["top_down"][0].update(lateral=-64), "head.top_down[0].lateral",
     "positive width"),
    (lambda d: d["outputs"]["widths"].__setitem__(1, 0), "outputs.widths[1]", "positive width"),
    (lambda d: d["stem"][0].update(width=-32), "stem[0].width", "positive width"),
    (lambda d: d["stages"][2]["elan"].update(depth=0), "stages[2].elan.depth", "1 to 64, got 0"),
    (lambda d: d["stages"][2]["elan"].update(depth=10**6), "stages[2].elan.depth", "1 to 64, got 1000000"),
    (lambda d: d.update(stem=d["stem"] + [{"width": 8, "stride": 1}] * 10**5), "stem", "1 to 16 convs"),
    (lambda d: d.update(activation="__import__('os').system('true')"), "activation", "unknown value"),
    (lambda d: d["spp"].update(kind="x" * 10**4), "spp.kind", "xxx..."),
    (lambda d: d["stages"][2]["elan"].update(pattern="every2", depth=3), "stages[2].elan.depth",
     "even"),
    (lambda d: d["stages"][1]["down"].update(width=64), "stages[1].down.width", "unset"),
    (lambda d: d["head"]["bottom_up"][0]["down"].pop("width"), "head.bottom_up[0].down.width",
     "required"),
    (lambda d: d["stages"][1]["elan"].update(entry="64"), "stages[1].elan.entry", "integer"),
    (lambda d: d.update(nc=True), "nc", "integer"),
    (lambda d: d.update(nc=0), "nc", ">= 1"),
    (lambda d: d.update(stages=d["stages"][:3]), "stages", "exactly 4"),
    (lambda d: d["outputs"].update(widths=[1, 2]), "outputs.widths", "exactly 3"),
    (lambda d: d.update(stem={"width": 32}), "stem", "must be a list"),
    (lambda d: d["anchors"][2].pop(), "anchors[2]", "pairs"),
    (lambda d: d["stem"][1].update(stride=1), "stem", "P2 stride"),
    (lambda d: d["stem"][1].update(stride=3), "stem[1].stride", "1 or 2"),
    (lambda d: d.update(activation="silu", spp={"kind": "sppcspc", "width": 256})
     or d.update(activation="relu"), "spp.kind", "built-in SiLU"),
])
def test_bad_genome_yaml_names_the_key(edit, key, words):
    message = _error(_tiny_yaml_with(edit))
    assert f"'{key}'" in message
    assert words in message


def test_malformed_and_non_mapping_yaml():
    assert "malformed YAML" in _error("stages: [1, 2\n")
    assert "must be a mapping" in _error("- just\n- a list\n")


def test_construction_validates_without_yaml():
    tiny = PRESETS["yolov7-tiny"]
    with pytest.raises(ConfigError, match=r"'stages\[3\].elan.depth' must be 1 to 64, got 0"):
        tiny.replace_at("stages[3].elan.depth", 0)
    with pytest.raises(ConfigError, match="must be a tuple"):
        tiny.replace(stem=[StemConv(32, 2), StemConv(64, 2)])
    with pytest.raises(ConfigError, match="sppf"):
        tiny.replace(spp=Spp("sppf", 256))  # leakyrelu network, SPPF has built-in SiLU


# -- editing helpers ---------------------------------------------------------------------------

def test_get_and_replace_at():
    v7 = get_preset("yolov7")
    assert v7.get("stages[2].elan.depth") == 4
    assert v7.get("stages.2.elan.depth") == 4
    assert v7.get("outputs.widths[2]") == 1024
    deeper = v7.replace_at("stages[2].elan", Elan(6, "every2", 256, 256, 1024))
    assert deeper.get("stages[2].elan.depth") == 6 and v7.get("stages[2].elan.depth") == 4
    assert deeper.replace_at("stages[2].elan.depth", 4) == v7
    for bad in ("stages[9].elan", "nope", "stages[1].elan.depth.x", ""):
        with pytest.raises(ConfigError, match="no such genome path"):
            v7.replace_at(bad, 1)


def test_leaves_by_role():
    tiny = get_preset("yolov7-tiny")
    depths = tiny.leaves("depth")
    assert len(depths) == 8 and set(depths.values()) == {2}
    widths = tiny.leaves("width")
    assert widths["stem[0].width"] == 32 and widths["outputs.widths[2]"] == 512
    assert "stages[1].down.width" not in widths  # unset for 'mp'
    assert widths["head.bottom_up[0].down.width"] == 128
    assert tiny.leaves()["activation"] == "leakyrelu"
    assert set(widths) | set(depths) < set(tiny.leaves())


def test_map_fields_scales_only_tagged_fields():
    v7 = get_preset("yolov7")
    wide = v7.map_fields(lambda _path, w: w * 2)
    assert all(wide.get(p) == 2 * w for p, w in v7.leaves("width").items())
    assert wide.leaves("depth") == v7.leaves("depth")
    assert wide.stem[1].stride == 2 and wide.nc == 80 and wide.anchors == v7.anchors
    deep = v7.map_fields(lambda _path, d: d + 2, role="depth")
    assert set(deep.leaves("depth").values()) == {6}
    assert deep.leaves("width") == v7.leaves("width")
    tiny = get_preset("yolov7-tiny")
    assert tiny.map_fields(lambda _p, w: w).stages[1].down.width is None
    with pytest.raises(ConfigError, match="even"):
        v7.map_fields(lambda _path, d: d + 1, role="depth")


def test_get_preset_unknown_lists_names():
    with pytest.raises(NasError, match="known: yolov7, yolov7-tiny, yolov7x"):
        get_preset("yolov9")
    assert get_preset("yolov7x") is PRESETS["yolov7x"]
    with pytest.raises(TypeError):
        PRESETS["mine"] = get_preset("yolov7")  # read-only mapping
