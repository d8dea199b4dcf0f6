"""``y7nas run``: one command from (data, budget) to a report, as a list of resumable stages.

Stages, in order (:data:`STAGES`): ``supernet`` (one-shot fidelity only), ``search``,
``finalists``, ``family``, ``report``. Each stage is a function of the run's settings and what
earlier stages wrote; :class:`nas.pipeline._state.RunState` records which finished, so
re-running the same command after a kill -9 continues at the first unfinished stage (the
supernet resumes from its last epoch, the search from its storage). The family's default targets
are said in :func:`family_targets`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from nas.pipeline._chosen import chosen_paths, write_chosen, write_chosen_onnx
from nas.pipeline._state import RunError, RunState

#: Default family targets, as multiples of the budget (see :func:`family_targets`).
DEFAULT_FAMILY_TARGETS = (1.0, 2.0, 4.0)
#: A target within this factor above the base's own cost adds no member worth building.
TARGET_MARGIN = 1.05
#: Where the supernet's random sub-networks come from (``--random-from``): the whole space (the
#: default: it ranked the band at Kendall tau 0.53 on the confirmation set, the band pool at 0.13;
#: docs/SUPERNET.md) or the budget's band (a pool of :data:`BAND_POOL` architectures drawn in it;
#: the whole space without a budget).
RANDOM_FROM = ("band", "space")
BAND_POOL = 16
#: random draws spent on the pool at most (a rare band gets a smaller pool, not a long wait)
BAND_POOL_DRAWS = 6 * BAND_POOL


@dataclass(frozen=True)
class RunConfig:
    """Everything ``y7nas run`` is asked (CLI options one to one). ``img=None``: 160 for the
    one-shot fidelity (the supernet's size), else 320. ``img`` is the size the supernet and the
    candidates are trained and scored at; ``deploy_img`` the size every cost (the budget, the
    finalists' and the family's latency and GFLOPs) is measured at, ``img`` when not given.
    Likewise ``device`` is where the supernet, the candidates and the finalists are trained and
    scored, ``latency_device`` where every latency is timed (``None``: ``device``, resolved here)."""

    study: str
    space: str
    data: str = "synthetic"
    results_dir: Path = Path("results")
    img: int | None = None
    deploy_img: int | None = None
    max_latency: float | None = None
    max_gflops: float | None = None
    max_params: float | None = None
    objectives: tuple[str, ...] = ("score", "latency_ms")
    fidelity: str = "oneshot"
    trials: int = 100
    finalists: int = 2
    finalist_epochs: int = 5
    finalist_subset: int | None = None
    family_targets: tuple[float, ...] = DEFAULT_FAMILY_TARGETS
    band: tuple[float, float] | None = (0.85, 1.0)
    estimator: str = "score"
    baseline: str = "preset"
    supernet_epochs: int = 30
    activation: str = "silu"
    random_subnets: int = 2
    random_from: str = "space"
    seed: int = 0
    latency_runs: int = 10
    latency_backend: str = "torch"
    latency_threads: int = 1
    latency_table: str | None = None
    latency_device: str | None = None
    device: str = "cpu"
    workers: int = 1
    threads: int | None = None
    onnx: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "results_dir", Path(self.results_dir))
        if self.img is None:
            object.__setattr__(self, "img", 160 if self.fidelity == "oneshot" else 320)
        if self.latency_device is None:
            object.__setattr__(self, "latency_device", self.device)
        from nas.search import check_image_size

        check_image_size("--img", self.img)
        check_image_size("--deploy-img", self.deploy_img)
        for name in ("trials", "finalists", "finalist_epochs", "supernet_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RunError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
        if not self.family_targets or any(not t > 0 for t in self.family_targets):
            raise RunError(f"--family-targets must be positive multiples of the budget, got "
                           f"{','.join(map(str, self.family_targets)) or 'nothing'}")
        if sum(v is not None for v in (self.max_latency, self.max_gflops, self.max_params)) > 1:
            raise RunError("give one budget: --max-latency, --max-gflops or --max-params")
        if self.band is not None:
            from nas.search import parse_band

            object.__setattr__(self, "band", parse_band(self.band))
        from nas.search import get_estimator

        get_estimator(self.estimator)
        if self.random_from not in RANDOM_FROM:
            raise RunError(f"--random-from must be one of {', '.join(RANDOM_FROM)}, got {self.random_from!r}")
        if not isinstance(self.baseline, str) or not self.baseline.strip():
            raise RunError(f"--baseline must be 'preset', a preset name, a YAML file or 'none', got {self.baseline!r}")

    @property
    def study_dir(self) -> Path:
        return self.results_dir / self.study

    @property
    def cost_img(self) -> int:
        """Where costs are measured: ``--deploy-img``, else ``--img``."""
        return self.deploy_img or self.img

    @property
    def supernet_path(self) -> Path:
        return self.study_dir / "supernet.pt"

    def settings(self) -> dict[str, Any]:
        """What the run records and compares on a re-run. Local choices (workers, threads) are not
        among them; the latency device is (only the stages that time latency depend on it:
        :meth:`Stage.depends_of`); the training device is recorded but no stage depends on it."""
        local = {"study", "results_dir", "workers", "threads", "onnx"}   # onnx: an export of the result
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in local}


@dataclass
class RunHooks:
    """How a run shows its progress (the CLI fills these; all optional)."""

    line: Callable[[str], None] = lambda text: None
    supernet_progress: Callable[[int], tuple[Any, Any, Any]] | None = None  # epochs → (on_step, on_epoch, ctx)
    search_progress: Callable[[], Any] | None = None                          # → callable with close()
    front: Callable[[Any], None] = lambda summary: None
    finalists: Callable[[Any], None] = lambda result: None
    family: Callable[[Any], None] = lambda family: None


@dataclass(frozen=True)
class Stage:
    name: str
    depends: tuple[str, ...]          # settings whose change invalidates this stage's work
    run: Callable[[RunConfig, RunHooks, RunState], dict[str, Any]]
    needed: Callable[[RunConfig], bool] = lambda cfg: True
    #: whether the stage times latency on ``--latency-device`` in this run (a latency table
    #: predicts it instead): then its work depends on the latency device too
    times_latency: Callable[[RunConfig], bool] = lambda cfg: False
    #: settings the stage depends on in some runs only (e.g. the supernet on the budget when its
    #: random sub-networks come from the budget's band)
    more: Callable[[RunConfig], tuple[str, ...]] = lambda cfg: ()

    def depends_of(self, cfg: RunConfig) -> tuple[str, ...]:
        """The settings this stage's work depends on in the run ``cfg``."""
        keys = (*self.depends, *self.more(cfg))
        return (*keys, "latency_device") if self.times_latency(cfg) else keys


# ------------------------------------------------------------------------------ stages
def _supernet_stage(cfg: RunConfig, hooks: RunHooks, state: RunState) -> dict[str, Any]:
    from nas.data import load_data_config
    from nas.supernet import SupernetConfig, train_supernet
    from search_spaces import get_space

    data_cfg = load_data_config(cfg.data)
    hooks.line(f"supernet of {cfg.space} ({cfg.activation}) on {cfg.data} ({data_cfg.nc} classes), "
               f"{cfg.supernet_epochs} epochs at {cfg.img} px -> {cfg.supernet_path}")
    on_step, on_epoch, ctx = (hooks.supernet_progress(cfg.supernet_epochs) if hooks.supernet_progress
                              else (None, None, contextlib.nullcontext()))
    settings = SupernetConfig(epochs=cfg.supernet_epochs, img=cfg.img, seed=cfg.seed,
                              activation=cfg.activation, random_subnets=cfg.random_subnets,
                              threads=cfg.threads, device=cfg.device)
    space = get_space(cfg.space, nc=data_cfg.nc)
    pool = band_pool(cfg, space.fixed(activation=cfg.activation), hooks.line)
    with ctx:
        res = train_supernet(space, data_cfg, cfg.supernet_path, settings, on_step=on_step, on_epoch=on_epoch,
                             random_pool=pool)
    hooks.line(f"supernet: largest sub-network mAP@0.5:0.95 {res.map50_95_largest:.3f}, smallest "
               f"{res.map50_95_smallest:.3f}")
    return {"supernet": str(cfg.supernet_path), "map50_95_largest": res.map50_95_largest,
            "map50_95_smallest": res.map50_95_smallest}


def _budget(cfg: RunConfig):
    from nas.search import budget_of

    return budget_of(search_config(cfg).constraints)


def _pool_wanted(cfg: RunConfig) -> bool:
    return cfg.random_from == "band" and _budget(cfg) is not None


def band_pool(cfg: RunConfig, space: Any, say: Callable[[str], None]) -> list[Any]:
    """The architectures the supernet's random sub-networks are drawn from: with
    ``--random-from band`` and a budget, up to :data:`BAND_POOL` random architectures of
    ``space`` in the band (seeded, so a resumed run draws the same); else none (the whole space)."""
    from nas.search import DEFAULT_BAND, draw_in_band

    if not _pool_wanted(cfg):
        return []
    budget, band = _budget(cfg), cfg.band or DEFAULT_BAND
    meter = search_config(cfg).latency_meter() if budget.metric == "latency_ms" else None
    found = draw_in_band(space, budget, band, cfg.cost_img, BAND_POOL, seed=cfg.seed, meter=meter,
                         max_draws=BAND_POOL_DRAWS)
    pool = [space.decode(params) for params in found]
    if len(pool) < 2:
        say(f"supernet: only {len(pool)} architecture(s) of the space in the band {budget.describe(band)}; "
            f"random sub-networks from the whole space")
        return []
    say(f"supernet: random sub-networks from {len(pool)} architectures in the band {budget.describe(band)}")
    return pool


def search_config(cfg: RunConfig):
    """The :class:`nas.search.SearchConfig` of the run's search stage."""
    from nas.search import SearchConfig

    oneshot = cfg.fidelity == "oneshot"
    return SearchConfig(study=cfg.study, space=cfg.space, trials=cfg.trials, objectives=cfg.objectives,
                        fidelity=cfg.fidelity, seed=cfg.seed, img=cfg.img, deploy_img=cfg.deploy_img,
                        data=cfg.data,
                        max_latency=cfg.max_latency, max_gflops=cfg.max_gflops, max_params=cfg.max_params,
                        results_dir=cfg.results_dir, threads=cfg.threads, device=cfg.device,
                        latency_device=cfg.latency_device,
                        workers=cfg.workers, latency_runs=cfg.latency_runs,
                        latency_backend=cfg.latency_backend, latency_threads=cfg.latency_threads,
                        latency_table=cfg.latency_table,
                        supernet=str(cfg.supernet_path) if oneshot else None)


def search_space(search_cfg):
    """The study's space (``search_cfg.nc`` classes); a one-shot search fixes the activation to
    its supernet's."""
    from search_spaces import get_space

    space = get_space(search_cfg.space, nc=search_cfg.nc)
    if search_cfg.fidelity == "oneshot" and search_cfg.supernet:
        from nas.supernet import read_checkpoint

        space = space.fixed(activation=read_checkpoint(search_cfg.supernet)["meta"]["activation"])
    return space


def prepare_search(search_cfg):
    """(config with the data's class count, :func:`search_space`) of a search about to start."""
    from nas.search import get_fidelity
    from search_spaces import get_space

    get_space(search_cfg.space)  # unknown space → one line, before any data is generated
    if get_fidelity(search_cfg.fidelity).needs_data:
        get_fidelity(search_cfg.fidelity)().check_available()
        from nas.data import load_data_config

        search_cfg = search_cfg.replace(nc=load_data_config(search_cfg.data).nc)
    return search_cfg, search_space(search_cfg)


def _search_stage(cfg: RunConfig, hooks: RunHooks, state: RunState) -> dict[str, Any]:
    from nas.search import search_filling_band

    search_cfg, space = prepare_search(search_config(cfg))
    hooks.line(f"search: {cfg.trials} candidates, fidelity {cfg.fidelity}, objectives "
               f"{','.join(search_cfg.objectives)}{_budget_text(cfg)}, scored at {cfg.img} px, costs at "
               f"{cfg.cost_img} px")
    note = search_cfg.cost_size_note()
    if note:
        hooks.line(note)
    progress = hooks.search_progress() if hooks.search_progress else None
    try:   # with a budget, then the targeted phase until the band holds the finalists
        summary = search_filling_band(search_cfg, space, cfg.band, cfg.finalists, progress=progress,
                                      say=hooks.line)
    finally:
        if progress is not None:
            progress.close()
    hooks.front(summary)
    return {"trials_csv": str(cfg.study_dir / "trials.csv"), "pareto_csv": str(cfg.study_dir / "pareto.csv"),
            "models": str(cfg.study_dir / "models"), "front": len(summary.front)}


def _finalists_stage(cfg: RunConfig, hooks: RunHooks, state: RunState) -> dict[str, Any]:
    from nas.pipeline._baseline import study_baseline
    from nas.search import train_finalists

    search_cfg, space = prepare_search(search_config(cfg))
    hand = study_baseline(cfg.baseline, search_cfg, space, hooks.line)
    result = train_finalists(cfg.study, cfg.results_dir, top=cfg.finalists, epochs=cfg.finalist_epochs,
                             subset=cfg.finalist_subset, threads=cfg.threads or 1, device=cfg.device,
                             space=space if cfg.fidelity == "oneshot" else None, progress=hooks.line,
                             band=cfg.band, estimator=cfg.estimator,
                             baseline=hand[1] if hand else None, baseline_name=hand[0] if hand else "baseline",
                             baseline_spec=cfg.baseline)
    hooks.finalists(result)
    if not any(row["map50_95"] is not None for row in result.rows):
        raise RunError(f"every finalist of study {cfg.study!r} failed to train (see {result.csv_path})")
    from nas.search import hand_design_verdict

    shown = ("role", "name", "number", "map50", "map50_95", "latency_ms", "gflops", "params", "init")
    return {"finalists_csv": str(result.csv_path), "finalists_json": str(result.json_path),
            "side_by_side": [{k: row.get(k) for k in shown} for row in result.rows],
            "verdict": hand_design_verdict(result)}


def best_finalist(rows, constraints: Mapping[str, float]) -> dict[str, Any]:
    """The trained searched finalist (never the hand design) with the highest mAP@0.5:0.95 among
    those within ``constraints`` (metric → limit, e.g. ``{"latency_ms": 10}``)."""
    fitting = [r for r in rows if r.get("map50_95") is not None and r.get("role", "searched") == "searched"
               and all(r.get(m) is None or r[m] <= limit for m, limit in constraints.items())]
    if not fitting:
        raise RunError("no trained finalist is within the budget")
    return max(fitting, key=lambda r: (r["map50_95"], -r["number"]))


def family_targets(cfg: RunConfig, base_gflops: float) -> tuple[str, tuple[float, ...]]:
    """(metric, targets) of the family: ``--family-targets`` multiples (default ×1, ×2, ×4) of the
    latency or GFLOPs budget; with a params budget or none, of the chosen model's own GFLOPs.
    The chosen finalist itself is always the family's φ = 0 member (compound scaling only grows
    a model, so multiples below its own cost are left out)."""
    if cfg.max_latency is not None:
        return "latency", tuple(t * cfg.max_latency for t in cfg.family_targets)
    if cfg.max_gflops is not None:
        return "gflops", tuple(t * cfg.max_gflops for t in cfg.family_targets)
    return "gflops", tuple(t * base_gflops for t in cfg.family_targets)


def _family_stage(cfg: RunConfig, hooks: RunHooks, state: RunState) -> dict[str, Any]:
    import json

    from nas.search._config import CONSTRAINTS
    from scaling.coefficients import Coefficients
    from scaling.family import Family, build_family, family_files, phis_for_budget, resolve_base, write_outputs
    from scaling.measure import Measurer
    from scaling.plot import draw_family, family_plot_data, preset_references

    rows = json.loads((cfg.study_dir / "finalists.json").read_text(encoding="utf-8"))["rows"]
    limits = {metric: getattr(cfg, name) * factor for name, (metric, factor) in CONSTRAINTS.items()
              if getattr(cfg, name) is not None}
    best = best_finalist(rows, limits)
    chosen_paths(cfg.study_dir)["onnx"].unlink(missing_ok=True)     # of an earlier choice: written anew
    chosen = write_chosen(cfg.study_dir, best, hooks.line)
    _, genome = resolve_base(None, cfg.study, best["number"], cfg.results_dir)
    name = f"{cfg.study}-trial{best['number']}"
    coeffs = Coefficients(1.2, 1.1, 1.15)      # EfficientNet's α, β, γ (as `y7nas scale`)
    measure = Measurer(cfg.latency_runs, threads=cfg.latency_threads, device=cfg.latency_device,
                       backend=cfg.latency_backend, table=cfg.latency_table)
    base_gflops = measure.static(genome, cfg.cost_img)[1]
    metric, targets = family_targets(cfg, base_gflops)
    base_cost = base_gflops if metric == "gflops" else measure.latency(genome, cfg.cost_img)
    reachable = tuple(t for t in targets if t > TARGET_MARGIN * base_cost)
    hooks.line(f"family of trial {best['number']} (mAP@0.5:0.95 {best['map50_95']:.4f}): phi 0 plus "
               f"{metric} targets {', '.join(f'{t:.4g}' for t in reachable) or 'none above its own cost'}")
    phis = phis_for_budget(genome, coeffs, cfg.cost_img, reachable, metric, measure) if reachable else ()
    family = build_family(name, genome, coeffs, sorted({0.0, *phis}), cfg.cost_img, measure)
    family = Family(family.name, family.coeffs, family.base_img, family.base, family.members,
                    tuple((metric, t, p) for t, p in zip(reachable, phis)))
    png = draw_family(family_plot_data(family, preset_references(cfg.cost_img, measure)))
    out_dir = cfg.study_dir / "family"
    write_outputs(out_dir, family_files(family, png))
    hooks.family(family)
    return {"family": str(out_dir), "base_trial": best["number"], "members": len(family.members),
            "chosen": chosen}


def _report_stage(cfg: RunConfig, hooks: RunHooks, state: RunState) -> dict[str, Any]:
    from nas.report import write_report

    path = write_report(cfg.study, cfg.results_dir)
    hooks.line(f"report: {path}")
    return {"report": str(path)}


def _budget_text(cfg: RunConfig) -> str:
    parts = [f"{label} <= {value:g}" for label, value in (("latency ms", cfg.max_latency),
             ("GFLOPs", cfg.max_gflops), ("params M", cfg.max_params)) if value is not None]
    return f"; budget {parts[0]}" if parts else ""


_SEARCH_KEYS = ("space", "data", "img", "deploy_img", "max_latency", "max_gflops", "max_params", "objectives",
                "fidelity", "trials", "seed", "latency_runs", "latency_backend", "latency_threads",
                "latency_table")
#: The budget and its band (the supernet depends on them when its random sub-networks come from the band).
_BUDGET_KEYS = ("max_latency", "max_gflops", "max_params", "band", "deploy_img")
#: How latency is measured (with the latency device when a stage times it: :attr:`Stage.times_latency`).
_LATENCY_KEYS = ("latency_runs", "latency_backend", "latency_threads", "latency_table")

#: The stages of a run, in order, with the settings each depends on: each stage's own inputs,
#: not only those no earlier stage lists (a stage that never starts, e.g. the supernet of a proxy
#: run, pins nothing; :meth:`RunState.open` refuses a change when any started stage depends on it).
STAGES: tuple[Stage, ...] = (
    Stage("supernet", ("space", "data", "img", "activation", "supernet_epochs", "random_subnets", "seed",
                       "random_from"), _supernet_stage, needed=lambda cfg: cfg.fidelity == "oneshot",
          more=lambda cfg: _BUDGET_KEYS + (_LATENCY_KEYS if cfg.max_latency is not None else ()) if _pool_wanted(cfg) else (),
          times_latency=lambda cfg: _pool_wanted(cfg) and cfg.max_latency is not None and cfg.latency_table is None),
    Stage("search", (*_SEARCH_KEYS, "activation", "band", "finalists"), _search_stage,
          times_latency=lambda cfg: search_config(cfg).needs_latency and cfg.latency_table is None),
    # trains the search's finalists on its data at its image size, seeded (one-shot: from the supernet)
    Stage("finalists", ("space", "data", "img", "deploy_img", "seed", "fidelity", "finalists", "finalist_epochs",
                        "finalist_subset", "band", "estimator", "baseline"), _finalists_stage),
    # picks the best finalist within the budget, then times and counts the family at the deployment size
    Stage("family", ("img", "deploy_img", "max_latency", "max_gflops", "max_params", "family_targets", *_LATENCY_KEYS),
          _family_stage, times_latency=lambda cfg: cfg.latency_table is None),
    Stage("report", (), _report_stage),
)


def preflight(cfg: RunConfig) -> None:
    """Refuse what would fail later (one line) before run.json records any stage as started: a
    stage once started pins its settings, so a typo must not get that far. Checks the search
    settings, the space and the supernet activation, the data (generated once when synthetic),
    the device and the latency backend or table."""
    from nas.profile import resolve_device
    from search_spaces import get_space

    search_cfg = search_config(cfg)
    space = get_space(cfg.space)
    if cfg.fidelity == "oneshot":
        space.fixed(activation=cfg.activation)
    resolve_device(cfg.device)
    if cfg.latency_table is None:
        resolve_device(cfg.latency_device)
    if search_cfg.needs_latency:
        search_cfg.latency_meter().check()
    if cfg.fidelity != "flops":
        from nas.data import load_data_config

        load_data_config(cfg.data)


def run_pipeline(cfg: RunConfig, hooks: RunHooks | None = None) -> dict[str, Any]:
    """Run (or continue) every stage of ``cfg``; returns ``{stage: {seconds, outputs…}}``.

    Raises :class:`RunError` (one line) when settings that started work depends on changed.
    """
    hooks = hooks or RunHooks()
    preflight(cfg)
    depends = [(s.name, s.depends_of(cfg)) for s in STAGES]
    state = RunState.open(cfg.study_dir / "run.json", cfg.settings(), depends)
    if not state.path.exists() and cfg.study_dir.exists() and any(cfg.study_dir.iterdir()):
        raise RunError(f"{cfg.study_dir} holds results that are not a y7nas run (no run.json); "
                       "use another --study or --results-dir")
    state.save()
    stages = [s for s in STAGES if s.needed(cfg)]
    for k, stage in enumerate(stages, 1):
        head = f"[{k}/{len(stages)}] {stage.name}"
        if state.done(stage.name):
            hooks.line(f"{head}: done earlier ({state.stages[stage.name]['seconds']:.0f} s), kept")
            continue
        hooks.line(f"{head} ...")
        state.start(stage.name)
        started = time.perf_counter()
        outputs = stage.run(cfg, hooks, state)
        seconds = time.perf_counter() - started
        state.finish(stage.name, seconds, outputs)
        hooks.line(f"{head}: done in {seconds:.0f} s")
    if cfg.onnx and state.done("family") and not chosen_paths(cfg.study_dir)["onnx"].is_file():
        state.stages["family"]["outputs"].setdefault("chosen", {})["onnx"] = write_chosen_onnx(
            cfg.study_dir, cfg.cost_img, hooks.line)
        state.save()
    return {name: dict(info) for name, info in state.stages.items()}
