"""Fidelities: how a sampled architecture is scored.

A fidelity is a small class registered by name in :data:`FIDELITIES`::

    class MyFidelity(Fidelity):
        name = "mine"
        scores = True                      # provides the 'score' metric
        def evaluate(self, genome, model, context) -> dict[str, float]: ...

``evaluate`` receives the genome, the built (train-form) model and an :class:`EvalContext`, and
returns metrics (``score`` when :attr:`Fidelity.scores`; any other keys become columns of
trials.csv). Cost metrics (params, GFLOPs, latency) are measured by the runner for every
fidelity, on the fused deploy form. A multi-epoch fidelity calls ``context.report(step, value)``
after each epoch; the runner forwards it to ``trial.report`` (intermediate values, visible in
optuna-dashboard, ready for pruning).

Registered here:

``flops``      no score; only the cost metrics.
``zero-cost``  training-free proxies (NASWOT, SynFlow, Zen) on one real batch of ``--data``;
               ``score`` is NASWOT (see docs/SEARCH.md for why), the others are recorded.
``proxy``      short proxy training (``nas.train.proxy_train``); ``score`` = val mAP@0.5:0.95,
               reported per epoch. Refused with a clear message where ``nas.train`` is missing.
``oneshot``    weights inherited from a trained supernet (``nas.supernet``, ``--supernet``);
               ``score`` = val mAP@0.5:0.95 after re-estimating BatchNorm on training images.
"""
from __future__ import annotations

import abc
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

from nas.errors import SearchError


@dataclass
class EvalContext:
    """What a fidelity may use besides the model.

    Attributes:
        img: square input size.
        device: torch device string.
        seed: study seed (proxies are deterministic for a seed).
        data: ``synthetic`` or a data YAML path.
        batch: images in the zero-cost batch.
        threads: torch CPU threads of this worker.
        options: fidelity settings from the study (proxy: ``epochs``, ``subset``, ``img``;
            oneshot: ``supernet``, ``calib``, ``val``).
        space: the search space (the one-shot fidelity builds its supernet over it).
        report: ``report(step, value) -> stop`` records an intermediate value (per-epoch
            score); a True return asks the fidelity to stop early (pruning).
    """

    img: int
    device: str = "cpu"
    seed: int = 0
    data: str = "synthetic"
    batch: int = 16
    threads: int | None = None
    options: dict = field(default_factory=dict)
    space: Any = None
    report: Callable[[int, float], bool | None] = lambda step, value: None
    _images: Any = field(default=None, repr=False)

    def images(self):
        """One deterministic batch ``(B, 3, img, img)`` of real images from ``data`` (cached)."""
        if self._images is None:
            from nas.data import first_batch, load_data_config, scan_split

            split = scan_split(load_data_config(self.data), "val")
            if len(split) < 2:
                raise SearchError(f"{self.data}: the val split needs at least 2 images for zero-cost scoring")
            self._images = first_batch(split, self.img, self.batch, self.seed)
        return self._images


class Fidelity(abc.ABC):
    """Base class of every fidelity (see the module docstring)."""

    name: str = ""
    scores: bool = False
    needs_data: bool = False
    prunable: bool = False   # reports a partial score per epoch (early stopping applies)
    description: str = ""

    def check_available(self) -> None:
        """Raise :class:`SearchError` (one line) when this fidelity cannot run here."""

    def prepare(self, context: EvalContext) -> None:
        """Load what every evaluation needs, before any trial (errors are one line)."""

    @abc.abstractmethod
    def evaluate(self, genome: Any, model: Any, context: EvalContext) -> dict[str, float]:
        """Metrics of one architecture."""


class FlopsFidelity(Fidelity):
    name = "flops"
    description = "no score; params, GFLOPs and latency only"

    def evaluate(self, genome, model, context):
        return {}


class ZeroCostFidelity(Fidelity):
    """NASWOT, SynFlow and Zen on one real batch; ``score`` = NASWOT."""

    name = "zero-cost"
    scores = True
    needs_data = True
    proxies = ("naswot", "synflow", "zen")
    score_proxy = "naswot"
    description = "training-free proxies on one real batch; score = NASWOT (naswot/synflow/zen recorded)"

    def evaluate(self, genome, model, context):
        from nas.profile import resolve_device
        from nas.zero_cost import compute_proxies

        device = resolve_device(context.device)
        images = context.images().to(device)
        scores = compute_proxies(model.to(device), images, names=self.proxies, seed=context.seed)
        return {"score": scores[self.score_proxy], **scores}


class ProxyTrainFidelity(Fidelity):
    """Short proxy training with :func:`nas.train.proxy_train`: ``score`` = val mAP@0.5:0.95.

    Trains the sampled model for ``epochs`` epochs on a fixed seeded subset of the train split at
    ``img`` (``--proxy-img``, default the study's image size) and reports the mAP after every
    epoch (``report``; a True return stops the training: pruning). Records ``epochs_trained``
    and ``train_s``. Refused with a clear message where ``nas.train`` is not available.
    """

    name = "proxy"
    scores = True
    needs_data = True
    prunable = True
    description = "short proxy training; score = val mAP@0.5:0.95 (nas.train)"

    def check_available(self) -> None:
        if importlib.util.find_spec("nas.train") is None:
            raise SearchError("fidelity 'proxy' needs proxy training (nas.train), which is not "
                              "available in this version; use --fidelity zero-cost or flops")
        if not callable(getattr(importlib.import_module("nas.train"), "proxy_train", None)):
            raise SearchError("fidelity 'proxy': nas.train has no proxy_train(model, data, ...) "
                              "function; use --fidelity zero-cost or flops")

    def evaluate(self, genome, model, context):
        self.check_available()
        train = importlib.import_module("nas.train")
        options = context.options
        result = train.proxy_train(model, context.data, epochs=int(options.get("epochs", 5)),
                                   img=int(options.get("img") or context.img),
                                   subset=options.get("subset", 256), seed=context.seed,
                                   threads=context.threads, report=context.report, device=context.device)
        return {"score": float(result.map50_95), "map50_95": float(result.map50_95),
                "map50": float(result.map50), "epochs_trained": len(result.epoch_maps),
                "train_s": round(float(result.seconds), 3)}


class OneShotFidelity(Fidelity):
    """Weights inherited from a trained supernet: extract the candidate, re-estimate its
    BatchNorm statistics on ``calib`` fixed training images, ``score`` = val mAP@0.5:0.95 (on
    ``val`` images, or the whole val split). The supernet must have been trained on the same
    space (signature), classes, image size and activation; anything else is one line before
    any trial."""

    name = "oneshot"
    scores = True
    needs_data = True
    description = "weights inherited from a trained supernet (--supernet); score = val mAP@0.5:0.95"

    def __init__(self) -> None:
        self._scorer = None

    def prepare(self, context: EvalContext) -> None:
        from nas.supernet import OneShotScorer, check_meta, load_supernet

        path = context.options.get("supernet")
        if not path:
            raise SearchError("fidelity 'oneshot' needs --supernet FILE (made by `y7nas supernet train`)")
        if context.space is None:
            raise SearchError("fidelity 'oneshot' needs the search space to rebuild the supernet")
        net = load_supernet(path, context.space, device=context.device)
        check_meta(net.meta, path, img=context.img)
        fixed = next((d.choices for d in context.space.dimensions() if d.name == "activation"), None)
        if fixed is not None and tuple(fixed) != (net.activation,):
            raise SearchError(f"{path}: the supernet is for activation {net.activation!r} only; fix the "
                              f"space's activation to it (the CLI does) instead of {', '.join(fixed)}")
        net.eval()
        self._scorer = OneShotScorer(net, context.data, context.img,
                                     calib_images=int(context.options.get("calib") or 64),
                                     val_subset=context.options.get("val"), seed=context.seed)

    def evaluate(self, genome, model, context):
        if self._scorer is None:
            self.prepare(context)
        s = self._scorer.score(genome)
        return {"score": float(s.map50_95), "map50_95": float(s.map50_95), "map50": float(s.map50),
                "oneshot_s": round(float(s.seconds), 3)}


#: name → fidelity class
FIDELITIES: dict[str, type[Fidelity]] = {}


def register_fidelity(cls: type[Fidelity]) -> type[Fidelity]:
    """Add a fidelity class to :data:`FIDELITIES` (usable as a decorator)."""
    if not cls.name:
        raise ValueError("a fidelity needs a name")
    FIDELITIES[cls.name] = cls
    return cls


for _cls in (FlopsFidelity, ZeroCostFidelity, ProxyTrainFidelity, OneShotFidelity):
    register_fidelity(_cls)


def get_fidelity(name: str) -> type[Fidelity]:
    """The fidelity class called ``name``; one line naming the valid ones otherwise."""
    try:
        return FIDELITIES[name]
    except KeyError:
        raise SearchError(f"unknown fidelity {name!r} (valid: {', '.join(FIDELITIES)})") from None


__all__ = ["EvalContext", "FIDELITIES", "Fidelity", "FlopsFidelity", "OneShotFidelity", "ProxyTrainFidelity",
           "ZeroCostFidelity", "get_fidelity", "register_fidelity"]
