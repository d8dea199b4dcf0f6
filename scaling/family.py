"""Build, measure and write a compound-scaled family of one base architecture.

:func:`run_scale` is the one function behind ``y7nas scale``: it resolves the base (preset,
genome YAML, flat yolov7 YAML via :mod:`nas.recognise`, or a searched trial), optionally
grid-searches the coefficients (:mod:`scaling.grid_search`), builds the members
(:func:`scaling.compound.scale_member`) for a φ list or for compute targets, measures them and
writes everything to one output folder only once all of it has been computed.

Measurement conventions (the ``family.csv`` columns; measured by :mod:`scaling.measure`):

``phi, depth, width, img``
    the compound exponent, the continuous multipliers α^φ and β^φ, and the realised input size
    (``base_img``·γ^φ to the nearest multiple of 32).
``params, gflops``
    the training form, as YOLOv7's ``Model(cfg)`` reports it (params after ``fuse()`` are a
    little lower). GFLOPs = 2 × multiply-adds / 1e9 (fvcore), at the member's own input size:
    counted once at :data:`PROBE_IMG` and multiplied by ``(img / PROBE_IMG)²``, which is exact for
    these fully convolutional detectors at multiples of their largest stride (every feature map
    side is ``img/stride``; tests/scaling/test_family.py checks it against a direct count).
``latency_ms``
    median wall-clock per image (batch 1) of the **deploy** form (``nas.fuse.fuse``), empty when
    latency is not measured (``latency_runs = 0``).
``gflops_ratio, ideal``
    GFLOPs relative to the φ = 0 member, and the ideal ratio ``(α·β²·γ²)^φ``.
"""
from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from nas.errors import NasError, ScalingError
from nas.genome import Genome

from .coefficients import MAX_PHI, Coefficients, parse_phi_list
from .compound import check_base_img, scale_member
from .grid_search import check_fidelity, check_proxy_options, grid_csv, grid_search
from .measure import PROBE_IMG, Measurement, Measurer, build_genome
from .targets import phi_for_target

__all__ = [
    "PROBE_IMG", "FAMILY_COLUMNS", "Measurement", "Measurer", "Member", "Family", "ScaleRequest",
    "ScaleResult", "resolve_base", "build_family", "phis_for_budget", "family_csv", "run_scale",
    "parse_targets", "phi_label",
]

FAMILY_COLUMNS = ("phi", "depth", "width", "img", "params", "gflops", "latency_ms",
                  "gflops_ratio", "ideal")
#: Largest φ a target search will try (the largest φ accepted anywhere).
PHI_CAP = MAX_PHI
#: Resolution of the φ a target search returns.
TARGET_TOL = 1e-2


# ------------------------------------------------------------------------------ the family

class Member(NamedTuple):
    phi: float
    depth: float        # α^φ
    width: float        # β^φ
    resolution: float   # γ^φ
    img: int
    genome: Genome
    params: int
    gflops: float
    latency_ms: float | None


@dataclass(frozen=True)
class Family:
    """A measured family; ``base`` is the φ = 0 member (also measured when φ = 0 is not listed)."""

    name: str
    coeffs: Coefficients
    base_img: int
    base: Member
    members: tuple[Member, ...]
    #: (metric, target, φ) for each requested budget, in the order asked.
    targets: tuple[tuple[str, float, float], ...] = ()

    def gflops_ratio(self, member: Member) -> float:
        return member.gflops / self.base.gflops

    def ideal(self, member: Member) -> float:
        return self.coeffs.flops_multiplier(member.phi)


def phi_label(phi: float) -> str:
    """φ as used in file names: ``0``, ``1``, ``1.375`` (at most 3 decimals)."""
    return f"{phi:.3f}".rstrip("0").rstrip(".")


def _member(genome: Genome, coeffs: Coefficients, phi: float, base_img: int,
            measure: Measurer) -> Member:
    scaled, img = scale_member(genome, coeffs, phi, base_img)
    d, w, r = coeffs.at(phi)
    m = measure(scaled, img)
    return Member(phi, d, w, r, img, scaled, m.params, m.gflops, m.latency_ms)


def build_family(name: str, genome: Genome, coeffs: Coefficients, phis: Sequence[float],
                 base_img: int = 640, measure: Measurer | None = None) -> Family:
    """Scale ``genome`` to each φ in ``phis`` (sorted, de-duplicated) and measure every member."""
    base_img = check_base_img(base_img)
    measure = measure or Measurer()
    if not phis:
        raise ScalingError("phi list is empty; give comma-separated values such as '0,1,2'")
    for phi in phis:
        coeffs.at(phi)  # validates (finite, >= 0)
    phis = sorted({float(p) for p in phis})
    base = _member(genome, coeffs, 0.0, base_img, measure)
    members = tuple(base if p == 0 else _member(genome, coeffs, p, base_img, measure)
                    for p in phis)
    return Family(name, coeffs, base_img, base, members)


def phis_for_budget(genome: Genome, coeffs: Coefficients, base_img: int, targets: Sequence[float],
                    metric: str, measure: Measurer, tol: float = TARGET_TOL) -> tuple[float, ...]:
    """For each target, the largest φ (to ``tol``, rounded down to 3 decimals) whose member's
    ``metric`` (``"gflops"`` or ``"latency"``, in GFLOPs / ms) is at most the target.

    Uses :func:`scaling.targets.phi_for_target` on ``evaluate(φ)`` = build the member, measure it.
    The bracket starts at the φ the ideal law predicts plus one and doubles (up to
    :data:`PHI_CAP`) while its upper end is still under budget. Raises :class:`ScalingError` when
    even φ = 0 is over a target, when even φ = :data:`PHI_CAP` is under it, or when the
    coefficients cannot grow the model.
    """
    if metric not in ("gflops", "latency"):
        raise ScalingError(f"unknown target metric {metric!r} (gflops or latency)")
    if metric == "latency" and not measure.latency_runs:
        raise ScalingError("--target-latency needs latency measurement (--latency-runs >= 1)")
    if coeffs.product <= 1 + 1e-9:
        raise ScalingError(f"coefficients {coeffs} do not grow the model (alpha*beta^2*gamma^2 = "
                           f"{coeffs.product:g}); targets need a product > 1")
    unit = "GFLOPs" if metric == "gflops" else "ms"

    def cost(phi: float) -> float:
        scaled, img = scale_member(genome, coeffs, phi, base_img)
        if metric == "gflops":
            return measure.static(scaled, img)[1]
        return measure.latency(scaled, img)

    c0 = cost(0.0)
    out = []
    for target in targets:
        if target < c0:
            raise ScalingError(f"target {target:g} {unit} is below the base model's {c0:.4g} {unit} "
                               f"at phi=0 ({base_img} px); use a smaller --img or base")
        ideal_phi = math.log(target / c0) / math.log(coeffs.product)
        if ideal_phi > 2 * PHI_CAP:  # the law itself puts it far out of range: build nothing
            raise ScalingError(f"target {target:g} {unit} is out of reach: the largest phi, "
                               f"{PHI_CAP:g}, grows the base's {c0:.4g} {unit} about "
                               f"{coeffs.flops_multiplier(PHI_CAP):.0f}x")
        phi_max = min(PHI_CAP, max(1.0, ideal_phi + 1.0))
        while True:
            phi = phi_for_target(cost, target, phi_max, tol)
            if phi is None:  # cannot happen after the check above unless latency is noisy
                raise ScalingError(f"no phi meets target {target:g} {unit}")
            if phi < phi_max or phi_max >= PHI_CAP:
                break
            phi_max = min(PHI_CAP, 2 * phi_max)
        if phi >= PHI_CAP:
            raise ScalingError(f"target {target:g} {unit} is out of reach: the largest phi, "
                               f"{PHI_CAP:g}, costs {cost(PHI_CAP):.4g} {unit}")
        out.append(math.floor(phi * 1000 + 1e-9) / 1000)
    return tuple(out)


def parse_targets(text: str, option: str) -> tuple[float, ...]:
    """``"5,10,20"`` → (5.0, 10.0, 20.0); :class:`ScalingError` naming ``option`` otherwise."""
    if not text or not text.strip():
        raise ScalingError(f"{option} is empty; give comma-separated budgets such as '5,10,20'")
    out = []
    for pos, raw in enumerate(text.split(","), start=1):
        item = raw.strip()
        try:
            value = float(item)
        except ValueError:
            raise ScalingError(f"{option} item {pos} {item!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise ScalingError(f"{option} item {pos} {item!r} must be a positive number")
        out.append(value)
    return tuple(out)


# ------------------------------------------------------------------------------ the base

def resolve_base(base: str | None, study: str | None = None, trial: int | None = None,
                 results_dir: str | Path = "results") -> tuple[str, Genome]:
    """(name, genome) of BASE or of ``--study NAME --trial N``; one :class:`NasError` otherwise.

    BASE is a preset name, a genome YAML or a flat yolov7 YAML (recognised with
    :func:`nas.recognise.recognise`). A study trial is read from
    ``<results_dir>/<study>/models/trial_<N>.genome.yaml``, written by the search.
    """
    if study is not None or trial is not None:
        if base is not None:
            raise ScalingError("give either BASE or --study/--trial, not both")
        if study is None or trial is None:
            raise ScalingError("--study and --trial go together")
        if not study.strip() or Path(study).name != study:
            raise ScalingError(f"unknown study {study!r}")
        folder = Path(results_dir) / study
        if not folder.is_dir():
            raise ScalingError(f"unknown study {study!r}: no folder {folder}")
        path = folder / "models" / f"trial_{trial}.genome.yaml"
        if not path.is_file():
            raise ScalingError(f"study {study!r} has no trial {trial}: {path} not found")
        from nas.cfg import read_model_text

        return f"{study}-trial{trial}", Genome.from_yaml(read_model_text(path), source=str(path))
    if base is None or not base.strip():
        raise ScalingError("give BASE (a preset, genome YAML or flat yolov7 YAML) "
                           "or --study NAME --trial N")
    from nas.sources import resolve_model

    source = resolve_model(base)
    name = source.name[: -len(".genome")] if source.name.endswith(".genome") else source.name
    if source.genome is not None:
        return name, source.genome
    from nas.recognise import recognise

    try:
        return name, recognise(source.cfg)
    except NasError as exc:
        raise ScalingError(f"cannot scale {base}: its layout is not recognised ({exc})") from None


# ------------------------------------------------------------------------------ outputs

def family_csv(family: Family) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FAMILY_COLUMNS)
    for m in family.members:
        writer.writerow([
            phi_label(m.phi), f"{m.depth:.4f}", f"{m.width:.4f}", m.img, m.params,
            f"{m.gflops:.4f}", "" if m.latency_ms is None else f"{m.latency_ms:.3f}",
            f"{family.gflops_ratio(m):.4f}", f"{family.ideal(m):.4f}",
        ])
    return buf.getvalue()


def _header(family: Family, m: Member) -> str:
    return (f"{family.name} compound-scaled by y7nas: phi={phi_label(m.phi)}, {family.coeffs}\n"
            f"depth x{m.depth:.4f}, width x{m.width:.4f}, train/test at img {m.img} "
            f"(base {family.base_img})\n"
            f"params {m.params:,}, {m.gflops:.2f} GFLOPs (2 x multiply-adds) at {m.img} px")


def family_files(family: Family, png: bytes | None) -> dict[str, bytes]:
    """File name → contents of everything :func:`run_scale` writes for ``family``."""
    from nas.expand import dump_yaml, expand

    files: dict[str, bytes] = {}
    for m in family.members:
        stem = f"{family.name}-phi{phi_label(m.phi)}"
        header = _header(family, m)
        files[f"{stem}.yaml"] = dump_yaml(expand(m.genome), header=header).encode()
        files[f"{stem}.genome.yaml"] = m.genome.to_yaml(header=header).encode()
    files["family.csv"] = family_csv(family).encode()
    if png is not None:
        files["family.png"] = png
    return files


def write_outputs(out_dir: Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` into ``out_dir`` all or nothing: into a temporary sibling folder first,
    then renamed into place (or, when ``out_dir`` exists, each file moved in with ``os.replace``).
    Other files already in ``out_dir`` are left alone."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the renamed folder gets normal rights
    except OSError as exc:
        raise ScalingError(f"cannot create output folder {out_dir} ({exc.strerror})") from None
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if not out_dir.exists():
            os.rename(tmp, out_dir)
        else:
            if not out_dir.is_dir():
                raise ScalingError(f"output path {out_dir} exists and is not a folder")
            for name in files:
                os.replace(tmp / name, out_dir / name)
    except OSError as exc:
        raise ScalingError(f"cannot write outputs to {out_dir} ({exc.strerror})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out_dir / name for name in files]


# ------------------------------------------------------------------------------ one call

@dataclass(frozen=True)
class ScaleRequest:
    """Everything ``y7nas scale`` asks for, as given on the command line (validated here)."""

    base: str | None = None
    phi: str | None = None                   # default "0,1,2,3" unless targets are given
    alpha: float = 1.2
    beta: float = 1.1
    gamma: float = 1.15
    img: int = 640
    out_dir: str | Path | None = None        # default <results_dir>/scale/<base>
    grid_search: bool = False
    fidelity: str = "zero-cost"
    data: str = "synthetic"
    proxy_epochs: int = 5                    # --fidelity proxy: epochs per grid point
    proxy_subset: int | None = 256           # --fidelity proxy: training images per grid point
    grid_step: float = 0.05
    target_gflops: str | None = None
    target_latency: str | None = None
    study: str | None = None
    trial: int | None = None
    results_dir: str | Path = "results"
    latency_runs: int = 10
    threads: int | None = None
    device: str = "cpu"                      # proxy training of the grid search; latency unless latency_device
    latency_device: str | None = None        # where members are timed (None: device)
    latency_backend: str = "torch"           # how members are timed (nas.latency.LATENCY_BACKENDS)
    latency_table: str | None = None         # or a latency table that predicts them
    plot: bool = True
    #: test hook: grid points to evaluate instead of coefficient_grid(step=grid_step).
    grid: tuple[Coefficients, ...] | None = field(default=None, compare=False)


class ScaleResult(NamedTuple):
    family: Family
    out_dir: Path
    files: list[Path]
    grid: object | None  # scaling.grid_search.GridResult when --grid-search


def _validate(req: ScaleRequest) -> tuple[Coefficients | None, tuple[float, ...] | None,
                                          tuple[str, tuple[float, ...]] | None]:
    """All checks that need no model: (coefficients, phis, (metric, targets))."""
    check_base_img(req.img)
    if req.target_gflops is not None and req.target_latency is not None:
        raise ScalingError("give --target-gflops or --target-latency, not both")
    targets = None
    if req.target_gflops is not None:
        targets = ("gflops", parse_targets(req.target_gflops, "--target-gflops"))
    elif req.target_latency is not None:
        targets = ("latency", parse_targets(req.target_latency, "--target-latency"))
        if not req.latency_runs:
            raise ScalingError("--target-latency needs --latency-runs >= 1")
    if targets is not None and req.phi is not None:
        raise ScalingError("give either --phi or a target (--target-gflops/--target-latency)")
    phis = None if targets is not None else parse_phi_list("0,1,2,3" if req.phi is None else req.phi)
    coeffs = None if req.grid_search else Coefficients(req.alpha, req.beta, req.gamma)
    check_proxy_options(req.proxy_epochs, req.proxy_subset)
    if req.grid_search:
        check_fidelity(req.fidelity)
    _measurer(req).check()  # validates, incl. the latency backend or table
    from nas.profile import resolve_device

    resolve_device(req.device)
    return coeffs, phis, targets


def _measurer(req: ScaleRequest) -> Measurer:
    return Measurer(req.latency_runs, threads=req.threads, device=req.latency_device or req.device,
                    backend=req.latency_backend, table=req.latency_table)


def run_scale(req: ScaleRequest, progress: Callable[[str], None] | None = None) -> ScaleResult:
    """Resolve, (grid-search,) scale, measure, plot and write; see the module docstring.

    Every bad input raises one :class:`NasError` before anything is written. With
    ``--grid-search`` the Optuna study (``grid_search.db``) is created in the output folder as
    soon as evaluation starts (so an interrupted search resumes); the family files appear only
    when all of them are ready.
    """
    say = progress or (lambda _msg: None)
    coeffs, phis, targets = _validate(req)
    name, genome = resolve_base(req.base, req.study, req.trial, req.results_dir)
    # a base that cannot be built is refused here, naming its file, not as a "scaled genome"
    build_genome(genome, source=req.base or f"study {req.study} trial {req.trial}")
    out_dir = Path(req.out_dir) if req.out_dir is not None else Path(req.results_dir) / "scale" / name
    if out_dir.exists() and not out_dir.is_dir():
        raise ScalingError(f"output path {out_dir} exists and is not a folder")
    measure = _measurer(req)

    grid = None
    extra: dict[str, bytes] = {}
    if req.grid_search:
        from .grid import coefficient_grid

        points = req.grid if req.grid is not None else tuple(coefficient_grid(step=req.grid_step))
        say(f"grid search over {len(points)} coefficient triples ({req.fidelity}) ...")
        grid = grid_search(genome, req.img, out_dir=out_dir, grid=points, fidelity=req.fidelity,
                           data=req.data, measure=measure, proxy_epochs=req.proxy_epochs,
                           proxy_subset=req.proxy_subset, threads=req.threads,
                           device=req.device, progress=say)
        coeffs = grid.best.coeffs
        extra["grid.csv"] = grid_csv(grid).encode()
        say(f"grid search picked {coeffs}")

    if targets is not None:
        metric, budgets = targets
        say(f"searching phi for {metric} targets {', '.join(f'{t:g}' for t in budgets)} ...")
        found = phis_for_budget(genome, coeffs, req.img, budgets, metric, measure)
        family = build_family(name, genome, coeffs, sorted(set(found)), req.img, measure)
        family = Family(family.name, family.coeffs, family.base_img, family.base, family.members,
                        tuple((metric, t, p) for t, p in zip(budgets, found)))
    else:
        say(f"measuring {len(phis)} members ...")
        family = build_family(name, genome, coeffs, phis, req.img, measure)

    png = None
    if req.plot:
        from .plot import draw_family, family_plot_data, preset_references

        png = draw_family(family_plot_data(family, preset_references(req.img, measure)))
    files = write_outputs(out_dir, {**family_files(family, png), **extra})
    return ScaleResult(family, out_dir, files, grid)
