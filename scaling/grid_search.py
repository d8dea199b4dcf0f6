"""Grid search of the compound coefficients (α, β, γ) at φ = 1 (Tan & Le 2019, §3.3 "step 1").

Every triple of :func:`scaling.grid.coefficient_grid` (α·β²·γ² within 0.1 of 2, all ≥ 1) is
turned into its φ = 1 member of the base (:func:`scaling.compound.scale_member`) and scored with
the chosen fidelity:

``zero-cost``
    :func:`nas.zero_cost.compute_proxies` on one batch of the dataset (``--data``, default the
    synthetic set) letterboxed to the member's own input size. The proxy is
    ``nas.zero_cost.PRIMARY_PROXY`` when that module names one, else ``synflow`` (the module
    names no default today). SynFlow uses only the batch's shape and grows with parameters and
    input size, so among candidates of ≈ equal FLOPs it prefers the ones it predicts best.
``proxy``
    short proxy training; refused with a :class:`ScalingError` (``nas.train`` is not wired
    into this search yet).

Storage: an Optuna study ``scale-grid`` in ``<out_dir>/grid_search.db`` (SQLite). Each grid point
is enqueued with fixed params ``alpha, beta, gamma`` and a ``key`` user attribute; a point whose
key already has a COMPLETE trial is never evaluated again, so re-running resumes (an interrupted
RUNNING trial is marked FAIL and its point re-evaluated). The study remembers its settings (base
genome hash, base size, fidelity, proxy, data, batch, seed) and refuses to mix in results made
with other settings.

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
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from nas.errors import NasError, ScalingError
from nas.genome import Genome

from .coefficients import Coefficients
from .compound import scale_member

__all__ = ["FIDELITIES", "GRID_COLUMNS", "GridPoint", "GridResult", "check_fidelity",
           "grid_search", "grid_csv", "zero_cost_proxy_name", "best_point", "STORAGE_NAME"]

FIDELITIES = ("zero-cost", "proxy")
GRID_COLUMNS = ("alpha", "beta", "gamma", "product", "score", "gflops", "latency_ms")
STORAGE_NAME = "grid_search.db"
STUDY_NAME = "scale-grid"
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
    proxy: str
    storage: Path


def check_fidelity(fidelity: str) -> None:
    """Refuse unknown fidelities, and ``proxy``: short training is not wired into this search."""
    if fidelity not in FIDELITIES:
        raise ScalingError(f"unknown fidelity {fidelity!r} (expected one of: {', '.join(FIDELITIES)})")
    if fidelity == "proxy":
        raise ScalingError("--fidelity proxy is not wired into the grid search yet "
                           "(scaling.grid_search); use --fidelity zero-cost")


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


class _ZeroCostScorer:
    """Scores (genome, img) with one zero-cost proxy on a cached image batch per input size."""

    def __init__(self, data: str, batch: int, seed: int):
        from nas.data import load_data_config, scan_split

        self.data, self.batch, self.seed = data, batch, seed
        self.proxy = zero_cost_proxy_name()
        # Read the data now: a missing or unusable dataset is one error before the study
        # file exists, not a failure repeated at every grid point.
        self._split = scan_split(load_data_config(data), "val")
        self._batches: dict[int, object] = {}

    def _images(self, img: int):
        if img not in self._batches:
            from nas.data import first_batch

            self._batches[img] = first_batch(self._split, img, self.batch, self.seed)
        return self._batches[img]

    def __call__(self, genome: Genome, img: int) -> float:
        from nas.zero_cost import compute_proxies

        from .family import _build

        return compute_proxies(_build(genome), self._images(img), names=(self.proxy,),
                               seed=self.seed)[self.proxy]


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
        diff = next(k for k in settings if stored.get(k) != settings[k])
        raise ScalingError(f"{path}: this grid study was made with {diff}={stored.get(diff)!r}, "
                           f"not {settings[diff]!r}; use another -o folder or delete the file")
    return study


def grid_search(genome: Genome, base_img: int, *, out_dir: str | Path,
                grid: Sequence[Coefficients], fidelity: str = "zero-cost",
                data: str = "synthetic", measure=None, batch: int = 8, seed: int = 0,
                scorer: Callable[[Genome, int], float] | None = None,
                progress: Callable[[str], None] | None = None) -> GridResult:
    """Evaluate each grid point at φ = 1 (resumable, see the module docstring) and pick the best.

    ``measure`` is a :class:`scaling.family.Measurer` (GFLOPs and latency per point); ``scorer``
    replaces the fidelity's scorer (a test hook). Creates ``out_dir`` for the study file.
    """
    from .family import Measurer

    check_fidelity(fidelity)
    if not grid:
        raise ScalingError("the coefficient grid is empty")
    measure = measure or Measurer(latency_runs=0)
    say = progress or (lambda _msg: None)
    if scorer is None:
        scorer = _ZeroCostScorer(data, batch, seed)
        proxy = scorer.proxy
    else:
        proxy = getattr(scorer, "proxy", "custom")
    settings = {"base": genome.genome_hash(), "img": base_img, "fidelity": fidelity,
                "proxy": proxy, "data": str(data), "batch": batch, "seed": seed}
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
        for i, c in enumerate(todo, start=1):
            key = _key(c)
            study.enqueue_trial({"alpha": c.alpha, "beta": c.beta, "gamma": c.gamma},
                                user_attrs={"key": key})
            trial = study.ask(dists)
            try:
                member, img = scale_member(genome, c, 1.0, base_img)
                m = measure(member, img)
                score = float(scorer(member, img))
                if not math.isfinite(score):
                    raise NasError(f"score {score} is not finite")
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
