"""Integer rounding rules that turn continuous scaling multipliers into layer sizes.

Two families live here:

* **EfficientNet rules** (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional
  Neural Networks", ICML 2019, §3.3; tensorflow/tpu ``models/official/efficientnet/
  efficientnet_model.py`` ``round_filters`` / ``round_repeats``): :func:`round_filters`,
  :func:`round_repeats`, plus :func:`round_resolution` for the input size. These are the rules
  y7nas's compound scaler uses. They are defined on the *real* product ``f * w`` (resp. ``d * n``):
  the float product is first snapped to 9 decimals so that binary artefacts such as
  ``2.2 * 25 == 55.00000000000001`` do not push a value over a rounding boundary (the reference
  code would return 56 repeats there; mathematically ``ceil(55) == 55``). On every published
  EfficientNet B0–B7 value the two agree (see tests/scaling/test_math.py).

* **YOLOv7 parse rules** (WongKinYiu/yolov7 ``models/yolo.py`` ``parse_model`` and
  ``utils/general.py`` ``make_divisible``): :func:`yolo_width`, :func:`yolo_depth`. These exist for
  bit-for-bit parity with upstream ``Model(cfg)`` and therefore reproduce its float expressions
  exactly, artefacts included (``depth_multiple``/``width_multiple`` keys of a cfg).

Pure Python; no torch.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

from nas.errors import ScalingError

__all__ = [
    "round_filters",
    "round_repeats",
    "round_resolution",
    "make_divisible",
    "yolo_width",
    "yolo_depth",
]

_SNAP_DIGITS = 9  # decimals kept of a float product before it is rounded to an integer


def _snap(x: float) -> float:
    """``x`` with binary-float noise below 1e-9 removed (see module docstring)."""
    return round(x, _SNAP_DIGITS)


def _check_int(name: str, value, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ScalingError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ScalingError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_multiplier(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ScalingError(f"{name} must be a finite number, got {value!r}")
    if value <= 0:
        raise ScalingError(f"{name} must be > 0, got {value}")
    return float(value)


def round_filters(
    filters: int, width_coefficient: float, divisor: int = 8, min_depth: int | None = None
) -> int:
    """Channel count ``filters * width_coefficient`` rounded as EfficientNet does.

    Rule (tensorflow/tpu ``efficientnet_model.round_filters``; ``depth_divisor`` = 8 for B0–B7):

    1. ``x = filters * width_coefficient``;
    2. round ``x`` to the nearest multiple of ``divisor`` (ties go up: ``int(x + divisor/2)``
       floored to a multiple), but not below ``min_depth`` (default: ``divisor``);
    3. if that lost more than 10% (result < ``0.9 * x``), add one more ``divisor``.

    Examples: 32·1.1 = 35.2 → 32 (32 ≥ 31.68); 16·1.2 = 19.2 → 16 < 17.28 → 24 (B3's first
    stage). ``filters == 0`` stays 0 (nothing to scale).
    """
    filters = _check_int("filters", filters, minimum=0)
    w = _check_multiplier("width_coefficient", width_coefficient)
    divisor = _check_int("divisor", divisor, minimum=1)
    floor_ = divisor if min_depth is None else _check_int("min_depth", min_depth, minimum=1)
    if filters == 0:
        return 0
    x = _snap(filters * w)
    new = max(floor_, int(x + divisor / 2) // divisor * divisor)
    if new < 0.9 * x:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    """Repeat count ``ceil(depth_coefficient * repeats)`` (EfficientNet ``round_repeats``).

    E.g. B4 (depth 1.8): B0's stage repeats [1, 2, 2, 3, 3, 4, 1] → [2, 4, 4, 6, 6, 8, 2].
    ``repeats == 0`` stays 0.
    """
    repeats = _check_int("repeats", repeats, minimum=0)
    d = _check_multiplier("depth_coefficient", depth_coefficient)
    return int(math.ceil(_snap(d * repeats)))


def round_resolution(img: int, resolution_coefficient: float, multiple: int = 32) -> int:
    """Input size ``img * resolution_coefficient`` rounded to a multiple of ``multiple``.

    ``multiple`` should be the model's largest stride (32 for YOLOv7 P5 models, 64 for P6), so
    every feature map has an integer size. The result is the **nearest** multiple (ties go up),
    never below ``multiple``. Nearest rather than ceil is deliberate: compute grows with r², and
    nearest keeps the realised resolution — hence FLOPs — closest to what ``γ^φ`` asked for
    instead of biasing every step upwards. (EfficientNet itself published hand-picked sizes,
    e.g. B1 = 240 although 224·1.15 = 257.6; see REFERENCE.md.)
    """
    img = _check_int("img", img, minimum=1)
    r = _check_multiplier("resolution_coefficient", resolution_coefficient)
    multiple = _check_int("multiple", multiple, minimum=1)
    x = _snap(img * r)
    return max(multiple, int(x + multiple / 2) // multiple * multiple)


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is ≥ ``x``: ``ceil(x / divisor) * divisor``.

    Same expression as YOLOv7 ``utils/general.py make_divisible`` (float artefacts included).
    """
    divisor = _check_int("divisor", divisor, minimum=1)
    if isinstance(x, bool) or not isinstance(x, Real) or not math.isfinite(x):
        raise ScalingError(f"value to make divisible must be a finite number, got {x!r}")
    return int(math.ceil(x / divisor) * divisor)


def yolo_width(channels: int, width_multiple: float, divisor: int = 8) -> int:
    """Output channels YOLOv7's ``parse_model`` gives a layer declaring ``channels``.

    ``make_divisible(channels * width_multiple, 8)`` — i.e. rounded **up** to a multiple of 8,
    unlike EfficientNet's nearest rounding. (Upstream skips this for the Detect output width;
    that exception belongs to the cfg parser, not here.)
    """
    channels = _check_int("channels", channels, minimum=0)
    gw = _check_multiplier("width_multiple", width_multiple)
    return make_divisible(channels * gw, divisor)


def yolo_depth(n: int, depth_multiple: float) -> int:
    """Repeat count YOLOv7's ``parse_model`` gives a row declaring ``n``.

    ``max(round(n * depth_multiple), 1) if n > 1 else n`` — Python's ``round`` (half to even),
    and a row with ``n <= 1`` is never scaled.
    """
    n = _check_int("n", n, minimum=0)
    gd = _check_multiplier("depth_multiple", depth_multiple)
    return max(round(n * gd), 1) if n > 1 else n
