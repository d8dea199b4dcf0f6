"""Concatenation-aware compound scaling of a :class:`~nas.genome.Genome` (pure; no torch).

EfficientNet (Tan & Le 2019) scales depth by d = α^φ, width by w = β^φ and resolution by
r = γ^φ. On a plain (residual) network "depth" is a repeat count and "width" a channel count, and
the two are independent. In a concatenation-based block they are not (YOLOv7, Wang et al. 2022,
§3.2): an ELAN block concatenates its chain outputs, so lengthening the chain *widens* the
concatenated output, which is the input of the 1x1 transition conv that closes the block.

The rule implemented here (see docs/SCALING.md for the worked yolov7 → yolov7x example):

1. **Depth.** Every ELAN chain length ``n`` becomes ``ceil(n·d)``
   (:func:`~scaling.rounding.round_repeats`). Pattern ``every2`` concatenates every second chain
   output, so its chain must stay even: ``ceil(n·d)`` is rounded **up** to the next even number,
   which equals ``2·ceil((n/2)·d)`` — the number of concatenated chain outputs is what is
   ceil-scaled. (4·1.2 = 4.8 → 5 → 6; 4·1.5 = 6 → 6; 4·1.728 = 6.9 → 7 → 8.)
2. **Width.** Every width field (stem, downsample branches, SPP, head laterals, output convs,
   and the ELAN entry and chain convs) becomes ``round_filters(c, w)`` (EfficientNet rounding to
   a multiple of 8, never losing more than 10%).
3. **Transition follows the concat.** An ELAN's concatenated width is
   ``C = 2·entry + k·chain`` with ``k = n`` (``all``) or ``n/2`` (``every2``). With the new chain
   length and the new (rounded) entry/chain widths, ``ρ = C_new / C_old`` is the actual ratio of
   concatenated widths, and the transition's output becomes ``round_filters(out, ρ)``. So the
   transition keeps its input:output ratio; its input is the concatenated width by construction.
   Up to the rounding of entry/chain, ``ρ = ρ_depth · w`` with ``ρ_depth`` the ratio from the
   chain length alone: the transition is scaled by the depth-induced factor, then by the width
   multiplier like every other layer.

Nothing else changes: ``nc``, anchors, kinds, patterns and strides are kept.
"""
from __future__ import annotations

from typing import NamedTuple

from nas.errors import ConfigError, ScalingError
from nas.genome import Elan, Genome

from .coefficients import Coefficients
from .rounding import _check_multiplier, round_filters, round_repeats, round_resolution

__all__ = [
    "MAX_STRIDE", "ElanScaling", "concat_width", "scale_chain", "elan_scalings", "scale_genome",
    "scale_member", "member_resolution", "check_base_img",
]

#: Largest stride of every genome (P5 family: strides 8/16/32); resolutions are multiples of it.
MAX_STRIDE = 32


class ElanScaling(NamedTuple):
    """How one ELAN block was scaled (for tests, docs and reports)."""

    path: str          # genome path of the block, e.g. "stages[2].elan"
    old: Elan
    new: Elan
    concat_old: int    # concatenated width before scaling (= the old transition input)
    concat_new: int    # concatenated width after scaling (= the new transition input)

    @property
    def ratio(self) -> float:
        """ρ = concat_new / concat_old, the factor the transition output is scaled by."""
        return self.concat_new / self.concat_old


def concat_width(elan: Elan) -> int:
    """Channels of an ELAN's concat: ``2·entry + k·chain``, k = depth (all) or depth/2 (every2)."""
    k = elan.depth if elan.pattern == "all" else elan.depth // 2
    return 2 * elan.entry + k * elan.chain


def scale_chain(depth: int, depth_mult: float, pattern: str) -> int:
    """New chain length: ``ceil(depth·d)``, then up to the next even number for ``every2``."""
    n = round_repeats(depth, depth_mult)
    if pattern == "every2" and n % 2:
        n += 1
    return n


def _check_mult(name: str, value) -> float:
    return _check_multiplier(f"{name} multiplier", value)


def _elan_paths(genome: Genome) -> list[str]:
    return [path[: -len(".depth")] for path in genome.leaves("depth")]


def elan_scalings(genome: Genome, depth_mult: float, width_mult: float) -> tuple[ElanScaling, ...]:
    """The scaled form of every ELAN block of ``genome`` (rules 1–3 of the module docstring).

    ``width_mult`` here is the multiplier of the blocks' entry and chain convs; the transition
    follows the concatenated width.
    """
    d = _check_mult("depth", depth_mult)
    w = _check_mult("block width", width_mult)
    out = []
    for path in _elan_paths(genome):
        old: Elan = genome.get(path)
        grown = Elan(scale_chain(old.depth, d, old.pattern), old.pattern,
                     round_filters(old.entry, w), round_filters(old.chain, w), old.out)
        c_old, c_new = concat_width(old), concat_width(grown)
        new = Elan(grown.depth, grown.pattern, grown.entry, grown.chain,
                   round_filters(old.out, c_new / c_old))
        out.append(ElanScaling(path, old, new, c_old, c_new))
    return tuple(out)


def scale_genome(genome: Genome, depth_mult: float, width_mult: float, *,
                 block_width_mult: float | None = None) -> Genome:
    """``genome`` with depth ×``depth_mult`` and width ×``width_mult``, concatenation-aware.

    ``block_width_mult`` (default: ``width_mult``) is the multiplier of the ELAN entry and chain
    convs only. Compound scaling leaves it at the default. Setting it to 1 gives the variant the
    YOLOv7 paper used for yolov7x: the computational blocks are only deepened, their transitions
    follow the concat (×ρ), and every other layer is widened by ``width_mult`` (chosen = ρ there);
    see docs/SCALING.md.

    Raises :class:`ScalingError` for a non-finite or non-positive multiplier, or when the scaled
    genome is invalid (e.g. a chain past ``nas.genome.MAX_ELAN_DEPTH``). Multiplier 1 on both
    returns an equal genome.
    """
    w = _check_mult("width", width_mult)
    bw = w if block_width_mult is None else block_width_mult
    blocks = {s.path: s.new for s in elan_scalings(genome, depth_mult, bw)}
    try:
        return _apply(genome, blocks, w)
    except ConfigError as exc:
        raise ScalingError(f"depth x{depth_mult:g}, width x{w:g} gives an invalid genome: {exc}") from None


def _apply(genome: Genome, blocks: dict[str, Elan], w: float) -> Genome:
    """``genome`` with every ELAN replaced by its scaled form and other widths × ``w``."""
    def width(path: str, value: int) -> int:
        parent, _, leaf = path.rpartition(".")
        if parent in blocks:
            return getattr(blocks[parent], leaf)
        return round_filters(value, w)

    def depth(path: str, _value: int) -> int:
        return blocks[path.rpartition(".")[0]].depth

    return genome.map_fields(depth, role="depth").map_fields(width, role="width")


def member_resolution(base_img: int, resolution_mult: float) -> int:
    """``base_img·r`` to the nearest multiple of :data:`MAX_STRIDE` (see ``round_resolution``)."""
    return round_resolution(base_img, resolution_mult, MAX_STRIDE)


def check_base_img(base_img) -> int:
    """The base resolution as an int; :class:`ScalingError` unless a positive multiple of 32."""
    if isinstance(base_img, bool) or not isinstance(base_img, int) or base_img <= 0 \
            or base_img % MAX_STRIDE:
        raise ScalingError(f"image size {base_img!r} must be a positive multiple of the largest "
                           f"stride {MAX_STRIDE}")
    return base_img


def scale_member(genome: Genome, coeffs: Coefficients, phi: float,
                 base_img: int) -> tuple[Genome, int]:
    """The family member at compound exponent ``phi``: (scaled genome, its input size).

    Depth ×α^φ, width ×β^φ (:func:`scale_genome`), resolution ``base_img``·γ^φ rounded to the
    nearest multiple of 32. φ = 0 gives the base genome and ``base_img`` unchanged.
    """
    base_img = check_base_img(base_img)
    d, w, r = coeffs.at(phi)
    return scale_genome(genome, d, w), member_resolution(base_img, r)
