"""Short proxy training for architecture search: a few epochs on a fixed subset, val mAP."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from nas.data import DataConfig, load_data_config, scan_split
from nas.train._loop import DataLike, ModelLike, TrainConfig, train


@dataclass(frozen=True)
class ProxyResult:
    """Outcome of :func:`proxy_train`.

    ``map50`` / ``map50_95`` are those of the last evaluated epoch; ``epoch_maps`` holds the
    mAP@0.5:0.95 after each epoch; ``pruned`` is True when ``report`` asked to stop. ``model`` is
    the evaluated network (the EMA), whose weights a finalist keeps.
    """

    map50: float
    map50_95: float
    epoch_maps: tuple[float, ...]
    seconds: float
    pruned: bool
    model: Any = field(default=None, repr=False, compare=False)


#: TrainConfig settings of the proxy (a few hundred steps): AdamW learns far more than YOLOv7's
#: SGD in that budget; BatchNorm statistics must follow the fast-moving weights; short warm-up.
PROXY_RECIPE = dict(optimizer="adamw", lr=0.01, warmup_epochs=1.0, bn_momentum=0.1)

_SPLIT_CACHE: dict = {}
_IMAGE_CACHE: dict = {}  # letterboxed images of the memoised splits, shared by all trials


def _splits(data: DataLike):
    """Scanned (config, train, val) of ``data``, memoised per data source for repeated trials."""
    cfg = data if isinstance(data, DataConfig) else load_data_config(data)
    key = cfg
    if key not in _SPLIT_CACHE:
        _SPLIT_CACHE.clear()  # keep at most one dataset's index and images in memory
        _IMAGE_CACHE.clear()
        _SPLIT_CACHE[key] = (cfg, scan_split(cfg, "train"), scan_split(cfg, "val"))
    return _SPLIT_CACHE[key]


def proxy_train(model_or_cfg: ModelLike, data: DataLike, epochs: int = 5, img: int = 160,
                batch: int = 16, subset: int | None = 256, seed: int = 0,
                report: Callable[[int, float], bool] | None = None,
                threads: int | None = None, val_subset: int | None = None,
                **overrides) -> ProxyResult:
    """Train ``model_or_cfg`` briefly and score it by validation mAP (the search's proxy).

    Trains on a fixed seeded subset of ``subset`` training images (all when None) for ``epochs``
    epochs at ``img`` px, evaluating the EMA model on the val split (or ``val_subset`` images of
    it) after every epoch. ``report(epoch, map50_95)`` returning True stops early (pruning).
    The recipe is :data:`PROXY_RECIPE` (AdamW, lr 0.01, 1 warm-up epoch, BatchNorm momentum
    0.1); ``overrides`` replace any :class:`TrainConfig` field (e.g. ``optimizer='sgd'``).
    Scanned splits and letterboxed images are memoised per data config, so repeated trials
    neither rescan nor decode again.

    Raises:
        NasError: on bad data or model, and ``non-finite loss at epoch E`` when training
            diverges (the search records the trial as failed with that reason).
    """
    cfg, train_split, val_split = _splits(data)
    settings = {**PROXY_RECIPE, **overrides}
    config = TrainConfig(epochs=epochs, img=img, batch=batch, seed=seed, subset=subset,
                         val_subset=val_subset, threads=threads, **settings)
    result = train(model_or_cfg, cfg, config, report=report, splits=(train_split, val_split),
                   image_cache=_IMAGE_CACHE)
    maps = tuple(s.map50_95 for s in result.epochs if s.map50_95 is not None)
    return ProxyResult(map50=result.map50, map50_95=result.map50_95, epoch_maps=maps,
                       seconds=result.seconds, pruned=result.stopped_early, model=result.model)
