"""Hand-checked tests of the pure scaling math (scaling.rounding / coefficients / grid / targets).

Expected numbers are written out literally, with the arithmetic in comments; they are not
recomputed with the code under test.
"""
from __future__ import annotations

import itertools
import math

import pytest

from nas.errors import NasError, ScalingError
from scaling.coefficients import EFFICIENTNET, Coefficients, parse_phi_list
from scaling.grid import coefficient_grid
from scaling.rounding import (
    make_divisible,
    round_filters,
    round_repeats,
    round_resolution,
    yolo_depth,
    yolo_width,
)
from scaling.targets import phi_for_target, phis_for_targets

# --------------------------------------------------------------------------------------------
# round_filters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters, w, expected",
    [
        # 32·1.1 = 35.2; int(35.2 + 4) = 39; 39 // 8 * 8 = 32; 0.9·35.2 = 31.68 ≤ 32 → 32
        (32, 1.1, 32),
        # 16·1.8 = 28.8; int(32.8) = 32 → 32; 0.9·28.8 = 25.92 → 32
        (16, 1.8, 32),
        # 320·1.4 = 448 = 56·8 exactly → 448
        (320, 1.4, 448),
        # 27·1.0 = 27; int(31) // 8 * 8 = 24; 0.9·27 = 24.3 > 24 → +8 → 32   (the +8 rule)
        (27, 1.0, 32),
        # 16·1.2 = 19.2; int(23.2) // 8 * 8 = 16; 0.9·19.2 = 17.28 > 16 → 24 (+8 rule, B3 stage 1)
        (16, 1.2, 24),
        # 35·1.0 = 35; int(39) // 8 * 8 = 32; 0.9·35 = 31.5 ≤ 32 → 32   (no +8)
        (35, 1.0, 32),
        # tie: 44 = 5.5·8; int(48) // 8 * 8 = 48 (ties go up)
        (44, 1.0, 48),
        # 2·1.0 = 2; int(6) // 8 * 8 = 0 → max(8, 0) = 8; 8 ≥ 1.8 → 8 (floor = divisor)
        (2, 1.0, 8),
        # 100·0.5 = 50; int(54) // 8 * 8 = 48; 48 ≥ 45 → 48 (width < 1 is allowed)
        (100, 0.5, 48),
    ],
)
def test_round_filters_hand_cases(filters, w, expected):
    assert round_filters(filters, w) == expected


def test_round_filters_divisor_and_min_depth():
    # 30·1.0 with divisor 4: int(32) // 4 * 4 = 32; 32 ≥ 27 → 32
    assert round_filters(30, 1.0, divisor=4) == 32
    # 2·1.0, divisor 8, min_depth 16: max(16, 0) = 16
    assert round_filters(2, 1.0, min_depth=16) == 16
    # 0 filters stay 0
    assert round_filters(0, 2.0) == 0


@pytest.mark.parametrize(
    "args",
    [(-1, 1.0), (32, 0.0), (32, -1.0), (32, float("nan")), (32, float("inf")), (3.5, 1.0),
     (32, 1.0, 0), (True, 1.0)],
)
def test_round_filters_rejects_bad_input(args):
    with pytest.raises(ScalingError):
        round_filters(*args)


# --------------------------------------------------------------------------------------------
# round_repeats
# --------------------------------------------------------------------------------------------


def test_round_repeats_hand_cases():
    assert round_repeats(1, 1.0) == 1
    assert round_repeats(3, 1.1) == 4  # 3.3 → 4
    assert round_repeats(4, 1.8) == 8  # 7.2 → 8
    assert round_repeats(0, 3.1) == 0
    # 2.2·25 is 55.00000000000001 in binary floats (the reference's ceil would give 56);
    # the exact product is 55 → ceil 55
    assert 2.2 * 25 > 55
    assert round_repeats(25, 2.2) == 55


def test_round_repeats_rejects_bad_input():
    for args in [(-1, 1.0), (2, 0), (2, float("nan")), (2.0, 1.0)]:
        with pytest.raises(ScalingError):
            round_repeats(*args)


# --------------------------------------------------------------------------------------------
# EfficientNet B0–B7 (REFERENCE.md table; Tan & Le 2019 Table 1 for B0)
# --------------------------------------------------------------------------------------------

# B0: stem, the seven stage outputs, head
B0_FILTERS = [32, 16, 24, 40, 80, 112, 192, 320, 1280]
B0_REPEATS = [1, 2, 2, 3, 3, 4, 1]  # 16 MBConv blocks

# (width, depth) per published model, REFERENCE.md
EFFNET_COEFFS = {
    "b1": (1.0, 1.1),
    "b2": (1.1, 1.2),
    "b3": (1.2, 1.4),
    "b4": (1.4, 1.8),
    "b5": (1.6, 2.2),
    "b6": (1.8, 2.6),
    "b7": (2.0, 3.1),
}

# Hand-computed round_filters(f, w) for B0_FILTERS:
EXPECTED_FILTERS = {
    # w = 1.0: every B0 size is already a multiple of 8
    "b1": [32, 16, 24, 40, 80, 112, 192, 320, 1280],
    # w = 1.1: 35.2→32, 17.6→16 (≥15.84), 26.4→24 (≥23.76), 44→48 (tie up), 88→88,
    #          123.2→120, 211.2→208, 352→352, 1408→1408
    "b2": [32, 16, 24, 48, 88, 120, 208, 352, 1408],
    # w = 1.2: 38.4→40, 19.2→16<17.28→24, 28.8→32, 48→48, 96→96, 134.4→136, 230.4→232,
    #          384→384, 1536→1536
    "b3": [40, 24, 32, 48, 96, 136, 232, 384, 1536],
    # w = 1.4: 44.8→48, 22.4→24, 33.6→32 (≥30.24), 56→56, 112→112, 156.8→160, 268.8→272,
    #          448→448, 1792→1792
    "b4": [48, 24, 32, 56, 112, 160, 272, 448, 1792],
    # w = 1.6: 51.2→48 (≥46.08), 25.6→24 (≥23.04), 38.4→40, 64→64, 128→128, 179.2→176,
    #          307.2→304, 512→512, 2048→2048
    "b5": [48, 24, 40, 64, 128, 176, 304, 512, 2048],
    # w = 1.8: 57.6→56, 28.8→32, 43.2→40 (≥38.88), 72→72, 144→144, 201.6→200, 345.6→344,
    #          576→576, 2304→2304
    "b6": [56, 32, 40, 72, 144, 200, 344, 576, 2304],
    # w = 2.0: exact doubling (stem 32·2 = 64)
    "b7": [64, 32, 48, 80, 160, 224, 384, 640, 2560],
}

# Hand-computed ceil(d · [1, 2, 2, 3, 3, 4, 1]) and the total block count:
EXPECTED_REPEATS = {
    "b1": ([2, 3, 3, 4, 4, 5, 2], 23),  # 1.1, 2.2, 2.2, 3.3, 3.3, 4.4, 1.1
    "b2": ([2, 3, 3, 4, 4, 5, 2], 23),  # 1.2, 2.4, 2.4, 3.6, 3.6, 4.8, 1.2
    "b3": ([2, 3, 3, 5, 5, 6, 2], 26),  # 1.4, 2.8, 2.8, 4.2, 4.2, 5.6, 1.4
    "b4": ([2, 4, 4, 6, 6, 8, 2], 32),  # 1.8, 3.6, 3.6, 5.4, 5.4, 7.2, 1.8
    "b5": ([3, 5, 5, 7, 7, 9, 3], 39),  # 2.2, 4.4, 4.4, 6.6, 6.6, 8.8, 2.2
    "b6": ([3, 6, 6, 8, 8, 11, 3], 45),  # 2.6, 5.2, 5.2, 7.8, 7.8, 10.4, 2.6
    "b7": ([4, 7, 7, 10, 10, 13, 4], 55),  # 3.1, 6.2, 6.2, 9.3, 9.3, 12.4, 3.1
}

# Published input resolutions (REFERENCE.md)
EFFNET_RES = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "b4": 380, "b5": 456, "b6": 528,
              "b7": 600}


@pytest.mark.parametrize("name", sorted(EFFNET_COEFFS))
def test_efficientnet_filters(name):
    w, _ = EFFNET_COEFFS[name]
    assert [round_filters(f, w) for f in B0_FILTERS] == EXPECTED_FILTERS[name]


@pytest.mark.parametrize("name", sorted(EFFNET_COEFFS))
def test_efficientnet_repeats(name):
    _, d = EFFNET_COEFFS[name]
    repeats, total = EXPECTED_REPEATS[name]
    got = [round_repeats(r, d) for r in B0_REPEATS]
    assert got == repeats
    assert sum(got) == total


def test_efficientnet_b0_identity():
    assert [round_filters(f, 1.0) for f in B0_FILTERS] == B0_FILTERS
    assert [round_repeats(r, 1.0) for r in B0_REPEATS] == B0_REPEATS
    assert sum(B0_REPEATS) == 16


def test_published_resolutions_are_not_gamma_powers():
    """REFERENCE.md: the published B1–B7 are hand-picked, not γ^φ·224 for φ = 1..7.

    224·1.15^φ for φ = 1..7 = 257.6, 296.2, 340.7, 391.8, 450.5, 518.1, 595.8; to a multiple
    of 8: 256, 296, 344, 392, 448, 520, 592 — none equals 240, 260, 300, 380, 456, 528, 600.
    """
    gamma_sizes = [round_resolution(224, EFFICIENTNET.gamma**phi, multiple=8) for phi in range(1, 8)]
    assert gamma_sizes == [256, 296, 344, 392, 448, 520, 592]
    published = [EFFNET_RES[f"b{i}"] for i in range(1, 8)]
    assert all(g != p for g, p in zip(gamma_sizes, published))


def test_published_resolutions_through_round_resolution():
    """With the published ratio r = res/224, round_resolution gives back res where res allows.

    Multiples of 8: 224, 240, 456, 528, 600 reproduce with multiple=8. 260, 300 and 380 are
    not multiples of 8 (32.5·8, 37.5·8, 47.5·8) — at a half-way point the rule rounds up — but
    all eight are multiples of 4. Only 224 is a multiple of 32 (7·32), so a stride-32 detector
    could not use B1–B7's sizes as published.
    """
    for name, res in EFFNET_RES.items():
        r = res / 224
        assert round_resolution(224, r, multiple=4) == res, name
        if res % 8 == 0:
            assert round_resolution(224, r, multiple=8) == res, name
        else:
            assert round_resolution(224, r, multiple=8) == res + 4, name  # tie goes up
    assert [res for res in EFFNET_RES.values() if res % 32 == 0] == [224]


# --------------------------------------------------------------------------------------------
# round_resolution
# --------------------------------------------------------------------------------------------


def test_round_resolution_hand_cases():
    assert round_resolution(640, 1.0) == 640
    # 640·1.15 = 736 = 23·32 exactly
    assert round_resolution(640, 1.15) == 736
    # 640·1.15² = 846.4 → /32 = 26.45 → 26·32 = 832 (nearest, not ceil 864)
    assert round_resolution(640, 1.15**2) == 832
    # 640·1.2 = 768 = 24·32
    assert round_resolution(640, 1.2) == 768
    # 1280·1.1 = 1408 = 22·64 (P6 models: largest stride 64)
    assert round_resolution(1280, 1.1, multiple=64) == 1408
    # 1280·1.15 = 1472 = 23·64
    assert round_resolution(1280, 1.15, multiple=64) == 1472
    # tie: 48 = 1.5·32 → up to 64
    assert round_resolution(48, 1.0) == 64
    # tiny: 32·0.1 = 3.2 → 0 → at least one stride: 32
    assert round_resolution(32, 0.1) == 32


def test_round_resolution_rejects_bad_input():
    for args in [(0, 1.0), (640, 0.0), (640, float("inf")), (640, 1.0, 0), (640.0, 1.0)]:
        with pytest.raises(ScalingError):
            round_resolution(*args)


# --------------------------------------------------------------------------------------------
# YOLOv7 parse rules
# --------------------------------------------------------------------------------------------


def test_yolo_width():
    assert make_divisible(35.2) == 40  # ceil(4.4)·8
    assert make_divisible(40) == 40
    assert yolo_width(64, 1.0) == 64
    assert yolo_width(64, 1.25) == 80  # yolov7 → yolov7x transition widths
    assert yolo_width(512, 1.25) == 640
    assert yolo_width(32, 0.5) == 16
    assert yolo_width(100, 0.33) == 40  # 33 → ceil(4.125)·8 = 40 (rounds up, unlike round_filters)
    assert round_filters(100, 0.33) == 32  # 33 → nearest 32, 32 ≥ 29.7
    # float parity with upstream parse_model: 400·1.1 = 440.00000000000006 in floats,
    # /8 = 55.00000000000001 → ceil 56 → 448 (the exact 440 would stay 440)
    assert 400 * 1.1 / 8 > 55
    assert yolo_width(400, 1.1) == 448
    assert round_filters(400, 1.1) == 440  # EfficientNet rule uses the exact product


def test_yolo_depth():
    assert yolo_depth(1, 3.0) == 1  # n <= 1 is never scaled
    assert yolo_depth(0, 3.0) == 0
    assert yolo_depth(3, 0.33) == 1  # round(0.99) = 1
    assert yolo_depth(2, 0.1) == 1  # max(round(0.2), 1)
    assert yolo_depth(4, 1.5) == 6
    assert yolo_depth(5, 0.5) == 2  # round(2.5) = 2 (Python rounds half to even)
    assert yolo_depth(7, 0.5) == 4  # round(3.5) = 4
    with pytest.raises(ScalingError):
        yolo_depth(3, 0)


# --------------------------------------------------------------------------------------------
# Coefficients / phi list
# --------------------------------------------------------------------------------------------


def test_coefficients_product_and_powers():
    assert EFFICIENTNET == Coefficients(1.2, 1.1, 1.15)
    # 1.2 · 1.21 · 1.3225 = 1.92027
    assert EFFICIENTNET.product == pytest.approx(1.92027, abs=1e-9)
    assert EFFICIENTNET.at(0) == (1.0, 1.0, 1.0)
    d, w, r = EFFICIENTNET.at(2)
    assert (d, w, r) == pytest.approx((1.44, 1.21, 1.3225))
    assert EFFICIENTNET.flops_multiplier(0) == 1.0
    assert EFFICIENTNET.flops_multiplier(2) == pytest.approx(1.92027**2)
    # FLOPs multiplier is d·w²·r² of at(phi)
    assert EFFICIENTNET.flops_multiplier(2.5) == pytest.approx(
        math.prod(m**e for m, e in zip(EFFICIENTNET.at(2.5), (1, 2, 2)))
    )
    assert Coefficients(1, 1, 1).product == 1.0
    assert isinstance(Coefficients(2, 1, 1).alpha, float)


def test_coefficients_frozen_and_hashable():
    c = Coefficients(1.2, 1.1, 1.15)
    with pytest.raises(AttributeError):
        c.alpha = 2.0  # type: ignore[misc]
    assert len({c, Coefficients(1.2, 1.1, 1.15)}) == 1


@pytest.mark.parametrize(
    "args, bad",
    [((0.9, 1.1, 1.15), "alpha"), ((1.2, 0.5, 1.15), "beta"), ((1.2, 1.1, float("nan")), "gamma"),
     ((1.2, float("inf"), 1.1), "beta"), (("1.2", 1.1, 1.1), "alpha"), ((1.2, 1.1, None), "gamma"),
     ((1e300, 1.1, 1.15), "alpha must be between 1 and 10"), ((1.2, 10.5, 1.15), "beta")],
)
def test_coefficients_validation(args, bad):
    with pytest.raises(ScalingError, match=bad) as err:
        Coefficients(*args)
    assert isinstance(err.value, NasError)
    assert "\n" not in str(err.value)


def test_coefficients_phi_validation():
    for phi in (-1, float("nan"), float("inf"), "1", 10.5, 1e9):
        with pytest.raises(ScalingError):
            EFFICIENTNET.at(phi)
        with pytest.raises(ScalingError):
            EFFICIENTNET.flops_multiplier(phi)


def test_largest_coefficients_at_largest_phi_stay_finite():
    # the bounds (coefficients ≤ 10, φ ≤ 10) keep every power representable: no OverflowError
    big = Coefficients(10, 10, 10)
    assert big.at(10) == (1e10, 1e10, 1e10)
    assert big.flops_multiplier(10) == pytest.approx(1e50)


def test_parse_phi_list():
    assert parse_phi_list("0,1,2,3") == (0.0, 1.0, 2.0, 3.0)
    assert parse_phi_list(" 0.5 , 1.25,3 ") == (0.5, 1.25, 3.0)
    assert parse_phi_list("2") == (2.0,)
    assert parse_phi_list("3,1") == (3.0, 1.0)  # order kept


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0,,1", "item 2"),
        ("0,1,", "item 3"),
        ("0,abc,2", "'abc'"),
        ("1,-1", "'-1'"),
        ("nan", "'nan'"),
        ("1,inf", "'inf'"),
        ("1,2,1", "item 3"),
        ("0,1e9", "item 2 '1e9' is above the largest phi, 10"),
        ("50", "above the largest phi"),
    ],
)
def test_parse_phi_list_errors(text, fragment):
    with pytest.raises(ScalingError) as err:
        parse_phi_list(text)
    assert fragment in str(err.value)


def test_parse_phi_list_not_a_string():
    with pytest.raises(ScalingError):
        parse_phi_list([0, 1])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# coefficient_grid
# --------------------------------------------------------------------------------------------


def test_grid_defaults():
    grid = coefficient_grid()
    assert len(grid) == 109  # documented in scaling/grid.py
    assert all(c.alpha >= 1 and c.beta >= 1 and c.gamma >= 1 for c in grid)
    assert all(abs(c.product - 2.0) <= 0.1 + 1e-12 for c in grid)
    triples = [(c.alpha, c.beta, c.gamma) for c in grid]
    assert len(set(triples)) == len(triples)
    assert triples == sorted(triples)
    # (1.2, 1.1, 1.15): 1.2·1.21·1.3225 = 1.92 → |1.92 − 2| = 0.08 ≤ 0.1
    assert EFFICIENTNET in grid
    assert (1.0, 1.0, 1.0) not in triples
    assert (2.0, 1.0, 1.0) in triples  # depth-only: product 2.0
    assert coefficient_grid() == grid  # deterministic


def test_grid_matches_brute_force():
    axis = [round(1 + i * 0.1, 10) for i in range(11)]  # 1.0 .. 2.0
    brute = [
        (a, b, g)
        for a, b, g in itertools.product(axis, repeat=3)
        if abs(a * b * b * g * g - 2.0) <= 0.15 + 1e-12
    ]
    got = [(c.alpha, c.beta, c.gamma) for c in coefficient_grid(0.1, 2.0, 2.0, 0.15)]
    assert got == brute and got


def test_grid_efficientnet_absent_when_step_misses_it():
    # step 0.1 has no 1.15 on the gamma axis
    assert EFFICIENTNET not in coefficient_grid(step=0.1)


def test_grid_exact_tolerance_zero():
    got = coefficient_grid(step=0.5, max_value=2.0, target=2.0, tolerance=0.0)
    assert [(c.alpha, c.beta, c.gamma) for c in got] == [(2.0, 1.0, 1.0)]


@pytest.mark.parametrize(
    "kwargs",
    [{"step": 0}, {"step": -0.1}, {"max_value": 0.5}, {"target": 0.5}, {"tolerance": -1},
     {"step": float("nan")}, {"step": 1e-5}],
)
def test_grid_rejects_bad_arguments(kwargs):
    with pytest.raises(ScalingError):
        coefficient_grid(**kwargs)


# --------------------------------------------------------------------------------------------
# phi_for_target
# --------------------------------------------------------------------------------------------


def test_phi_for_target_continuous():
    # 2^φ = 8 at φ = 3 exactly
    phi = phi_for_target(lambda p: 2.0**p, 8.0)
    assert phi is not None
    assert 3.0 - 1e-3 <= phi <= 3.0
    assert 2.0**phi <= 8.0


def test_phi_for_target_step_function_unattained_jump():
    # cost = 10·floor(φ): ≤ 25 for φ < 3, 30 at φ = 3 → supremum 3 not attained
    cost = lambda p: 10.0 * math.floor(p)  # noqa: E731
    phi = phi_for_target(cost, 25.0)
    assert 3.0 - 1e-3 <= phi < 3.0
    assert cost(phi) == 20.0


def test_phi_for_target_step_function_attained_jump():
    # cost = 10·ceil(φ): 30 on (2, 3], 40 on (3, 4] → largest feasible φ for target 30 is 3
    cost = lambda p: 10.0 * math.ceil(p)  # noqa: E731
    phi = phi_for_target(cost, 30.0, tol=1e-4)
    assert 3.0 - 1e-4 <= phi <= 3.0
    assert cost(phi) <= 30.0


def test_phi_for_target_rounded_model():
    """A toy 'model': cost = channels² · repeats from the EfficientNet rounding rules.

    With the B7-like β = 1.1, α = 1.2 on 64 channels × 2 repeats:
    φ=0: 64²·2 = 8192; the first change is when 64·1.1^φ reaches 68 (rounds to 72):
    1.1^φ = 1.0625 → φ = ln 1.0625 / ln 1.1 = 0.6361; repeats 2·1.2^φ > 2 for any φ > 0 → 3,
    so cost is 64²·3 = 12288 on (0, 0.6361) and 72²·3 = 15552 just after.
    """

    def cost(p):
        return round_filters(64, 1.1**p) ** 2 * round_repeats(2, 1.2**p)

    assert cost(0) == 8192 and cost(0.3) == 12288 and cost(0.64) == 15552
    jump = math.log(68 / 64) / math.log(1.1)
    phi = phi_for_target(cost, 13000.0)
    assert jump - 1e-3 <= phi <= jump
    assert phi_for_target(cost, 10000.0) == 0.0  # only φ = 0 itself fits
    assert phi_for_target(cost, 8000.0) is None


def test_phi_for_target_edges():
    assert phi_for_target(lambda p: 5.0, 1.0) is None
    assert phi_for_target(lambda p: p, 100.0) == 8.0  # everything fits → phi_max
    assert phi_for_target(lambda p: p, 100.0, phi_max=2.5) == 2.5
    assert phi_for_target(lambda p: 1.0 + p, 1.0) == 0.0
    assert phi_for_target(lambda p: p, 5.0, phi_max=0.0) == 0.0


def test_phi_for_target_evaluation_budget():
    calls = []

    def cost(p):
        calls.append(p)
        return 2.0**p

    phi_for_target(cost, 8.0)
    assert len(calls) <= 2 + math.ceil(math.log2(8.0 / 1e-3))  # 16
    assert len(calls) == len(set(calls))


def test_phi_for_target_bad_input():
    with pytest.raises(ScalingError):
        phi_for_target(lambda p: p, float("nan"))
    with pytest.raises(ScalingError):
        phi_for_target(lambda p: p, 1.0, tol=0)
    with pytest.raises(ScalingError):
        phi_for_target(lambda p: p, 1.0, phi_max=-1)
    with pytest.raises(ScalingError, match="phi="):
        phi_for_target(lambda p: float("nan"), 1.0)


def test_phis_for_targets_order_and_sharing():
    calls = []

    def cost(p):
        calls.append(p)
        return 2.0**p

    got = phis_for_targets(cost, [8.0, 0.5, 1.0, 1000.0, 4.0])
    assert got[1] is None
    assert got[2] == 0.0
    assert got[3] == 8.0
    assert 3.0 - 1e-3 <= got[0] <= 3.0
    assert 2.0 - 1e-3 <= got[4] <= 2.0
    assert len(calls) == len(set(calls))  # each φ evaluated once across targets
    assert phis_for_targets(cost, []) == ()
