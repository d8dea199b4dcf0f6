"""The training loop: data, SimOTA loss, optimizer, EMA, per-epoch validation, run files."""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from nas.build import build_model
from nas.cfg import ModelCfg, parse_cfg
from nas.data import (DataConfig, EpochSampler, SplitIndex, YoloDataset, collate, load_data_config,
                      scan_split, subset_indices)
from nas.errors import NasError
from nas.evaluate import evaluate, ground_truth
from nas.genome import Genome
from nas.loss import DetectionLoss, LossHyp
from nas.train._optim import NOMINAL_BATCH, OPTIMIZERS, ModelEMA, Schedule, build_optimizer

DEFAULT_LR = {"sgd": 0.01, "adamw": 0.001}
RESULTS_FIELDS = ("epoch", "lr", "box_loss", "obj_loss", "cls_loss", "loss", "map50",
                  "map50_95", "train_seconds", "val_seconds")

ModelLike = ModelCfg | Genome | nn.Module | str | Path
DataLike = DataConfig | str | Path


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (YOLOv7 ``hyp.scratch`` values where YOLOv7 has one).

    Attributes:
        epochs, img, batch, seed: the run.
        optimizer: ``sgd`` (Nesterov, momentum 0.937) or ``adamw`` (β1 = momentum).
        lr: initial rate (default 0.01 SGD, 0.001 AdamW); cosine to ``lr · lrf``.
        weight_decay: on conv weights only, scaled by ``batch / 64`` (YOLOv7's nominal batch;
            no gradient accumulation is done).
        warmup_epochs: linear warm-up, at most a quarter of the run.
        ema: evaluate and save an EMA of the weights (YOLOv7's ModelEMA ramp).
        augment: horizontal flip + HSV jitter on training images (nas.data defaults).
        subset / val_subset: train / validate on a fixed seeded subset of this many images.
        val_interval: validate every this many epochs and after the last (0: never; then the
            result's mAPs are None).
        conf, iou: validation thresholds (YOLOv7 test.py: 0.001, 0.65).
        threads: torch CPU threads during the run (None: leave as is).
        channels_last: run the model in channels-last memory format (1.3× faster training on
            CPU for yolov7-tiny at 256 px, see benchmarks/train_throughput.py).
        deterministic: ``torch.use_deterministic_algorithms(True, warn_only=True)`` for a CUDA
            run (CPU runs are deterministic for a seed and thread count without it).
        bn_momentum: BatchNorm running-statistics momentum during training (None: the model's,
            0.03 as YOLOv7 sets it); short runs want more (see :func:`proxy_train`).
    """

    epochs: int = 30
    img: int = 256
    batch: int = 16
    seed: int = 0
    optimizer: str = "sgd"
    lr: float | None = None
    lrf: float = 0.01
    momentum: float = 0.937
    weight_decay: float = 5e-4
    warmup_epochs: float = 3.0
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.1
    ema: bool = True
    augment: bool = True
    subset: int | None = None
    val_subset: int | None = None
    val_interval: int = 1
    conf: float = 0.001
    iou: float = 0.65
    workers: int = 0
    device: str = "cpu"
    threads: int | None = None
    channels_last: bool = True
    deterministic: bool = True
    bn_momentum: float | None = None
    loss: LossHyp = field(default_factory=LossHyp)

    def __post_init__(self) -> None:
        checks = [(self.epochs >= 1, f"epochs must be ≥ 1, got {self.epochs}"),
                  (self.img >= 32 and self.img % 32 == 0,
                   f"img must be a multiple of 32 (≥ 32), got {self.img}"),
                  (self.batch >= 1, f"batch must be ≥ 1, got {self.batch}"),
                  (self.optimizer in OPTIMIZERS,
                   f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})"),
                  (self.lr is None or self.lr > 0, f"lr must be positive, got {self.lr}"),
                  (self.workers >= 0, f"workers must be ≥ 0, got {self.workers}"),
                  (self.val_interval >= 0, f"val_interval must be ≥ 0, got {self.val_interval}"),
                  (self.threads is None or self.threads >= 1,
                   f"threads must be ≥ 1, got {self.threads}")]
        for ok, message in checks:
            if not ok:
                raise NasError(message)

    @property
    def initial_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


@dataclass(frozen=True)
class EpochStats:
    """One epoch: mean losses (per image, YOLOv7 scale), validation mAP, timings."""

    epoch: int
    lr: float
    box_loss: float
    obj_loss: float
    cls_loss: float
    loss: float
    map50: float | None
    map50_95: float | None
    train_seconds: float
    val_seconds: float
    images: int


@dataclass
class TrainResult:
    """A finished (or pruned) run. ``model`` is the evaluated network (the EMA when enabled)."""

    model: nn.Module
    cfg: ModelCfg | None
    epochs: list[EpochStats]
    map50: float | None
    map50_95: float | None
    seconds: float
    train_seconds: float
    images_per_second: float
    stopped_early: bool  # ``report`` asked to stop (even at the last epoch)
    run_dir: Path | None = None


# ----------------------------------------------------------------------------- helpers
def with_nc(cfg: ModelCfg, nc: int) -> ModelCfg:
    """``cfg`` with its class count set to ``nc`` (the detect head is re-sized, nothing else)."""
    if cfg.nc == nc:
        return cfg
    raw = copy.deepcopy(cfg.raw)
    raw["nc"] = nc
    return parse_cfg(raw, source=cfg.source)


def prepare_model(model: ModelLike, nc: int | None = None, seed: int = 0
                  ) -> tuple[nn.Module, ModelCfg | None]:
    """A fresh trainable network for ``model`` with ``nc`` classes, initialised under ``seed``.

    A cfg, genome, preset name or model file is built anew (``nc`` replaces its own class
    count); an ``nn.Module`` is deep-copied and must already predict ``nc`` classes.
    """
    if isinstance(model, (str, Path)):
        from nas.sources import resolve_model

        model = resolve_model(str(model)).cfg
    if isinstance(model, Genome):
        from nas.expand import expand

        genome = model if nc is None else model.replace(nc=nc)
        model = parse_cfg(expand(genome), source=f"genome {genome.genome_hash()}")
    if isinstance(model, ModelCfg):
        cfg = model if nc is None else with_nc(model, nc)
        torch.manual_seed(seed)
        net = build_model(cfg)
    elif isinstance(model, nn.Module):
        net = copy.deepcopy(model)
        cfg = getattr(net, "cfg", None)
    else:
        raise NasError(f"cannot train a {type(model).__name__}; give a cfg, genome or model")
    head = getattr(net, "head", None)
    if head is None or not hasattr(head, "anchor_grid"):
        raise NasError("the model has no YOLOv7 detect head (Detect, IDetect or IAuxDetect)")
    if nc is not None and head.nc != nc:
        raise NasError(f"the model predicts {head.nc} classes but the data has {nc} "
                       f"(its Detect row fixes nc; use 'nc' as the head's first argument)")
    return net, cfg


def load_splits(data: DataLike) -> tuple[DataConfig, SplitIndex, SplitIndex]:
    cfg = data if isinstance(data, DataConfig) else load_data_config(data)
    return cfg, scan_split(cfg, "train"), scan_split(cfg, "val")


def unique_run_dir(path: str | Path) -> Path:
    """``path`` when it does not exist or is empty, else ``path2``, ``path3``, … (YOLOv7's
    ``increment_path``)."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return path
    n = 2
    while True:
        candidate = path.with_name(f"{path.name}{n}")
        if not candidate.exists() or (candidate.is_dir() and not any(candidate.iterdir())):
            return candidate
        n += 1


@contextlib.contextmanager
def _torch_settings(threads: int | None, deterministic: bool) -> Iterator[None]:
    """Set torch's thread count / deterministic mode for the run and restore them after."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if threads:
            torch.set_num_threads(threads)
        if deterministic and not old_det:
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.set_num_threads(old_threads)
        if deterministic and not old_det:
            torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _RunFiles:
    """RUN_DIR/model.yaml, train.json, results.csv (one row per epoch), weights/last.pt."""

    def __init__(self, run_dir: Path, cfg: ModelCfg | None, config: TrainConfig, data: DataConfig):
        from nas.expand import dump_yaml

        self.dir = run_dir
        (run_dir / "weights").mkdir(parents=True, exist_ok=True)
        if cfg is not None:
            (run_dir / "model.yaml").write_text(
                dump_yaml(cfg.raw, header=f"trained by y7nas from {cfg.source}"), encoding="utf-8")
        settings = {k: v for k, v in asdict(config).items()}
        settings["lr"] = config.initial_lr
        settings["data"] = str(data.source) if data.source else None
        (run_dir / "train.json").write_text(json.dumps(settings, indent=2, default=str) + "\n")
        self.csv = run_dir / "results.csv"
        with self.csv.open("w", newline="") as fh:
            csv.writer(fh).writerow(RESULTS_FIELDS)

    def epoch(self, stats: EpochStats, model: nn.Module) -> None:
        row = asdict(stats)
        with self.csv.open("a", newline="") as fh:
            csv.writer(fh).writerow(["" if row[k] is None else
                                     (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                                     for k in RESULTS_FIELDS])
        _atomic_save(model.state_dict(), self.dir / "weights" / "last.pt")


# ----------------------------------------------------------------------------- train
def train(model: ModelLike, data: DataLike, config: TrainConfig | None = None, *,
          run_dir: str | Path | None = None,
          on_batch: Callable[[int, int, int, torch.Tensor], None] | None = None,
          on_epoch: Callable[[EpochStats], None] | None = None,
          report: Callable[[int, float], bool] | None = None,
          splits: tuple[SplitIndex, SplitIndex] | None = None,
          image_cache: dict | None = None) -> TrainResult:
    """Train ``model`` on ``data`` (a data YAML, ``'synthetic'`` or a :class:`DataConfig`).

    Args:
        config: the settings (default :class:`TrainConfig`).
        run_dir: when given, write ``model.yaml``, ``train.json``, ``results.csv`` and
            ``weights/last.pt`` (state dict of the evaluated model) there, updated every epoch.
        on_batch: ``(epoch, batch, batches, loss items [box, obj, cls, total])`` after each step.
        on_epoch: called with each epoch's :class:`EpochStats`.
        report: ``report(epoch, map50_95) -> stop``; True ends training after that epoch.
        splits: already scanned (train, val) splits of ``data`` (skips the scan).
        image_cache: a dict kept by the caller across runs on the same splits: letterboxed
            images are then decoded once for all of them (what :func:`proxy_train` does).

    Raises:
        NasError: bad settings or data, a model that does not fit the data, or a NaN/inf loss
            (``non-finite loss at epoch E``).
    """
    from nas.profile import resolve_device

    config = config or TrainConfig()
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    data_cfg = data if isinstance(data, DataConfig) else load_data_config(data)
    train_split, val_split = splits or (scan_split(data_cfg, "train"), scan_split(data_cfg, "val"))
    # CPU kernels are deterministic for a fixed thread count; the switch matters on CUDA only
    # (and importing what it needs costs seconds)
    with _torch_settings(config.threads, config.deterministic and device.type != "cpu"):
        net, cfg = prepare_model(model, data_cfg.nc, config.seed)
        loader, val_loader = _loaders(train_split, val_split, config, image_cache)
        return _fit(net, cfg, data_cfg, loader, val_loader, val_split, config, device, t_start,
                    Path(run_dir) if run_dir is not None else None, on_batch, on_epoch, report)


def _dataset(cache: dict | None, split: SplitIndex, img: int, augment: bool, seed: int):
    if cache is None:
        return YoloDataset(split, img, augment, seed)
    key = (id(split), img, augment, seed)
    hit = cache.get(key)
    if hit is None or hit[0] is not split:
        hit = cache[key] = (split, YoloDataset(split, img, augment, seed))
    return hit[1]


def _loaders(train_split: SplitIndex, val_split: SplitIndex, config: TrainConfig,
             cache: dict | None) -> tuple[DataLoader, DataLoader]:
    """Shuffled, augmented training loader and unshuffled validation loader (seeded subsets)."""
    out = []
    for split, augment, subset, shuffle in ((train_split, config.augment, config.subset, True),
                                            (val_split, False, config.val_subset, False)):
        dataset = _dataset(cache, split, config.img, augment, config.seed)
        sampler = EpochSampler(subset_indices(len(dataset), subset, config.seed), config.seed,
                               shuffle)
        out.append(DataLoader(dataset, batch_size=config.batch, sampler=sampler,
                              collate_fn=collate, num_workers=config.workers,
                              persistent_workers=config.workers > 0))
    return out[0], out[1]


def _fit(net, cfg, data_cfg, loader, val_loader, val_split, config: TrainConfig, device,
         t_start, run_dir, on_batch, on_epoch, report) -> TrainResult:
    torch.manual_seed(config.seed)
    net.to(device).train()
    if config.bn_momentum is not None:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = config.bn_momentum
    if config.channels_last:
        net.to(memory_format=torch.channels_last)
    nb = len(loader)
    if nb == 0:
        raise NasError("no training images")
    val_gt = ground_truth(val_split, [int(i) for i in val_loader.sampler.indices])

    lr = config.initial_lr
    wd = config.weight_decay * config.batch / NOMINAL_BATCH
    opt = build_optimizer(net, config.optimizer, lr, config.momentum, wd)
    total = config.epochs * nb
    warmup = min(round(config.warmup_epochs * nb), total // 4)
    sched = Schedule(opt, total, warmup, lr, config.lrf, config.momentum,
                     config.warmup_momentum, config.warmup_bias_lr)
    loss_fn = DetectionLoss(net.head, config.img, config.loss)
    ema = ModelEMA(net) if config.ema else None
    files = _RunFiles(run_dir, cfg, config, data_cfg) if run_dir is not None else None

    history: list[EpochStats] = []
    train_seconds, seen, stopped = 0.0, 0, False
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        net.train()
        sums = torch.zeros(4)
        n_img = 0
        current_lr = lr
        for i, (images, targets, _metas) in enumerate(loader):
            current_lr = sched.step((epoch - 1) * nb + i)
            images = images.to(device, non_blocking=True)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            loss, items = loss_fn(net(images), targets.to(device))
            if not math.isfinite(float(loss.detach())):
                raise NasError(f"non-finite loss at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update()
            bs = images.shape[0]
            sums += items.cpu() * bs
            n_img += bs
            if on_batch is not None:
                on_batch(epoch, i + 1, nb, items)
        t_train = time.perf_counter() - t0
        train_seconds += t_train
        seen += n_img
        eval_model = ema.module if ema is not None else net
        m50 = m5095 = None
        t1 = time.perf_counter()
        if config.val_interval and (epoch % config.val_interval == 0 or epoch == config.epochs):
            res = evaluate(eval_model, val_split, config.img, config.batch, config.conf,
                           config.iou, loader=val_loader, gt=val_gt, device=device)
            m50, m5095 = res.map50, res.map50_95
        means = (sums / max(n_img, 1)).tolist()
        stats = EpochStats(epoch, current_lr, *means, m50, m5095, t_train,
                           time.perf_counter() - t1, n_img)
        history.append(stats)
        if files is not None:
            files.epoch(stats, eval_model)
        if on_epoch is not None:
            on_epoch(stats)
        if report is not None and m5095 is not None and report(epoch, m5095):
            stopped = True
            break

    final = ema.module if ema is not None else net
    last = next((s for s in reversed(history) if s.map50 is not None), None)
    return TrainResult(model=final, cfg=cfg, epochs=history,
                       map50=last.map50 if last else None, map50_95=last.map50_95 if last else None,
                       seconds=time.perf_counter() - t_start, train_seconds=train_seconds,
                       images_per_second=seen / train_seconds if train_seconds > 0 else 0.0,
                       stopped_early=stopped, run_dir=run_dir)
