"""The 15 upstream YOLOv7 cfgs (``cfg/training`` and ``cfg/deploy``), written by this project's code.

No file of YOLOv7 enters the project: the P5 cfgs are the presets' expansions (their rows equal
the upstream training cfgs, see ``nas/presets.py``); their deploy forms differ only by a plain
``Detect`` head (and ``deploy/yolov7-tiny-silu`` by Conv's default SiLU). The P6 cfgs (W6, E6,
D6, E6E) are generated here from their structure as described in the YOLOv7 paper and
REFERENCE.md: a ReOrg stem, five downsample + ELAN stages (E6E: two ELANs side by side merged
by a Shortcut), SPPCSPC, a top-down and a bottom-up path of ELAN-H blocks, 3×3 output convs and
IAuxDetect whose auxiliary inputs are 3×3 convs on the top-down features (deploy: no auxiliary
convs, Detect). The oracle that the structure is YOLOv7's is the exact parameter counts of
REFERENCE.md (``tests/nas/test_upstream_reference.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

from nas.expand import expand
from nas.presets import PRESETS

ANCHORS_P6 = [[19, 27, 44, 40, 38, 94], [96, 68, 86, 152, 180, 137],
              [140, 301, 303, 264, 238, 542], [436, 615, 739, 380, 925, 792]]


@dataclass(frozen=True)
class P6:
    """Widths of one P6 model; ELAN entries are fixed across the family (below)."""

    stem: int
    down: str                         # "conv" (3×3 s2) or "downc"
    stages: tuple[int, ...]           # downsample width = ELAN transition width, per stage
    chain: int                        # 3×3 convs per ELAN chain (4, 6 or 8)
    spp: int
    laterals: tuple[int, int, int]    # top-down lateral widths = ELAN-H outputs (P5, P4, P3)
    bottom_up: tuple[int, int, int]   # bottom-up downsample widths = ELAN-H outputs (P4, P5, P6)
    outputs: tuple[int, int, int, int]
    aux: tuple[int, int, int, int]
    double: bool = False              # E6E: two ELANs per block, merged by Shortcut


BACKBONE_ENTRY = (64, 128, 256, 384, 512)
TOP_DOWN_ENTRY = (384, 256, 128)
BOTTOM_UP_ENTRY = (256, 384, 512)

P6_MODELS = {
    "yolov7-w6": P6(64, "conv", (128, 256, 512, 768, 1024), 4, 512, (384, 256, 128), (256, 384, 512),
                    (256, 512, 768, 1024), (320, 640, 960, 1280)),
    "yolov7-e6": P6(80, "downc", (160, 320, 640, 960, 1280), 6, 640, (480, 320, 160), (320, 480, 640),
                    (320, 640, 960, 1280), (320, 640, 960, 1280)),
    "yolov7-d6": P6(96, "downc", (192, 384, 768, 1152, 1536), 8, 768, (576, 384, 192), (384, 576, 768),
                    (384, 768, 1152, 1536), (384, 768, 1152, 1536)),
    "yolov7-e6e": P6(80, "downc", (160, 320, 640, 960, 1280), 6, 640, (480, 320, 160), (320, 480, 640),
                     (320, 640, 960, 1280), (320, 640, 960, 1280), double=True),
}


class _Rows:
    def __init__(self):
        self.rows: list[list] = []

    def add(self, frm, module: str, args: list) -> int:
        self.rows.append([frm, 1, module, args])
        return len(self.rows) - 1

    def conv(self, width: int, k: int, s: int = 1, frm=-1) -> int:
        return self.add(frm, "Conv", [width, k, s])


def _elan(r: _Rows, src: int, entry: int, chain_width: int, chain: int, every2: bool, out: int) -> int:
    """Two 1×1 entries on ``src``, a chain of 3×3 convs on the second, concat, 1×1 transition."""
    first = r.conv(entry, 1, frm=src)
    second = r.conv(entry, 1, frm=src)
    links = [r.conv(chain_width, 3) for _ in range(chain)]
    picked = links[::-1][::2] if every2 else links[::-1]
    r.add(picked + [second, first], "Concat", [1])
    return r.conv(out, 1)


def _block(r: _Rows, src: int, entry: int, chain_width: int, chain: int, every2: bool, out: int,
           double: bool) -> tuple[int, int]:
    """(block output, its second transition): an ELAN, or two merged by Shortcut (E6E)."""
    first = _elan(r, src, entry, chain_width, chain, every2, out)
    if not double:
        return first, first
    second = _elan(r, src, entry, chain_width, chain, every2, out)
    return r.add([second, first], "Shortcut", [1]), second


def _down(r: _Rows, kind: str, width: int) -> int:
    return r.conv(width, 3, 2) if kind == "conv" else r.add(-1, "DownC", [width])


def p6_cfg(name: str, deploy: bool = False) -> dict:
    """The rows of upstream ``cfg/training/<name>.yaml`` (``deploy``: ``cfg/deploy``), nc=80."""
    m = P6_MODELS[name]
    r = _Rows()
    r.add(-1, "ReOrg", [])
    r.conv(m.stem, 3, 1)
    stage_out = []
    for width, entry in zip(m.stages, BACKBONE_ENTRY):
        _down(r, m.down, width)
        stage_out.append(_block(r, len(r.rows) - 1, entry, entry, m.chain, True, width, m.double)[0])
    n_backbone = len(r.rows)
    spp = r.add(-1, "SPPCSPC", [m.spp])
    top_down, aux_src = [spp], [spp]
    for lateral, entry, routed in zip(m.laterals, TOP_DOWN_ENTRY, reversed(stage_out[1:4])):
        r.conv(lateral, 1)
        r.add(-1, "nn.Upsample", [None, 2, "nearest"])
        r.conv(lateral, 1, frm=routed)
        cat = r.add([-1, -2], "Concat", [1])
        out, second = _block(r, cat, entry, entry // 2, m.chain, False, lateral, m.double)
        top_down.append(out)
        aux_src.append(second)
    level_out = [top_down[-1]]
    for width, entry, lateral in zip(m.bottom_up, BOTTOM_UP_ENTRY, reversed(top_down[:3])):
        _down(r, m.down, width)
        cat = r.add([-1, lateral], "Concat", [1])
        level_out.append(_block(r, cat, entry, entry // 2, m.chain, False, width, m.double)[0])
    heads = [r.conv(w, 3, 1, frm=src) for w, src in zip(m.outputs, level_out)]
    if deploy:
        r.add(heads, "Detect", ["nc", "anchors"])
    else:
        heads += [r.conv(w, 3, 1, frm=src) for w, src in zip(m.aux, reversed(aux_src))]
        r.add(heads, "IAuxDetect", ["nc", "anchors"])
    return {"nc": 80, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": ANCHORS_P6,
            "backbone": r.rows[:n_backbone], "head": r.rows[n_backbone:]}


def p5_cfg(name: str, deploy: bool = False) -> dict:
    """Upstream P5 cfgs: the presets' expansions; deploy forms end in a plain Detect."""
    if name == "yolov7-tiny-silu":  # deploy only: yolov7-tiny with Conv's default SiLU
        return expand(PRESETS["yolov7-tiny"].replace(activation="silu", detect="detect"))
    genome = PRESETS[name]
    return expand(genome.replace(detect="detect") if deploy else genome)


#: "training/<name>" or "deploy/<name>" → cfg dict
UPSTREAM = {
    **{f"training/{n}": (lambda n=n: p5_cfg(n)) for n in ("yolov7-tiny", "yolov7", "yolov7x")},
    **{f"training/{n}": (lambda n=n: p6_cfg(n)) for n in P6_MODELS},
    **{f"deploy/{n}": (lambda n=n: p5_cfg(n, deploy=True))
       for n in ("yolov7-tiny", "yolov7-tiny-silu", "yolov7", "yolov7x")},
    **{f"deploy/{n}": (lambda n=n: p6_cfg(n, deploy=True)) for n in P6_MODELS},
}


def upstream_cfg(key: str) -> dict:
    return UPSTREAM[key]()
