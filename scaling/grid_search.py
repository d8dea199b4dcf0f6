"""Grid search of the compound coefficients (α, β, γ) at φ = 1 (Tan & Le 2019, §3.3 "step 1").

Every triple of :func:`scaling.grid.coefficient_grid` (α·β²·γ² within 0.1 of 2, all ≥ 1) is
turned into its φ = 1 member of the base (:func:`scaling.compound.scale_member`) and scored by
the chosen fidelity's scorer (:data:`SCORERS`, name → class):

``zero-cost`` (:class:`ZeroCostScorer`)
    :func:`nas.zero_cost.compute_proxies` on one batch of the dataset (``--data``, default the
    synthetic set) letterboxed to the member's own input size. The proxy is
    ``nas.zero_cost.PRIMARY_PROXY`` when that module names one, else ``synflow`` (the module
    names no default today). SynFlow uses only the batch's shape and grows with parameters and
    input size, so among candidates of ≈ equal FLOPs it prefers the ones it predicts best.
``proxy`` (:class:`ProxyTrainScorer`)
    short proxy training, :func:`nas.train.proxy_train`: the member is trained from scratch for
    ``proxy_epochs`` epochs (default 5) on a fixed seeded subset of ``proxy_subset`` training
    images (default 256) of ``--data`` **at the member's own input size** (the base size times
    γ, rounded to a multiple of 32), batch 16, 1 torch thread unless ``threads`` is given; the
    score is the val mAP@0.5:0.95 after the last epoch (mAP@0.5 and the training time are
    recorded on the trial too). A training failure (``non-finite loss at epoch E``, any
    :class:`NasError`) fails that grid point only, as a zero-cost failure does.

Both scorers read the dataset when they are made, so a missing or unusable dataset is one error
before the study file exists.

Storage: an Optuna study ``scale-grid`` in ``<out_dir>/grid_search.db`` (SQLite), its one
objective named ``score`` (``study.set_metric_names``, so optuna-dashboard labels it). Each grid point
is enqueued with fixed params ``alpha, beta, gamma`` and a ``key`` user attribute; a point whose
key already has a COMPLETE trial is never evaluated again, so re-running resumes (an interrupted
RUNNING trial is marked FAIL and its point re-evaluated; so is a point that failed). The study
remembers its settings (base genome hash, base size, fidelity, proxy, data, batch, seed, and with
``proxy`` also ``proxy_epochs`` and ``proxy_subset``) and refuses to mix in results made with
other settings.

Choice: the highest score wins. Ties (scores equal to 1e-9 relative) go to the lower GFLOPs, then
the product α·β²·γ² closer to 2, then the smaller (α, β, γ). GFLOPs (and latency, when measured)
are recorded per point in ``grid.csv`` but do not enter the score: every candidate is already
≈ 2× the base's FLOPs by the grid's constraint, GFLOPs only break ties.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

from nas.errors import NasError, ScalingError
from nas.genome import Genome

from .coefficients import Coefficients
from .compound import scale_member
from .measure import Measurer, build_genome

__all__ = ["FIDELITIES", "GRID_COLUMNS", "SCORERS", "GridPoint", "GridResult", "ScoreOptions",
           "ZeroCostScorer", "ProxyTrainScorer", "check_fidelity", "check_proxy_options",
           "make_scorer", "grid_search", "grid_csv", "zero_cost_proxy_name", "best_point",
           "STORAGE_NAME", "STUDY_NAME", "METRIC_NAMES"]

GRID_COLUMNS = ("alpha", "beta", "gamma", "product", "score", "gflops", "latency_ms")
STORAGE_NAME = "grid_search.db"
STUDY_NAME = "scale-grid"
#: the study's objective name (its value is the fidelity's score; ``settings.proxy`` says which)
METRIC_NAMES = ("score",)
_TIE_REL = 1e-9


class GridPoint(NamedTuple):
    coeffs: Coefficients
    score: float
    gflops: float
    latency_ms: float | None


class GridResult(NamedTuple):
    points: tuple[GridPoint, ...]   # the requested grid, in grid order (evaluated now or before)
    best: GridPoint
    evaluated: int                  # points evaluated by this call (0 on a complete resume)
    failed: tuple[tuple[Coefficients, str], ...]
    proxy: str                      # what the score is: a zero-cost proxy name, or mAP@0.5:0.95
    storage: Path


def zero_cost_proxy_name() -> str:
    """The proxy the search ranks by: ``nas.zero_cost.PRIMARY_PROXY`` if defined, else synflow."""
    from nas import zero_cost

    return getattr(zero_cost, "PRIMARY_PROXY", None) or "synflow"


def _key(c: Coefficients) -> str:
    return f"{c.alpha:.6g},{c.beta:.6g},{c.gamma:.6g}"


def best_point(points: Sequence[GridPoint]) -> GridPoint:
    """Highest score; ties → lower GFLOPs → product closer to 2 → smaller (α, β, γ)."""
    if not points:
        raise ScalingError("grid search has no evaluated point to choose from")
    top = max(p.score for p in points)
    ties = [p for p in points if top - p.score <= _TIE_REL * max(1.0, abs(top))]
    return min(ties, key=lambda p: (p.gflops, abs(p.coeffs.product - 2.0),
                                    (p.coeffs.alpha, p.coeffs.beta, p.coeffs.gamma)))


# ------------------------------------------------------------------------------ scorers

@dataclass(frozen=True)
class ScoreOptions:
    """What a scorer may use; each scorer reads the fields it needs.

    ``batch`` None is the scorer's own default (8 images for zero-cost, 16 for proxy training).
    ``proxy_epochs`` / ``proxy_subset`` (None: every training image), ``threads`` (None: 1) and
    ``device`` are the proxy training's.
    """

    data: str = "synthetic"
    batch: int | None = None
    seed: int = 0
    proxy_epochs: int = 5
    proxy_subset: int | None = 256
    threads: int | None = None
    device: str = "cpu"


def check_proxy_options(epochs, subset) -> None:
    """One :class:`ScalingError` unless ``epochs`` ≥ 1 and ``subset`` is None or ≥ 1 (integers)."""
    def bad(value, allow_none: bool) -> bool:
        if value is None:
            return not allow_none
        return isinstance(value, bool) or not isinstance(value, int) or value < 1

    if bad(epochs, False):
        raise ScalingError(f"--proxy-epochs must be an integer >= 1, got {epochs!r}")
    if bad(subset, True):
        raise ScalingError(f"--proxy-subset must be an integer >= 1, got {subset!r}")


class ZeroCostScorer:
    """Scores (genome, img) with one zero-cost proxy on a cached image batch per input size."""

    default_batch = 8

    def __init__(self, opts: ScoreOptions):
        from nas.data import load_data_config, scan_split

        self.data, self.seed = opts.data, opts.seed
        self.batch = self.default_batch if opts.batch is None else opts.batch
        self.proxy = zero_cost_proxy_name()
        self.description = f"zero-cost proxy {self.proxy} on one batch of {self.batch} images"
        #: study settings besides the common ones (none: kept as studies made before had them)
        self.settings: dict = {}
        # Read the data now: a missing or unusable dataset is one error before the study
        # file exists, not a failure repeated at every grid point.
        self._split = scan_split(load_data_config(opts.data), "val")
        self._batches: dict[int, object] = {}

    def _images(self, img: int):
        if img not in self._batches:
            from nas.data import first_batch

            self._batches[img] = first_batch(self._split, img, self.batch, self.seed)
        return self._batches[img]

    def __call__(self, genome: Genome, img: int) -> float:
        import torch

        from nas.zero_cost import compute_proxies

        # the proxy reads the initial weights: seed them, so a point's score does not depend on
        # what this process built before (resume, order of the grid)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = build_genome(genome)
        return compute_proxies(model, self._images(img), names=(self.proxy,), seed=self.seed)[self.proxy]


class ProxyTrainScorer:
    """Scores (genome, img) by val mAP@0.5:0.95 after :func:`nas.train.proxy_train` at ``img``."""

    default_batch = 16
    proxy = "mAP@0.5:0.95"

    def __init__(self, opts: ScoreOptions):
        from nas.train import load_splits

        check_proxy_options(opts.proxy_epochs, opts.proxy_subset)
        self.seed, self.device = opts.seed, opts.device
        self.batch = self.default_batch if opts.batch is None else opts.batch
        self.epochs, self.subset = opts.proxy_epochs, opts.proxy_subset
        self.threads = 1 if opts.threads is None else opts.threads
        images = "all" if self.subset is None else str(self.subset)
        self.description = (f"proxy training, {self.epochs} epoch(s) on {images} training images "
                            f"at each member's input size, val mAP@0.5:0.95")
        self.settings = {"proxy_epochs": self.epochs, "proxy_subset": self.subset}
        # Read and scan the data now (one error before the study file exists); proxy_train
        # memoises the scanned splits of this config for every grid point after the first.
        self._data = load_splits(opts.data)[0]

    def __call__(self, genome: Genome, img: int) -> dict[str, float]:
        from nas.train import proxy_train

        result = proxy_train(genome, self._data, epochs=self.epochs, img=img, batch=self.batch,
                             subset=self.subset, seed=self.seed, threads=self.threads,
                             device=self.device)
        return {"score": float(result.map50_95), "map50": float(result.map50),
                "train_s": round(float(result.seconds), 3)}


#: fidelity name → scorer class (``cls(ScoreOptions)`` → callable (genome, img) → score)
SCORERS: dict[str, type] = {"zero-cost": ZeroCostScorer, "proxy": ProxyTrainScorer}
FIDELITIES = tuple(SCORERS)


def check_fidelity(fidelity: str) -> None:
    """Refuse fidelities with no scorer in :data:`SCORERS`."""
    if fidelity not in SCORERS:
        raise ScalingError(f"unknown fidelity {fidelity!r} (expected one of: {', '.join(SCORERS)})")


def make_scorer(fidelity: str, opts: ScoreOptions):
    """The scorer of ``fidelity`` (reads the dataset now; one :class:`NasError` if unusable)."""
    check_fidelity(fidelity)
    return SCORERS[fidelity](opts)


@contextlib.contextmanager
def _quiet_optuna():
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield optuna
    finally:
        optuna.logging.set_verbosity(level)


def _open_study(optuna, path: Path, settings: dict):
    storage = f"sqlite:///{path.resolve()}"
    try:
        study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize",
                                    sampler=optuna.samplers.RandomSampler(seed=0),
                                    load_if_exists=True)
    except Exception as exc:  # SQLAlchemy / Optuna storage errors: a corrupt or foreign file
        raise ScalingError(f"cannot open grid-search study {path} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != settings:
        keys = [*settings, *(k for k in stored if k not in settings)]
        diff = next(k for k in keys if stored.get(k) != settings.get(k))
        raise ScalingError(f"{path}: this grid study was made with {diff}={stored.get(diff)!r}, "
                           f"not {settings.get(diff)!r}; use another -o folder or delete the file")
    if study.metric_names != list(METRIC_NAMES):  # new, or made before the names were stored
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(METRIC_NAMES))
    return study


def _split_score(value) -> tuple[float, dict]:
    """(score, extra values to record) from a scorer's float or ``{"score": ..., ...}``."""
    if isinstance(value, Mapping):
        extras = {k: v for k, v in value.items() if k != "score"}
        value = value["score"]
    else:
        extras = {}
    score = float(value)
    if not math.isfinite(score):
        raise NasError(f"score {score} is not finite")
    return score, extras


def grid_search(genome: Genome, base_img: int, *, out_dir: str | Path,
                grid: Sequence[Coefficients], fidelity: str = "zero-cost",
                data: str = "synthetic", measure=None, batch: int | None = None, seed: int = 0,
                proxy_epochs: int = 5, proxy_subset: int | None = 256,
                threads: int | None = None, device: str = "cpu",
                scorer: Callable[[Genome, int], float | Mapping[str, float]] | None = None,
                progress: Callable[[str], None] | None = None) -> GridResult:
    """Evaluate each grid point at φ = 1 (resumable, see the module docstring) and pick the best.

    ``measure`` is a :class:`scaling.measure.Measurer` (GFLOPs and latency per point). ``batch``
    (None: the scorer's default), ``proxy_epochs``, ``proxy_subset``, ``threads`` and ``device``
    go to the fidelity's scorer (:class:`ScoreOptions`); ``scorer`` replaces it (a test hook).
    Creates ``out_dir`` for the study file.
    """
    check_fidelity(fidelity)
    if not grid:
        raise ScalingError("the coefficient grid is empty")
    measure = measure or Measurer(latency_runs=0)
    say = progress or (lambda _msg: None)
    if scorer is None:
        scorer = make_scorer(fidelity, ScoreOptions(
            data=data, batch=batch, seed=seed, proxy_epochs=proxy_epochs,
            proxy_subset=proxy_subset, threads=threads, device=device))
    proxy = getattr(scorer, "proxy", "custom")
    settings = {"base": genome.genome_hash(), "img": base_img, "fidelity": fidelity,
                "proxy": proxy, "data": str(data), "batch": getattr(scorer, "batch", batch),
                "seed": seed, **getattr(scorer, "settings", {})}
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScalingError(f"cannot create output folder {out_dir} ({exc.strerror})") from None
    path = out_dir / STORAGE_NAME

    with _quiet_optuna() as optuna:
        from optuna.distributions import FloatDistribution
        from optuna.trial import TrialState

        study = _open_study(optuna, path, settings)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        done = {t.user_attrs.get("key"): t
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        dists = {k: FloatDistribution(1.0, 1000.0) for k in ("alpha", "beta", "gamma")}
        evaluated, failed = 0, []
        todo = [c for c in grid if _key(c) not in done]
        if todo and getattr(scorer, "description", None):
            say(f"  score: {scorer.description}")
        for i, c in enumerate(todo, start=1):
            key = _key(c)
            study.enqueue_trial({"alpha": c.alpha, "beta": c.beta, "gamma": c.gamma},
                                user_attrs={"key": key})
            trial = study.ask(dists)
            try:
                member, img = scale_member(genome, c, 1.0, base_img)
                m = measure(member, img)
                score, extras = _split_score(scorer(member, img))
            except NasError as exc:
                trial.set_user_attr("error", str(exc))
                study.tell(trial, state=TrialState.FAIL)
                failed.append((c, str(exc)))
                say(f"  [{i}/{len(todo)}] {c}: failed ({exc})")
                continue
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            trial.set_user_attr("gflops", m.gflops)
            trial.set_user_attr("latency_ms", m.latency_ms)
            trial.set_user_attr("img", img)
            trial.set_user_attr("product", c.product)
            for name, value in extras.items():
                trial.set_user_attr(name, value)
            study.tell(trial, score)
            evaluated += 1
            say(f"  [{i}/{len(todo)}] {c}: {proxy} {score:.4g}, {m.gflops:.3g} GFLOPs at {img} px")
        done = {t.user_attrs.get("key"): t
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}

    points = tuple(GridPoint(c, float(done[_key(c)].value), float(done[_key(c)].user_attrs["gflops"]),
                             done[_key(c)].user_attrs.get("latency_ms"))
                   for c in grid if _key(c) in done)
    if not points:
        reason = f": {failed[0][1]}" if failed else ""
        raise ScalingError(f"grid search: no grid point could be evaluated{reason}")
    return GridResult(points, best_point(points), evaluated, tuple(failed), proxy, path)


def grid_csv(result: GridResult) -> str:
    """``grid.csv``: one row per grid point (columns :data:`GRID_COLUMNS`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(GRID_COLUMNS)
    for p in result.points:
        c = p.coeffs
        writer.writerow([f"{c.alpha:g}", f"{c.beta:g}", f"{c.gamma:g}", f"{c.product:.5f}",
                         f"{p.score:.6g}", f"{p.gflops:.4f}",
                         "" if p.latency_ms is None else f"{p.latency_ms:.3f}"])
    return buf.getvalue()
