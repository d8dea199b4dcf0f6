"""What a search run is: objectives, constraints, samplers and the :class:`SearchConfig`.

A study is defined by the fields in :data:`STUDY_FIELDS` (space, objectives, fidelity, image
size, data, constraints, ...). They are stored in the study's user attributes when the study is
created; reopening it with different values is refused, and ``y7nas worker`` reads them back so a
worker on another machine needs only the study name and the storage URL.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nas.errors import SearchError
from nas.latency import LatencyMeter, get_backend
from nas.search._fidelity import FIDELITIES, get_fidelity
from nas.search._objectives import DEFAULT_OBJECTIVES, OBJECTIVES, Objective, parse_objectives
from nas.search._pruning import PruningRule

SAMPLERS = ("nsga2", "tpe", "random")

#: constraint name → (metric it limits, factor from the metric to the user's unit)
CONSTRAINTS: Mapping[str, tuple[str, float]] = {
    "max_latency": ("latency_ms", 1.0),       # milliseconds
    "max_gflops": ("gflops", 1.0),            # GFLOPs
    "max_params": ("params", 1e-6),           # millions of parameters
}

#: fields that define a study: reopening it with other values is refused (``device`` is the device
#: latency is timed on, ``--latency-device``, None when nothing is timed; ``latency`` comes first
#: so that a different latency device is refused as ``latency.device``)
STUDY_FIELDS = ("space", "space_signature", "nc", "objectives", "fidelity", "img", "deploy_img", "data",
                "constraints", "latency", "device", "zero_cost_batch", "proxy_epochs", "proxy_subset",
                "proxy_img", "supernet_sha", "oneshot_calib", "oneshot_val")

_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CONFIG_ATTR = "y7nas:config"
BUDGET_ATTR = "y7nas:budget"
REFERENCES_ATTR = "y7nas:references"
CONFIG_VERSION = 1


def check_image_size(option: str, value: Any) -> None:
    """Refuse (one line) an input size that is not a positive multiple of 32; None passes (unset)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 32 or value % 32):
        raise SearchError(f"{option} must be a positive multiple of 32 (the largest stride), got {value!r}")


@dataclass(frozen=True)
class SearchConfig:
    """Everything one search run needs (CLI options map one to one onto these fields).

    ``sampler=None`` picks ``nsga2`` for several objectives and ``tpe`` for one. ``threads`` is
    the total number of torch CPU threads, divided among ``workers``. ``storage=None`` means
    SQLite at ``<results_dir>/<study>/study.db``. ``max_params`` is in millions.

    Latency (objective ``latency_ms`` or ``--max-latency``) is measured by :meth:`latency_meter`:
    ``latency_backend`` (``torch`` or ``onnxruntime``) on ``latency_device`` (``None``: the
    scoring ``device``, resolved when the config is made) with ``latency_threads`` intra-op
    threads (default 1), whatever ``device`` and ``threads`` the workers score with, or predicted
    by the ``latency_table`` file. Those settings, the image size and the library versions are a
    study field (``latency``): a resumed run or a worker measuring otherwise is refused, while
    the scoring device is local (a study scored on a GPU for a CPU deployment resumes on a CPU).

    Two image sizes: ``img`` is the size candidates are scored (trained, one-shot evaluated) at;
    ``deploy_img`` the size the user deploys at, where every cost (params, GFLOPs, latency, so
    every budget) is measured. ``deploy_img=None`` measures the costs at ``img``
    (:attr:`cost_img`; :meth:`cost_size_note` says so in one line).
    """

    study: str
    space: str
    trials: int
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    fidelity: str = "zero-cost"
    sampler: str | None = None
    workers: int = 1
    seed: int = 0
    img: int = 320
    deploy_img: int | None = None
    data: str = "synthetic"
    max_latency: float | None = None
    max_gflops: float | None = None
    max_params: float | None = None
    results_dir: Path = Path("results")
    storage: str | None = None
    threads: int | None = None
    device: str = "cpu"
    nc: int = 80
    space_signature: str = ""
    dimensions: tuple[str, ...] = ()
    latency_runs: int = 10
    latency_warmup: int = 3
    latency_backend: str = "torch"
    latency_threads: int = 1
    latency_table: str | None = None
    latency_device: str | None = None
    zero_cost_batch: int = 16
    proxy_epochs: int = 5
    proxy_subset: int | None = 256
    proxy_img: int | None = None
    supernet: str | None = None
    supernet_sha: str = ""
    oneshot_calib: int = 64
    oneshot_val: int | None = None
    prune: bool = True
    prune_eta: int = 3
    prune_min_epoch: int = 1
    heartbeat_interval: int = 5
    grace_period: int = 20
    poll_interval: float = 1.0
    max_consecutive_failures: int = 20
    reference_presets: tuple[str, ...] = ("yolov7-tiny", "yolov7", "yolov7x")

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", parse_objectives(self.objectives))
        object.__setattr__(self, "results_dir", Path(self.results_dir))
        if self.latency_device is None:
            object.__setattr__(self, "latency_device", self.device)
        if not isinstance(self.study, str) or not _STUDY_NAME.fullmatch(self.study):
            raise SearchError(f"study name {self.study!r} must be 1-100 letters, digits, '.', '_' "
                              "or '-' (it names a folder)")
        if self.trials < 1:
            raise SearchError(f"--trials must be >= 1, got {self.trials}")
        if self.workers < 1:
            raise SearchError(f"--workers must be >= 1, got {self.workers}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise SearchError(f"unknown sampler {self.sampler!r} (valid: {', '.join(SAMPLERS)})")
        check_image_size("--img", self.img)
        check_image_size("--deploy-img", self.deploy_img)
        if self.threads is not None and self.threads < 1:
            raise SearchError(f"--threads must be >= 1, got {self.threads}")
        if isinstance(self.latency_threads, bool) or not isinstance(self.latency_threads, int) \
                or self.latency_threads < 1:
            raise SearchError(f"--latency-threads must be >= 1, got {self.latency_threads}")
        if self.latency_table is None:
            get_backend(self.latency_backend)  # unknown name: one line
        for name in CONSTRAINTS:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SearchError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        get_fidelity(self.fidelity)
        if "score" in self.objectives and not get_fidelity(self.fidelity).scores:
            raise SearchError(f"objective 'score' needs a fidelity that scores architectures "
                              f"(zero-cost or proxy); fidelity {self.fidelity!r} only measures cost "
                              f"(use e.g. --objectives gflops,latency_ms)")
        if self.proxy_epochs < 1:
            raise SearchError(f"--proxy-epochs must be >= 1, got {self.proxy_epochs}")
        if self.proxy_subset is not None and self.proxy_subset < 1:
            raise SearchError(f"--proxy-subset must be >= 1, got {self.proxy_subset}")
        check_image_size("--proxy-img", self.proxy_img)
        if self.fidelity == "oneshot" and not self.supernet:
            raise SearchError("--fidelity oneshot needs --supernet FILE (made by `y7nas supernet train`)")
        if self.oneshot_calib < 1:
            raise SearchError(f"--oneshot-calib must be >= 1, got {self.oneshot_calib}")
        if self.oneshot_val is not None and self.oneshot_val < 1:
            raise SearchError(f"--oneshot-val must be >= 1, got {self.oneshot_val}")
        self.pruning_rule()  # validates --prune-eta / --prune-min-epoch
        if self.zero_cost_batch < 2:
            raise SearchError("the zero-cost batch needs at least 2 images")

    # -- derived -------------------------------------------------------------------------
    @property
    def sampler_name(self) -> str:
        return self.sampler or ("nsga2" if len(self.objectives) > 1 else "tpe")

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o].direction for o in self.objectives]

    @property
    def constraints(self) -> dict[str, float]:
        """``{metric: limit in the metric's own unit}`` for the constraints that are set."""
        out = {}
        for name, (metric, factor) in CONSTRAINTS.items():
            value = getattr(self, name)
            if value is not None:
                out[metric] = float(value) / factor
        return out

    @property
    def needs_latency(self) -> bool:
        return "latency_ms" in self.objectives or self.max_latency is not None

    def latency_meter(self) -> LatencyMeter:
        """How this search measures latency (see the class docstring)."""
        return LatencyMeter(backend=self.latency_backend, device=self.latency_device, threads=self.latency_threads,
                            runs=self.latency_runs, warmup=self.latency_warmup, table=self.latency_table)

    @property
    def cost_img(self) -> int:
        """Input size every cost (params, GFLOPs, latency, the budget) is measured at:
        ``--deploy-img``, else ``--img``."""
        return self.deploy_img or self.img

    def cost_size_note(self) -> str | None:
        """One line when a budget or a cost objective is measured at the scoring size because no
        ``--deploy-img`` was given; None otherwise."""
        costs = (set(self.constraints) | set(self.objectives)) & {"gflops", "latency_ms"}  # params: any size
        if self.deploy_img is not None or not costs:
            return None
        return (f"note: costs ({', '.join(sorted(costs))}) are measured at --img {self.img} px; pass "
                f"--deploy-img N to measure them at the size you deploy at")

    @property
    def train_img(self) -> int:
        """Input size of proxy training (``--proxy-img``, else ``--img``)."""
        return self.proxy_img or self.img

    def pruning_rule(self):
        """The early-stopping rule of this search, or None (pruning off, or nothing to prune:
        a fidelity without epochs, or no ``score`` objective)."""
        rule = PruningRule(eta=self.prune_eta, min_epoch=self.prune_min_epoch)
        if not self.prune or not get_fidelity(self.fidelity).prunable or "score" not in self.objectives:
            return None
        return rule

    @property
    def study_dir(self) -> Path:
        return self.results_dir / self.study

    @property
    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.study_dir / 'study.db').resolve()}"

    def replace(self, **changes: Any) -> "SearchConfig":
        return dataclasses.replace(self, **changes)

    # -- study attributes ----------------------------------------------------------------
    def study_attrs(self) -> dict[str, Any]:
        """JSON-ready dict stored on the study (the defining fields plus how it was started)."""
        return {
            "version": CONFIG_VERSION,
            "space": self.space,
            "space_signature": self.space_signature,
            "nc": self.nc,
            "dimensions": list(self.dimensions),
            "objectives": list(self.objectives),
            "fidelity": self.fidelity,
            "img": self.img,
            "deploy_img": self.cost_img,
            "data": self.data if _uses_data(self.fidelity) else None,
            "constraints": self.constraints,
            "device": self.latency_device if self.needs_latency else None,   # where latency is timed
            "zero_cost_batch": self.zero_cost_batch if self.fidelity == "zero-cost" else None,
            "proxy_epochs": self.proxy_epochs if self.fidelity == "proxy" else None,
            "proxy_subset": self.proxy_subset if self.fidelity == "proxy" else None,
            "proxy_img": self.train_img if self.fidelity == "proxy" else None,
            "supernet": self.supernet if self.fidelity == "oneshot" else None,
            "supernet_sha": self.supernet_sha if self.fidelity == "oneshot" else None,
            "oneshot_calib": self.oneshot_calib if self.fidelity == "oneshot" else None,
            "oneshot_val": self.oneshot_val if self.fidelity == "oneshot" else None,
            "prune": self.prune,
            "prune_eta": self.prune_eta,
            "prune_min_epoch": self.prune_min_epoch,
            "sampler": self.sampler_name,
            "seed": self.seed,
            "latency_runs": self.latency_runs,
            "latency_warmup": self.latency_warmup,
            "latency": self.latency_meter().record(self.cost_img) if self.needs_latency else None,
            "latency_table": self.latency_table if self.needs_latency else None,
        }

    def check_against(self, stored: Mapping[str, Any]) -> None:
        """Refuse to continue a study created with other defining fields (one line)."""
        mine = self.study_attrs()
        for key in STUDY_FIELDS:
            if key == "space_signature" and not mine[key]:
                continue  # no space object at hand (the space name is still checked)
            if key in stored and _norm(stored[key]) != _norm(mine[key]):
                if isinstance(stored[key], dict) and isinstance(mine[key], dict):
                    key, theirs, ours = _first_difference(key, stored[key], mine[key])
                    raise SearchError(
                        f"study {self.study!r} was created with {key}={_show(theirs)}, this run "
                        f"measures {key}={_show(ours)}; use another --study name or the same settings")
                raise SearchError(
                    f"study {self.study!r} was created with {key}={_show(stored[key])}, this run "
                    f"asks for {key}={_show(mine[key])}; use another --study name or the same options")

    @classmethod
    def from_study_attrs(cls, study: str, attrs: Mapping[str, Any], budget: int,
                         **overrides: Any) -> "SearchConfig":
        """The config of an existing study (for ``y7nas worker``); ``overrides`` are local."""
        constraints = attrs.get("constraints") or {}
        limits = {name: constraints[metric] * factor for name, (metric, factor) in CONSTRAINTS.items()
                  if metric in constraints}
        values = dict(
            study=study, space=attrs["space"], trials=budget, objectives=tuple(attrs["objectives"]),
            fidelity=attrs["fidelity"], sampler=attrs.get("sampler"), seed=attrs.get("seed", 0),
            img=attrs["img"], deploy_img=stored_deploy_img(attrs), data=attrs.get("data") or "synthetic", nc=attrs["nc"],
            space_signature=attrs.get("space_signature", ""),
            dimensions=tuple(attrs.get("dimensions", ())),
            device=attrs.get("device") or "cpu",      # a worker scores where the study times latency
            latency_device=attrs.get("device") or None,
            zero_cost_batch=attrs.get("zero_cost_batch") or 16,
            proxy_epochs=attrs.get("proxy_epochs") or 5, proxy_subset=attrs.get("proxy_subset"),
            proxy_img=attrs.get("proxy_img"), prune=attrs.get("prune", True),
            supernet=attrs.get("supernet"), supernet_sha=attrs.get("supernet_sha") or "",
            oneshot_calib=attrs.get("oneshot_calib") or 64, oneshot_val=attrs.get("oneshot_val"),
            prune_eta=attrs.get("prune_eta", 3), prune_min_epoch=attrs.get("prune_min_epoch", 1),
            latency_runs=attrs.get("latency_runs", 10), latency_warmup=attrs.get("latency_warmup", 3),
            latency_table=attrs.get("latency_table"), **_latency_options(attrs), **limits)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def stored_deploy_img(attrs: Mapping[str, Any]) -> int | None:
    """A study's stored ``--deploy-img``, None when it is its ``--img`` (or predates the field)."""
    deploy = attrs.get("deploy_img")
    return None if deploy in (None, attrs.get("img")) else int(deploy)


def _latency_options(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``latency_backend`` / ``latency_threads`` of a stored study (a table brings its own)."""
    latency = attrs.get("latency") or {}
    if attrs.get("latency_table") or not latency:
        return {}
    return {"latency_backend": latency.get("backend") or "torch", "latency_threads": latency.get("threads") or 1}


def _first_difference(key: str, stored: Mapping[str, Any], mine: Mapping[str, Any]) -> tuple[str, Any, Any]:
    """``(dotted key, stored value, this run's value)`` of the first sub-field that differs."""
    for sub in sorted(set(stored) | set(mine)):
        a, b = stored.get(sub), mine.get(sub)
        if _norm(a) != _norm(b):
            if isinstance(a, dict) and isinstance(b, dict):
                return _first_difference(f"{key}.{sub}", a, b)
            return f"{key}.{sub}", a, b
    return key, stored, mine


def _uses_data(fidelity: str) -> bool:
    cls = FIDELITIES.get(fidelity)
    return bool(cls and cls.needs_data)


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in sorted(value.items())}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, str) else str(value)


def constraint_values(metrics: Mapping[str, float], limits: Mapping[str, float]) -> dict[str, float]:
    """``{metric: value}`` Optuna constraint values (``<= 0`` is feasible) in the user's units
    (ms, GFLOPs, millions of parameters), in the order of :data:`CONSTRAINTS`."""
    out = {}
    for _, (metric, factor) in CONSTRAINTS.items():
        if metric in limits:
            out[metric] = (float(metrics[metric]) - limits[metric]) * factor
    return out


def make_sampler(name: str, seed: int | None, population_size: int | None = None):
    """An Optuna sampler by name; one line naming the valid ones otherwise.

    ``nsga2``: NSGA-II (default for several objectives; the population is smaller than Optuna's
    default 50 so that short searches get past the random first generation). ``tpe``:
    multivariate TPE. ``random``: uniform random search.

    Constraints reach NSGA-II and TPE through the trials themselves: each trial records its
    constraint values with ``Trial.set_constraint`` (Optuna 5's replacement for the deprecated
    ``constraints_func`` sampler argument; both feed the same constrained-dominance rules).
    Random search ignores them while sampling; feasibility is still recorded per trial.
    """
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=population_size or 50, seed=seed)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
    raise SearchError(f"unknown sampler {name!r} (valid: {', '.join(SAMPLERS)})")


def population_size(trials: int) -> int:
    """NSGA-II population for a budget: a quarter of the trials, between 8 and 50."""
    return max(8, min(50, trials // 4))


__all__ = ["BUDGET_ATTR", "CONFIG_ATTR", "CONSTRAINTS", "DEFAULT_OBJECTIVES", "OBJECTIVES", "Objective",
           "REFERENCES_ATTR", "SAMPLERS", "STUDY_FIELDS", "SearchConfig", "check_image_size", "constraint_values",
           "make_sampler", "parse_objectives", "population_size", "stored_deploy_img"]
