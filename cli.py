"""y7nas command line: thin typer commands over the library.

Each command parses its options, calls one library function and prints the result. Every
:class:`~nas.errors.NasError` becomes one ``error: ...`` line on stderr and exit status 1.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nas.errors import NasError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Neural architecture search and compound scaling for YOLOv7-family detectors.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@contextlib.contextmanager
def user_errors():
    """Turn library errors into one clear line and a non-zero exit, never a traceback."""
    try:
        yield
    except NasError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file so no partial file is ever left."""
    if path.is_dir():
        raise NasError(f"{path}: is a folder; give a file name for the output")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise NasError(f"{path}: cannot write ({exc.strerror or exc})") from None


_DEPLOY_IMG_HELP = ("Size you deploy at (multiple of 32): params, GFLOPs, latency and so every budget are "
                    "measured there; candidates are still scored at --img (default: --img, said in one line).")
_LATENCY_BACKEND_HELP = ("How latency is timed: torch (eager) or onnxruntime (the ONNX export, CPU provider; "
                         "CUDA provider on a cuda device).")
_LATENCY_DEVICE_HELP = ("cpu, cuda or cuda:N: the device latency is timed on, your deployment's (default: "
                        "--device, where candidates are trained and scored).")
#: the options that choose finalists under a budget (y7nas finalists and y7nas run)
_BAND_HELP = ("With a budget: finalists from the candidates whose cost is LO,HI x the budget (then the "
              "costliest just below it); 'none': spread over the Pareto front.")
_ESTIMATOR_HELP = "How the band's candidates are ranked: score, params or score+params (mean rank)."
_BASELINE_HELP = ("Hand design trained beside the finalists with the same recipe: 'preset' (the space's, "
                  "compound-scaled down to the budget), a preset name, a YAML file, or 'none'.")
_LATENCY_TABLE_HELP = "Predict latency from this latency table instead of timing (its device/threads/versions)."
#: what every --data accepts: the embedded synthetic sets (nas.data.SYNTHETIC_SOURCES) or a data YAML
_DATA_HELP = "'synthetic', 'synthetic-large', 'synthetic-alt' or a YOLO data.yaml path"


# ----------------------------------------------------------------------------- presets
@app.command()
def presets() -> None:
    """List the preset architectures (genomes of yolov7-tiny, yolov7, yolov7x)."""
    from nas.build import build_model
    from nas.cfg import parse_cfg
    from nas.expand import expand
    from nas.presets import PRESETS

    table = Table("preset", "layers", "params", "genome hash")
    for name, genome in PRESETS.items():
        cfg = parse_cfg(expand(genome), source=name)
        model = build_model(cfg)
        table.add_row(name, str(len(cfg.rows)), f"{sum(p.numel() for p in model.parameters()):,}",
                      genome.genome_hash())
    out.print(table)


@app.command()
def preset(name: str = typer.Argument(..., help="Preset name (see `y7nas presets`)."),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write here instead of stdout."),
           genome: bool = typer.Option(False, "--genome", help="Write the genome YAML instead of the flat cfg.")
           ) -> None:
    """Write a preset as a flat yolov7-format YAML (or its genome with --genome)."""
    from nas.expand import dump_yaml, expand
    from nas.presets import get_preset

    with user_errors():
        g = get_preset(name)
        text = g.to_yaml() if genome else dump_yaml(expand(g), header=f"{name} (y7nas preset)")
        if output is None:
            sys.stdout.write(text)
        else:
            write_text_atomically(output, text)
            err.print(f"wrote {output}")


# ----------------------------------------------------------------------------- profile
@app.command()
def profile(model: str = typer.Argument(..., help="Flat yolov7 YAML, genome YAML or preset name."),
            img: int = typer.Option(640, "--img", help="Square input size in pixels."),
            batch: int = typer.Option(1, "--batch", help="Batch size for latency."),
            deploy: bool = typer.Option(False, "--deploy", help="Also fuse (Conv+BN, RepConv, implicit) and compare."),
            latency: bool = typer.Option(False, "--latency", help="Measure latency (deploy form with --deploy)."),
            runs: int = typer.Option(50, "--runs", help="Timed runs for latency."),
            warmup: int = typer.Option(10, "--warmup", help="Untimed warm-up runs."),
            threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
            device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
            layers: bool = typer.Option(False, "--layers", help="Per-layer params and multiply-adds."),
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
            latency_backend: str = typer.Option("torch", "--latency-backend", help=_LATENCY_BACKEND_HELP),
            latency_table: Optional[str] = typer.Option(None, "--latency-table", help=_LATENCY_TABLE_HELP),
            ) -> None:
    """Count params and FLOPs (GFLOPs = 2 x multiply-adds / 1e9), optionally fuse and time a model."""
    from nas.build import build_model
    from nas.latency import LatencyMeter
    from nas.profile import profile_report
    from nas.sources import resolve_model

    with user_errors():
        meter = LatencyMeter(latency_backend, device, threads, runs, warmup, latency_table)
        if latency:
            meter.check()
        source = resolve_model(model)
        net = build_model(source.cfg)
        report = profile_report(net, img=img, batch=batch, deploy=deploy, latency=latency, runs=runs,
                                warmup=warmup, threads=threads, device=device, layers=layers, meter=meter)
    if as_json:
        sys.stdout.write(json.dumps({"model": source.name, **report}) + "\n")
        return
    _print_profile(source.name, report)


def num(value: float) -> str:
    """A table cell: 3 significant digits (0.0064, 13.9, 422), thousands grouped from 1000."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _millions(value: float) -> str:
    return f"{num(value / 1e6)}M"


def _print_profile(name: str, report: dict) -> None:
    if "layers" in report:
        table = Table("#", "module", "params", "GFLOPs", title=f"{name}: per layer")
        for row in report["layers"]:
            table.add_row(str(row["index"]), row["module"], f"{row['params']:,}", num(2 * row['macs'] / 1e9))
        out.print(table)
    table = Table("metric", "value", title=f"{name} @ {report['img']}px")
    aux = report.get("aux_heads", False)
    form = " (training form, incl. auxiliary heads)" if aux else ""
    table.add_row(f"params{form}", f"{report['params']:,}")
    table.add_row(f"multiply-adds{form}", f"{report['macs']:,}")
    table.add_row(f"GFLOPs (2 x MACs){form}", num(report['gflops']))
    if aux:
        table.add_row("params (inference: main branch, no auxiliary heads)", f"{report['params_inference']:,}")
        table.add_row("GFLOPs (inference: main branch, no auxiliary heads)", num(report['gflops_inference']))
    if "params_deploy" in report:
        table.add_row("params (deploy" + (", fuse() keeps the auxiliary convs" if aux else "") + ")",
                      f"{report['params_deploy']:,}")
        table.add_row("GFLOPs (deploy" + (", inference: no auxiliary heads" if aux else "") + ")",
                      num(report['gflops_deploy']))
        table.add_row("max |fused - original|", f"{report['max_abs_diff']:.2e}")
    if "latency_ms" in report:
        lat = report["latency_ms"]
        table.add_row(f"latency median ({lat['form']}, {lat.get('backend', 'torch')}, {lat['device']}, "
                      f"batch {lat['batch']}, {lat['threads']} threads)", f"{num(lat['median'])} ms")
        if "p90" in lat:
            table.add_row(f"latency p90 ({lat['runs']} runs, {lat['warmup']} warm-up)", f"{num(lat['p90'])} ms")
        if "table" in lat:
            table.add_row("latency predicted by table", escape(lat["table"]))
    out.print(table)


# ----------------------------------------------------------------------------- onnx
@app.command()
def onnx(model: str = typer.Argument(..., help="Flat yolov7 YAML, genome YAML or preset name."),
         output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write."),
         img: int = typer.Option(640, "--img", help="Square input size in pixels."),
         batch: int = typer.Option(1, "--batch", help="Batch size of the exported input."),
         dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Symbolic batch dimension."),
         opset: int = typer.Option(17, "--opset", help="ONNX opset (11-21)."),
         weights: Optional[Path] = typer.Option(None, "--weights", help="State dict to export (e.g. "
                                                "results/NAME/chosen.pt, RUN_DIR/weights/last.pt; default: "
                                                "seeded random weights)."),
         ) -> None:
    """Export the deploy (fused) form to ONNX: decoded predictions (batch, boxes, 5 + nc), no NMS;
    checked in ONNX Runtime against torch before the file is written."""
    from nas.build import build_model
    from nas.evaluate import load_weights
    from nas.sources import resolve_model

    with user_errors():
        net = build_model(resolve_model(model).cfg)
        if weights is not None:
            load_weights(net, weights, model)
        _write_onnx(net.eval(), output, img, batch, dynamic_batch, opset)


def _write_onnx(net, path: Path, img: int, batch: int = 1, dynamic_batch: bool = False, opset: int = 17) -> None:
    from nas.latency import ONNX_RTOL, ONNX_TOLERANCE, write_onnx

    done = write_onnx(net, path, img=img, batch=batch, dynamic_batch=dynamic_batch, opset=opset)
    shape = "dynamic batch" if done.dynamic_batch else f"batch {done.batch}"
    out.print(f"wrote {escape(str(done.path))} (opset {done.opset}, {done.img} px, {shape}, "
              f"{done.bytes / 1e6:.1f} MB); ONNX Runtime vs torch max abs difference {done.max_abs_diff:.2e} "
              f"(allowed {ONNX_TOLERANCE:g} + {ONNX_RTOL:g}*|value|)", soft_wrap=True)


# ----------------------------------------------------------------------------- scale
@app.command()
def scale(base: Optional[str] = typer.Argument(None, help="Preset, genome YAML or flat yolov7 YAML "
                                                "(omit with --study/--trial)."),
          phi: Optional[str] = typer.Option(None, "--phi", help="Compound exponents (default 0,1,2,3)."),
          alpha: float = typer.Option(1.2, "--alpha", help="Depth base (>= 1)."),
          beta: float = typer.Option(1.1, "--beta", help="Width base (>= 1)."),
          gamma: float = typer.Option(1.15, "--gamma", help="Resolution base (>= 1)."),
          img: int = typer.Option(640, "--img", "--deploy-img", help="The base's deployment size (multiple of "
                                  "32): members run at img x gamma^phi; latency and GFLOPs are measured there."),
          output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                help="Output folder (default RESULTS/scale/BASE)."),
          grid_search: bool = typer.Option(False, "--grid-search", help="Grid-search alpha, beta, gamma at phi=1."),
          fidelity: str = typer.Option("zero-cost", "--fidelity", help="Grid-search score: zero-cost (proxy on one "
                                       "batch) or proxy (short training; val mAP@0.5:0.95 of each phi=1 member "
                                       "trained at its own input size)."),
          data: str = typer.Option("synthetic", "--data", help=_DATA_HELP + ": the grid-search score's data "
                                   "(zero-cost batch, proxy training and validation)."),
          proxy_epochs: int = typer.Option(5, "--proxy-epochs", help="Epochs per grid point (--fidelity proxy)."),
          proxy_subset: int = typer.Option(256, "--proxy-subset", help="Training images per grid point (--fidelity proxy)."),
          grid_step: float = typer.Option(0.05, "--grid-step", help="Grid spacing of alpha, beta, gamma."),
          target_gflops: Optional[str] = typer.Option(None, "--target-gflops", help="Budgets, e.g. 5,10,20."),
          target_latency: Optional[str] = typer.Option(None, "--target-latency", help="Budgets in ms."),
          study: Optional[str] = typer.Option(None, "--study", help="Scale a searched trial of this study."),
          trial: Optional[int] = typer.Option(None, "--trial", help="Trial number (with --study)."),
          results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Results root."),
          latency_runs: int = typer.Option(10, "--latency-runs", help="Timed runs per member (0: skip)."),
          threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (proxy training: default 1)."),
          device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (proxy training; latency too "
                                     "unless --latency-device)."),
          latency_device: Optional[str] = typer.Option(None, "--latency-device", help=_LATENCY_DEVICE_HELP),
          latency_backend: str = typer.Option("torch", "--latency-backend", help=_LATENCY_BACKEND_HELP),
          latency_table: Optional[str] = typer.Option(None, "--latency-table", help=_LATENCY_TABLE_HELP),
          ) -> None:
    """Compound-scale one architecture into a depth/width/resolution family of yolov7 YAMLs."""
    from scaling.family import ScaleRequest, run_scale

    request = ScaleRequest(base=base, phi=phi, alpha=alpha, beta=beta, gamma=gamma, img=img,
                           out_dir=output, grid_search=grid_search, fidelity=fidelity, data=data,
                           proxy_epochs=proxy_epochs, proxy_subset=proxy_subset,
                           grid_step=grid_step, target_gflops=target_gflops,
                           target_latency=target_latency, study=study, trial=trial,
                           results_dir=results_dir, latency_runs=latency_runs, threads=threads,
                           device=device, latency_device=latency_device, latency_backend=latency_backend,
                           latency_table=latency_table)
    with user_errors():
        result = run_scale(request, progress=err.print)
    _print_family(result.family)
    out.print(f"wrote {len(result.files)} files to {result.out_dir}")


def _print_family(fam) -> None:
    from scaling.family import phi_label

    table = Table("phi", "depth", "width", "img", "params", "GFLOPs", "ratio", "ideal", "latency ms",
                  title=f"{fam.name}: {fam.coeffs} (GFLOPs = 2 x multiply-adds; latency: deploy form)")
    for m in fam.members:
        table.add_row(phi_label(m.phi), f"{m.depth:.3f}", f"{m.width:.3f}", str(m.img), _millions(m.params),
                      num(m.gflops), f"{fam.gflops_ratio(m):.3f}", f"{fam.ideal(m):.3f}",
                      "-" if m.latency_ms is None else num(m.latency_ms))
    out.print(table)
    for metric, target, found in fam.targets:
        out.print(f"target {target:g} {'GFLOPs' if metric == 'gflops' else 'ms'}: phi={phi_label(found)}")


# ----------------------------------------------------------------------------- search
class _SearchProgress:
    """Rich progress bar (trials done/total, best so far, ETA) on a terminal; plain lines otherwise."""

    def __init__(self, console: Console):
        self.console = console
        self.live = console.is_terminal
        self._bar = None
        self._task = None

    def __call__(self, update) -> None:
        if not self.live:
            if update.last:
                self.console.print(f"[{update.done}/{update.total}] {update.last} | {update.best}",
                                   markup=False, soft_wrap=True)
            return
        if self._bar is None:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self._bar = Progress(TextColumn("search"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[best]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
            self._bar.start()
            self._task = self._bar.add_task("search", total=update.total, completed=update.done,
                                            best=update.best)
        if update.last:
            self._bar.console.print(update.last, markup=False, soft_wrap=True)
        self._bar.update(self._task, completed=update.done, total=update.total, best=update.best)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _print_front(summary) -> None:
    pruned = f" ({summary.pruned} stopped early)" if summary.pruned else ""
    out.print(f"study {summary.study}: {summary.complete + summary.pruned}/{summary.budget} trials evaluated{pruned}, "
              f"{summary.failed} failed; Pareto front of {', '.join(summary.objectives)}: {len(summary.front)} trial(s)",
              soft_wrap=True)
    if summary.pruning and summary.pruning.get("enabled"):
        p = summary.pruning
        out.print(f"pruning: {p['pruned']} of {p['trials']} trials stopped early ({p['pruned_before_training']} "
                  f"infeasible, not trained), {p['epochs_trained']} of {p['epochs_full']} epochs trained; saved "
                  f"~{p['saved_s'] / 60:.1f} min of ~{(p['spent_s'] + p['saved_s']) / 60:.1f} "
                  f"({100 * p['saved_fraction']:.0f}%, estimated)", soft_wrap=True)
    table = Table("trial", *summary.objectives, *[c for c in ("params", "gflops") if c not in summary.objectives],
                  "genome", title="Pareto front")
    for row in summary.front:
        cells = [str(row["number"])]
        for key in (*summary.objectives, *[c for c in ("params", "gflops") if c not in summary.objectives]):
            value = row.get(key, "")
            if key == "params" and isinstance(value, (int, float)):
                cells.append(_millions(value))
            elif isinstance(value, float):
                cells.append(num(value))
            else:
                cells.append(str(value))
        cells.append(str(row.get("genome_hash", "")))
        table.add_row(*cells)
    out.print(table)
    if summary.results_dir is not None:
        files = "trials.csv, pareto.csv, pareto.png, models/" + (", pruning.json" if summary.pruning else "")
        out.print(f"results: {summary.results_dir}/ ({files})", soft_wrap=True)


def _oneshot_img(img: Optional[int], supernet: Optional[str], default: int = 320) -> int:
    """--img as given, else the supernet's training size for a one-shot search, else ``default``."""
    if img is not None:
        return img
    if supernet:
        from nas.supernet import read_checkpoint

        return int(read_checkpoint(supernet)["meta"]["img"])
    return default


def _run_search_cli(cfg) -> None:
    """Resolve the space and classes, run the search with a progress display, print the front."""
    from nas.pipeline import prepare_search
    from nas.search import run_search

    cfg, space = prepare_search(cfg)
    note = cfg.cost_size_note()
    if note:
        err.print(note, markup=False, soft_wrap=True)
    progress = _SearchProgress(err)
    try:
        summary = run_search(cfg, space, progress=progress)
    finally:
        progress.close()
    _print_front(summary)
    _write_report_quietly(cfg.study, cfg.results_dir, cfg.storage)


def _write_report_quietly(study: str, results_dir: Path, storage: Optional[str] = None) -> None:
    """Write results/<study>/report.html after a search or finalists run; a failure is one warning
    line (the results themselves are already written)."""
    try:
        from nas.report import write_report

        path = write_report(study, results_dir, storage=storage)
    except Exception as exc:  # noqa: BLE001 - a report must never cost the results
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err.print(f"warning: report not written: {text}", markup=False, soft_wrap=True)
    else:
        out.print(f"report: {path}", soft_wrap=True)


@app.command()
def spaces() -> None:
    """List the search spaces with their dimensions and choices."""
    from search_spaces import SPACES

    for name, cls in SPACES.items():
        space = cls()
        table = Table(title=f"{name}: {cls.description}", title_justify="left")
        table.add_column("dimension", no_wrap=True)
        table.add_column("choices / range", no_wrap=True)
        table.add_column("when")
        table.add_column("what")
        for dim in space.dimensions():
            table.add_row(dim.name, dim.describe(), dim.condition or "always", dim.help)
        out.print(table)


@app.command()
def search(space: str = typer.Option(..., "--space", help="Search space (see `y7nas spaces`)."),
           trials: int = typer.Option(..., "--trials", help="Trials the study ends with (COMPLETE, or PRUNED by early stopping)."),
           study: str = typer.Option(..., "--study", help="Study name (also the results folder)."),
           results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Where results/<study>/ go."),
           storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL "
                                                 "(default sqlite:///<results-dir>/<study>/study.db; "
                                                 "postgresql+psycopg://..., journal:FILE)."),
           objectives: str = typer.Option("score,latency_ms", "--objectives",
                                          help="Comma list of score, params, gflops, latency_ms."),
           fidelity: str = typer.Option("zero-cost", "--fidelity", help="flops, zero-cost, proxy or oneshot."),
           sampler: Optional[str] = typer.Option(None, "--sampler", help="nsga2 (default for several "
                                                 "objectives), tpe (default for one) or random."),
           workers: int = typer.Option(1, "--workers", help="Worker processes on this machine."),
           seed: int = typer.Option(0, "--seed", help="Seed of the sampler and the proxies."),
           img: Optional[int] = typer.Option(None, "--img", help="Square input size (multiple of 32; default "
                                             "320, or the supernet's with --fidelity oneshot)."),
           data: str = typer.Option("synthetic", "--data", help=_DATA_HELP + " (zero-cost/proxy/oneshot)."),
           max_latency: Optional[float] = typer.Option(None, "--max-latency", help="Constraint: latency ms."),
           max_gflops: Optional[float] = typer.Option(None, "--max-gflops", help="Constraint: GFLOPs."),
           max_params: Optional[float] = typer.Option(None, "--max-params", help="Constraint: millions of params."),
           proxy_epochs: int = typer.Option(5, "--proxy-epochs", help="Epochs per candidate (fidelity proxy)."),
           proxy_subset: int = typer.Option(256, "--proxy-subset", help="Training images per candidate (fidelity proxy)."),
           deploy_img: Optional[int] = typer.Option(None, "--deploy-img", help=_DEPLOY_IMG_HELP),
           proxy_img: Optional[int] = typer.Option(None, "--proxy-img", help="Training size of the proxy (default --img; "
                                                   "latency and GFLOPs are at --deploy-img, else --img)."),
           supernet: Optional[str] = typer.Option(None, "--supernet", help="Trained supernet file "
                                                  "(fidelity oneshot; from `y7nas supernet train`)."),
           oneshot_calib: int = typer.Option(64, "--oneshot-calib", help="Training images that re-estimate "
                                             "BatchNorm per candidate (fidelity oneshot)."),
           oneshot_val: Optional[int] = typer.Option(None, "--oneshot-val", help="Val images per candidate "
                                                     "(fidelity oneshot; default all)."),
           prune: bool = typer.Option(True, "--prune/--no-prune", help="Stop proxy trials early that cheaper-or-equal "
                                      "peers out-learn, and infeasible ones before training (fidelity proxy)."),
           prune_eta: int = typer.Option(3, "--prune-eta", help="Pruning: checks at epochs min·eta^k; stop when "
                                         "ceil(peers/eta) peers beat a trial."),
           prune_min_epoch: int = typer.Option(1, "--prune-min-epoch", help="Pruning: first epoch checked."),
           threads: Optional[int] = typer.Option(None, "--threads", help="Total torch CPU threads, split among workers (default 1 each)."),
           device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (scoring; latency too "
                                      "unless --latency-device)."),
           latency_device: Optional[str] = typer.Option(None, "--latency-device", help=_LATENCY_DEVICE_HELP
                                                        + " Recorded on the study."),
           latency_backend: str = typer.Option("torch", "--latency-backend", help=_LATENCY_BACKEND_HELP),
           latency_threads: int = typer.Option(1, "--latency-threads", help="Threads latency is timed with "
                                               "(recorded on the study; --threads is for scoring)."),
           latency_table: Optional[str] = typer.Option(None, "--latency-table", help=_LATENCY_TABLE_HELP),
           ) -> None:
    """Multi-objective architecture search (resumable: re-run the same command to continue)."""
    from nas.search import SearchConfig

    with user_errors():
        cfg = SearchConfig(study=study, space=space, trials=trials, objectives=objectives, fidelity=fidelity,
                           sampler=sampler, workers=workers, seed=seed,
                           img=_oneshot_img(img, supernet if fidelity == "oneshot" else None), data=data,
                           deploy_img=deploy_img, max_latency=max_latency, max_gflops=max_gflops, max_params=max_params,
                           results_dir=results_dir, storage=storage, threads=threads, device=device,
                           proxy_epochs=proxy_epochs, proxy_subset=proxy_subset, proxy_img=proxy_img,
                           supernet=supernet, oneshot_calib=oneshot_calib, oneshot_val=oneshot_val,
                           prune=prune, prune_eta=prune_eta, prune_min_epoch=prune_min_epoch,
                           latency_backend=latency_backend, latency_threads=latency_threads,
                           latency_table=latency_table, latency_device=latency_device)
        _run_search_cli(cfg)


@app.command()
def worker(study: str = typer.Option(..., "--study", help="Name of an existing study."),
           storage: str = typer.Option(..., "--storage", help="Its Optuna storage URL."),
           threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
           device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or cuda:N: where this worker "
                                                "scores (default: the study's latency device)."),
           latency_backend: Optional[str] = typer.Option(None, "--latency-backend", help="Must be the "
                                                         "study's (default: the study's)."),
           latency_threads: Optional[int] = typer.Option(None, "--latency-threads", help="Must be the "
                                                         "study's (default: the study's)."),
           latency_device: Optional[str] = typer.Option(None, "--latency-device", help="Must be the "
                                                        "study's (default: the study's)."),
           latency_table: Optional[str] = typer.Option(None, "--latency-table", help="The study's latency "
                                                       "table on this machine (default: its recorded path)."),
           ) -> None:
    """Join a running study from this machine (space, objectives etc. come from the study)."""
    from nas.pipeline import search_space
    from nas.search import get_fidelity, load_study_config, run_worker

    with user_errors():
        cfg = load_study_config(study, storage, threads=threads, device=device, latency_backend=latency_backend,
                                latency_threads=latency_threads, latency_table=latency_table,
                                latency_device=latency_device)
        get_fidelity(cfg.fidelity)().check_available()
        space = search_space(cfg)
        progress = _SearchProgress(err)
        try:
            run_worker(cfg, space, progress=progress, threads=threads)
        finally:
            progress.close()
        err.print(f"study {study} has its trials; run `y7nas pareto --study {study} --storage ...` for results")


@app.command()
def pareto(study: str = typer.Option(..., "--study", help="Study name."),
           results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Parent of <study>/."),
           storage: Optional[str] = typer.Option(None, "--storage", help="Storage URL (default: the "
                                                 "study's SQLite file under --results-dir)."),
           ) -> None:
    """Regenerate trials.csv, pareto.csv, pareto.png and models/ from the study storage."""
    from nas.search import write_study_results

    with user_errors():
        summary = write_study_results(study, results_dir, storage)
    _print_front(summary)


@app.command()
def export(study: str = typer.Option(..., "--study", help="Study name."),
           trial: int = typer.Option(..., "--trial", help="Trial number."),
           results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Parent of <study>/."),
           storage: Optional[str] = typer.Option(None, "--storage", help="Storage URL (default: the "
                                                 "study's SQLite file under --results-dir)."),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="Flat YAML to write "
                                                 "(default <results-dir>/<study>/models/trial_<N>.yaml)."),
           to_onnx: bool = typer.Option(False, "--onnx", help="Also write the deploy form as ONNX next to the YAMLs."),
           img: Optional[int] = typer.Option(None, "--img", help="ONNX input size (default: the study's "
                                             "--deploy-img, else its --img)."),
           ) -> None:
    """Write one trial's architecture as a flat yolov7 YAML plus its genome YAML (and ONNX)."""
    from nas.search import export_trial

    with user_errors():
        flat, genome = export_trial(study, trial, results_dir, storage, output)
        err.print(f"wrote {flat} and {genome}")
        if to_onnx:
            from nas.build import build_model
            from nas.search import open_results_study
            from nas.sources import resolve_model

            size = img or open_results_study(study, results_dir, storage)[0].cost_img
            _write_onnx(build_model(resolve_model(str(flat)).cfg), flat.with_suffix(".onnx"), size)


# ----------------------------------------------------------------------------- train / val / data
@app.command()
def report(study: str = typer.Option(..., "--study", help="Study name."),
           results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Parent of <study>/."),
           storage: Optional[str] = typer.Option(None, "--storage", help="Storage URL (default: the "
                                                 "study's SQLite file under --results-dir)."),
           output: Optional[Path] = typer.Option(None, "-o", "--output", help="HTML file to write "
                                                 "(default <results-dir>/<study>/report.html)."),
           ) -> None:
    """Write the study's self-contained HTML report (settings, interactive Pareto chart, sortable
    trials, finalists, pruning, family; opens without a network)."""
    from nas.report import write_report

    with user_errors():
        path = write_report(study, results_dir, out=output, storage=storage)
    out.print(f"report: {path} ({path.stat().st_size / 1024:.0f} KiB)", soft_wrap=True)


def _train_progress(as_json: bool, epochs: int):
    """(on_batch, on_epoch, context) for `train`: a rich bar on a terminal, plain lines otherwise."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    lines = err if as_json else out

    def line(s) -> str:
        maps = "" if s.map50 is None else f"  mAP@0.5 {s.map50:.4f}  mAP@0.5:0.95 {s.map50_95:.4f}"
        return (f"epoch {s.epoch}/{epochs}  loss {s.loss:.4f} (box {s.box_loss:.4f} obj "
                f"{s.obj_loss:.4f} cls {s.cls_loss:.4f}){maps}  {s.train_seconds + s.val_seconds:.1f}s")

    if not lines.is_terminal:
        return None, lambda s: lines.print(line(s), soft_wrap=True), contextlib.nullcontext()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=lines, transient=False)
    task = progress.add_task("epoch 1", total=None, info="")

    def on_batch(epoch: int, i: int, n: int, items) -> None:
        progress.update(task, description=f"epoch {epoch}/{epochs}", completed=i, total=n,
                        info=f"loss {float(items[3]):.4f}")

    def on_epoch(s) -> None:
        progress.console.print(line(s))
    return on_batch, on_epoch, progress


def _inherited(path: Path, source, device: str):
    """MODEL as a network holding the weights it inherits from the supernet in ``path``, or
    loaded from ``path`` when it is MODEL's own state dict (e.g. results/NAME/chosen.pt)."""
    from nas.recognise import recognise
    from nas.supernet import SupernetError, inherited_model, read_checkpoint
    from search_spaces import get_space

    try:
        meta = read_checkpoint(path)["meta"]
    except SupernetError:       # not a supernet file: MODEL's own weights (load_weights says what is wrong)
        from nas.build import build_model
        from nas.evaluate import load_weights

        return load_weights(build_model(source.cfg), path, source.name)
    genome = source.genome or recognise(source.cfg)
    space = get_space(meta["space"], nc=meta["nc"])
    return inherited_model(path, genome, space, device=device)


@app.command("train")
def train_cmd(model: str = typer.Argument(..., help="Flat yolov7 YAML, genome YAML or preset name."),
              data: str = typer.Option(..., "--data", help=_DATA_HELP + " (YOLOv5/v7 style)."),
              epochs: int = typer.Option(30, "--epochs", help="Training epochs."),
              img: int = typer.Option(256, "--img", help="Square input size (multiple of 32)."),
              batch: int = typer.Option(16, "--batch", help="Batch size."),
              seed: int = typer.Option(0, "--seed", help="Seed of initialisation, sampling and augmentation."),
              output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                    help="Run folder (default results/train/<model>); "
                                                         "an existing non-empty one becomes <name>2, <name>3, ..."),
              exist_ok: bool = typer.Option(False, "--exist-ok", help="Reuse the run folder even if not empty."),
              optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adamw."),
              lr: Optional[float] = typer.Option(None, "--lr", help="Initial learning rate (default 0.01 sgd, 0.001 adamw)."),
              workers: int = typer.Option(0, "--workers", help="Data loader worker processes."),
              device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
              threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
              init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from these weights: MODEL's "
                                                       "own state dict (e.g. results/NAME/chosen.pt) or the ones it "
                                                       "inherits from a supernet (`y7nas supernet train`)."),
              as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
              ) -> None:
    """Train a detector (SimOTA loss, EMA, warm-up + cosine): RUN_DIR/weights/last.pt, model.yaml, results.csv."""
    from nas.sources import resolve_model
    from nas.train import TrainConfig, train, unique_run_dir

    with user_errors():
        source = resolve_model(model)
        config = TrainConfig(epochs=epochs, img=img, batch=batch, seed=seed, optimizer=optimizer,
                             lr=lr, workers=workers, device=device, threads=threads)
        run_dir = output or Path("results") / "train" / source.name
        run_dir = run_dir if exist_ok else unique_run_dir(run_dir)
        on_batch, on_epoch, ctx = _train_progress(as_json, epochs)
        (err if as_json else out).print(f"training {source.name} on {data} -> {run_dir}")
        start = _inherited(init_from, source, device) if init_from else source.cfg
        with ctx:
            result = train(start, data, config, run_dir=run_dir, on_batch=on_batch, on_epoch=on_epoch)
    summary = {"model": source.name, "run_dir": str(run_dir), "weights": str(run_dir / "weights" / "last.pt"),
               "map50": result.map50, "map50_95": result.map50_95, "epochs": len(result.epochs),
               "seconds": round(result.seconds, 3), "images_per_second": round(result.images_per_second, 2)}
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    out.print(f"mAP@0.5 {result.map50:.4f}  mAP@0.5:0.95 {result.map50_95:.4f}  "
              f"{result.seconds:.1f}s  {result.images_per_second:.1f} img/s")
    out.print(f"weights: {summary['weights']}")


@app.command("val")
def val_cmd(model: str = typer.Argument(..., help="Flat yolov7 YAML (e.g. RUN_DIR/model.yaml), genome YAML or preset."),
            weights: Path = typer.Option(..., "--weights", help="State dict from `y7nas train` (RUN_DIR/weights/last.pt)."),
            data: str = typer.Option(..., "--data", help=_DATA_HELP + "; its val split is scored."),
            img: int = typer.Option(256, "--img", help="Square input size (multiple of 32)."),
            batch: int = typer.Option(16, "--batch", help="Batch size."),
            conf: float = typer.Option(0.001, "--conf", help="Objectness/score threshold."),
            iou: float = typer.Option(0.65, "--iou", help="Class-aware NMS IoU threshold."),
            save_json: Optional[Path] = typer.Option(None, "--save-json",
                                                     help="Write DIR/predictions.json and DIR/annotations.json (COCO)."),
            workers: int = typer.Option(0, "--workers", help="Data loader worker processes."),
            device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
            as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
            ) -> None:
    """COCO mAP@0.5 and mAP@0.5:0.95 (pycocotools' rules) of trained weights on the val split."""
    import torch

    from nas.build import build_model
    from nas.data import load_data_config, scan_split
    from nas.evaluate import evaluate, load_weights
    from nas.profile import resolve_device
    from nas.sources import resolve_model
    from nas.train import with_nc

    with user_errors():
        if img < 32 or img % 32:
            raise NasError(f"img must be a multiple of 32 (≥ 32), got {img}")
        source = resolve_model(model)
        data_cfg = load_data_config(data)
        split = scan_split(data_cfg, "val")
        net = load_weights(build_model(with_nc(source.cfg, data_cfg.nc)), weights, model)
        dev = resolve_device(device)
        net.to(dev)
        with torch.no_grad():
            result = evaluate(net, split, img=img, batch=batch, conf=conf, iou=iou, workers=workers, device=dev)
        paths = result.save_json(save_json) if save_json is not None else None
    summary = {"model": source.name, "weights": str(weights), "images": result.images,
               "map50": result.map50, "map50_95": result.map50_95, "seconds": round(result.seconds, 3)}
    if paths:
        summary.update(predictions=paths[0], annotations=paths[1])
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    out.print(f"{source.name}: {result.images} images  mAP@0.5 {result.map50:.4f}  "
              f"mAP@0.5:0.95 {result.map50_95:.4f}  ({result.seconds:.1f}s)")
    if paths:
        out.print(f"wrote {paths[0]} and {paths[1]}")


data_app = typer.Typer(no_args_is_help=True, help="Datasets: generate the synthetic shapes set.")
app.add_typer(data_app, name="data")


@data_app.command("synth")
def data_synth_cmd(output: Path = typer.Option(..., "-o", "--output", help="Folder to write the dataset into."),
                   n_train: int = typer.Option(512, "--n-train", help="Training images."),
                   n_val: int = typer.Option(128, "--n-val", help="Validation images."),
                   img: int = typer.Option(256, "--img", help="Image side in pixels."),
                   seed: int = typer.Option(0, "--seed", help="Generator seed (same seed, same bytes)."),
                   ) -> None:
    """Write the synthetic shapes dataset (YOLO format) and print its data.yaml."""
    from nas.data import generate_synthetic

    with user_errors():
        path = generate_synthetic(output, n_train=n_train, n_val=n_val, img=img, seed=seed)
    out.print(f"{path}  ({n_train} train / {n_val} val images at {img} px)")


# ----------------------------------------------------------------------------- finalists
def _print_finalists(result) -> None:
    from nas.search import hand_design_verdict

    score_label = f"{result.fidelity}\nscore" if result.fidelity != "flops" else "score"
    objectives = list(result.objectives)
    extra = [c for c in ("params",) if c not in objectives]
    labels = {"score": score_label, "latency_ms": "latency\nms", "gflops": "GFLOPs", "params": "params"}
    settings = result.settings
    how = "fine-tuned from inherited weights" if settings.get("init_from") else "proxy-trained"
    choice = settings.get("choice") or {"by": "front"}
    if choice["by"] == "band":
        lo, hi = choice["band"]
        where = (f"the {choice['budget']['metric']} band {lo:g}-{hi:g} x {num(choice['budget']['limit'])} "
                 f"({choice['in_band']} in it), best by {choice['estimator']}")
    else:
        where = f"a {result.front_size}-trial front"
    table = Table("finalist", *[labels.get(o, o) for o in objectives], *extra, "init", "mAP\n@0.5",
                  "mAP\n@0.5:0.95", "train\ns", "on mAP\nfront",
                  title=f"study {result.study}: {len(result.searched)} finalist(s) from {where}"
                        f"{' and the hand design' if result.baseline else ''}; {how} {settings['epochs']} "
                        f"epoch(s) at {settings['img']} px on {settings['subset'] or 'all'} images")
    for row in result.rows:
        cells = [row.get("name") or f"trial {row['number']}"]
        if row.get("role") == "baseline":
            cells[0] += " (hand design)"
        for key in (*objectives, *extra):
            value = row.get(key)
            if key == "params" and isinstance(value, (int, float)):
                cells.append(_millions(value))
            elif isinstance(value, float):
                cells.append(num(value))
            else:
                cells.append("" if value is None else str(value))
        cells.append(row.get("init", ""))
        if row["fail_reason"]:
            cells += ["failed", "failed", "-", "-"]
        else:
            cells += [f"{row['map50']:.4f}", f"{row['map50_95']:.4f}", f"{row['train_s']:.1f}",
                      "yes" if row["on_map_front"] else "no"]
        table.add_row(*cells)
    out.print(table)
    for row in result.rows:
        if row["fail_reason"]:
            out.print(f"{row.get('name') or 'trial ' + str(row['number'])} failed: {row['fail_reason']}",
                      markup=False, soft_wrap=True)
    verdict = hand_design_verdict(result)
    if verdict:
        out.print(verdict, markup=False, soft_wrap=True)
    out.print(f"on mAP front: non-dominated on ({', '.join(result.map_objectives)}) among the finalists",
              soft_wrap=True)
    out.print(f"wrote {result.csv_path} (and {result.json_path.name})", soft_wrap=True)


def _run_finalists_cli(study: str, results_dir: Path, baseline: str = "preset", band: str = "0.85,1.0",
                       **options) -> None:
    from nas.pipeline import search_space, study_baseline
    from nas.search import check_finalist_options, get_estimator, open_results_study, parse_band, train_finalists

    say = lambda line: err.print(line, markup=False, soft_wrap=True)     # noqa: E731
    check_finalist_options(**{k: options.get(k) for k in ("top", "epochs", "img", "subset", "threads")})
    band_fractions = None if band.strip().lower() == "none" else parse_band(band)
    get_estimator(options.get("estimator", "score"))
    cfg, _s, _stored = open_results_study(study, Path(results_dir), options.get("storage"))
    supernet = options.get("supernet") or (cfg.supernet if cfg.fidelity == "oneshot" else None)
    cfg = cfg.replace(supernet=supernet)
    space = search_space(cfg) if supernet else None
    hand = None
    if baseline != "none":
        try:
            space = space or search_space(cfg)
        except NasError as exc:
            if baseline != "preset":
                raise
            say(f"warning: no hand design beside the finalists: {exc}")
        else:
            hand = study_baseline(baseline, cfg, space, say)
    result = train_finalists(study, results_dir, progress=say, space=space, band=band_fractions,
                             baseline=hand[1] if hand else None, baseline_name=hand[0] if hand else "baseline",
                             baseline_spec=baseline, **options)
    _print_finalists(result)
    _write_report_quietly(study, Path(results_dir), options.get("storage"))


@app.command()
def finalists(study: str = typer.Option(..., "--study", help="Study name."),
              results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Parent of <study>/."),
              storage: Optional[str] = typer.Option(None, "--storage", help="Storage URL (default: the "
                                                    "study's SQLite file under --results-dir)."),
              top: int = typer.Option(4, "--top", help="Finalists: the whole front if it is this small, "
                                      "else this many spread along its first objective."),
              epochs: int = typer.Option(5, "--epochs", help="Proxy-training epochs per finalist."),
              img: Optional[int] = typer.Option(None, "--img", help="Training size (default: the study's)."),
              subset: int = typer.Option(256, "--subset", help="Training images per finalist."),
              data: Optional[str] = typer.Option(None, "--data", help=_DATA_HELP + " "
                                                 "(default: the study's)."),
              seed: Optional[int] = typer.Option(None, "--seed", help="Training seed (default: the study's)."),
              threads: int = typer.Option(1, "--threads", help="torch CPU threads."),
              device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
              supernet: Optional[str] = typer.Option(None, "--supernet", help="Fine-tune each finalist from "
                                                     "its inherited weights (default for a one-shot study: "
                                                     "its supernet)."),
              lr: Optional[float] = typer.Option(None, "--lr", help="Training rate (default: the proxy's "
                                                 "0.01; 0.001 when fine-tuning)."),
              band: str = typer.Option("0.85,1.0", "--band", help=_BAND_HELP),
              estimator: str = typer.Option("score", "--estimator", help=_ESTIMATOR_HELP),
              baseline: str = typer.Option("preset", "--baseline", help=_BASELINE_HELP),
              ) -> None:
    """Train the finalists of a search (with a budget: the best of the band just below it; else
    spread over the Pareto front) and the hand design beside them, from scratch or fine-tuned from
    a supernet's inherited weights: mAP next to the search score."""
    with user_errors():
        _run_finalists_cli(study, results_dir, storage=storage, top=top, epochs=epochs, img=img,
                           subset=subset, data=data, seed=seed, threads=threads, device=device,
                           supernet=supernet, lr=lr, band=band, estimator=estimator, baseline=baseline)


# ----------------------------------------------------------------------------- run
def _run_hooks(as_json: bool):
    """RunHooks that print like the single commands (stderr when --json owns stdout)."""
    from nas.pipeline import RunHooks

    lines = err if as_json else out
    return RunHooks(line=lambda text: lines.print(text, markup=False, soft_wrap=True),
                    supernet_progress=lambda epochs: _supernet_progress(as_json, epochs),
                    search_progress=lambda: _SearchProgress(err),
                    front=(lambda summary: None) if as_json else _print_front,
                    finalists=(lambda result: None) if as_json else _print_finalists,
                    family=(lambda family: None) if as_json else _print_family)


@app.command()
def run(space: str = typer.Option(..., "--space", help="Search space (see `y7nas spaces`)."),
        data: str = typer.Option(..., "--data", help=_DATA_HELP + " (`y7nas demo`: synthetic-large)."),
        study: str = typer.Option(..., "--study", help="Run name (the folder results/<study>/)."),
        results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Parent of <study>/."),
        img: Optional[int] = typer.Option(None, "--img", help="Size the supernet and candidates are trained "
                                          "and scored at (default 160 one-shot, else 320)."),
        deploy_img: Optional[int] = typer.Option(None, "--deploy-img", help=_DEPLOY_IMG_HELP),
        max_latency: Optional[float] = typer.Option(None, "--max-latency", help="Budget: deploy latency ms."),
        max_gflops: Optional[float] = typer.Option(None, "--max-gflops", help="Budget: GFLOPs."),
        max_params: Optional[float] = typer.Option(None, "--max-params", help="Budget: millions of params."),
        objectives: str = typer.Option("score,latency_ms", "--objectives", help="Search objectives."),
        fidelity: str = typer.Option("oneshot", "--fidelity", help="oneshot, zero-cost or proxy."),
        trials: int = typer.Option(100, "--trials", help="Candidates searched."),
        finalists: int = typer.Option(2, "--finalists", help="Searched architectures trained (fine-tuned "
                                      "one-shot): the band's best, or spread over the front."),
        finalist_epochs: int = typer.Option(5, "--finalist-epochs", help="Training epochs per finalist."),
        band: str = typer.Option("0.85,1.0", "--band", help=_BAND_HELP + " The search samples on until "
                                 "the band holds them."),
        estimator: str = typer.Option("score", "--estimator", help=_ESTIMATOR_HELP),
        baseline: str = typer.Option("preset", "--baseline", help=_BASELINE_HELP),
        family_targets: str = typer.Option("1,2,4", "--family-targets", help="Family members at these multiples "
                                           "of the budget (of the chosen model's GFLOPs without a latency/GFLOPs budget)."),
        supernet_epochs: int = typer.Option(30, "--supernet-epochs", help="Supernet training epochs (one-shot)."),
        activation: str = typer.Option("silu", "--activation", help="The supernet's activation (one-shot)."),
        random_subnets: int = typer.Option(2, "--random-subnets", help="Random sub-networks per supernet step "
                                           "besides the largest and smallest (one-shot)."),
        random_from: str = typer.Option("space", "--random-from", help="Where those random sub-networks come "
                                        "from: 'space' (the whole space) or 'band' (with a budget: architectures "
                                        "of the band the finalists come from) (one-shot)."),
        latency_backend: str = typer.Option("torch", "--latency-backend", help="torch or onnxruntime."),
        latency_threads: int = typer.Option(1, "--latency-threads", help="Threads latency is timed with."),
        latency_table: Optional[str] = typer.Option(None, "--latency-table", help=_LATENCY_TABLE_HELP),
        latency_device: Optional[str] = typer.Option(None, "--latency-device", help=_LATENCY_DEVICE_HELP),
        seed: int = typer.Option(0, "--seed", help="Seed of every stage."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (supernet, scoring, finalists; "
                                   "latency too unless --latency-device)."),
        workers: int = typer.Option(1, "--workers", help="Search worker processes on this machine."),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
        onnx_export: bool = typer.Option(False, "--onnx", help="Also export the chosen model with its weights "
                                         "to results/<study>/chosen.onnx at --deploy-img (else --img)."),
        as_json: bool = typer.Option(False, "--json", help="Print the paths of everything written as JSON."),
        ) -> None:
    """One command from (data, budget) to a report: supernet (one-shot), search, finalists,
    compound-scaled family of the best finalist within the budget, HTML report. Re-running the
    same command continues where it stopped."""
    import json
    import time

    from nas.pipeline import RunConfig, run_pipeline
    from nas.search._objectives import parse_objectives
    from scaling.family import parse_targets

    with user_errors():
        cfg = RunConfig(study=study, space=space, data=data, results_dir=results_dir, img=img,
                        deploy_img=deploy_img, max_latency=max_latency, max_gflops=max_gflops, max_params=max_params,
                        objectives=parse_objectives(objectives), fidelity=fidelity, trials=trials,
                        finalists=finalists, finalist_epochs=finalist_epochs,
                        band=None if band.strip().lower() == "none" else band, estimator=estimator,
                        baseline=baseline, family_targets=parse_targets(family_targets, "--family-targets"),
                        supernet_epochs=supernet_epochs,
                        activation=activation, random_subnets=random_subnets, random_from=random_from,
                        latency_backend=latency_backend, latency_threads=latency_threads,
                        latency_table=latency_table, latency_device=latency_device, seed=seed, device=device,
                        workers=workers, threads=threads,
                        onnx=onnx_export)
        started = time.perf_counter()
        stages = run_pipeline(cfg, _run_hooks(as_json))
        if as_json:
            print(json.dumps({"study": study, "seconds": round(time.perf_counter() - started, 1),
                              "stages": stages}, indent=2))
        else:
            chosen = stages.get("family", {}).get("outputs", {}).get("chosen") or {}
            taken = " + ".join(Path(chosen[k]).name for k in ("yaml", "weights", "onnx") if k in chosen)
            out.print(f"run {study} done; chosen model: {taken or 'none'} in {cfg.study_dir}; report: "
                      f"{stages['report']['outputs']['report']}", soft_wrap=True)


# ----------------------------------------------------------------------------- demo
#: make demo's settings: `y7nas run` on a CPU-sized space, the learnable synthetic set, 64 px
DEMO = dict(study="demo", space="yolov7-tiny-cpu", data="synthetic-large", img=64, activation="relu",
            supernet_epochs=15, random_subnets=1, trials=100, finalists=2, finalist_epochs=5,
            max_gflops=0.02, threads=2)


@app.command()
def demo() -> None:
    """The main job on the embedded defaults: `y7nas run` on the learnable synthetic set: train the
    supernet of a CPU-sized yolov7-tiny space, search 100 candidates one-shot (score vs latency)
    under a GFLOPs budget, fine-tune two finalists from their inherited weights, scale the best
    into a family and write the HTML report. Re-running continues (or shows) results/demo/."""
    import time

    from nas.pipeline import RunConfig, run_pipeline
    from nas.report import run_command

    with user_errors():
        started = time.perf_counter()
        cfg = RunConfig(**DEMO)
        out.print(f"demo: {run_command(cfg.study, cfg.settings())} --threads {cfg.threads}", soft_wrap=True)
        stages = run_pipeline(cfg, _run_hooks(False))
        out.print(f"demo done in {time.perf_counter() - started:.0f} s; report: "
                  f"{stages['report']['outputs']['report']}", soft_wrap=True)


# ----------------------------------------------------------------------------- supernet
supernet_app = typer.Typer(no_args_is_help=True, help="One-shot NAS: the weight-sharing supernet of a "
                           "search space (docs/SUPERNET.md).")
app.add_typer(supernet_app, name="supernet")


def _supernet_progress(as_json: bool, epochs: int):
    """(on_step, on_epoch, context): a rich bar on a terminal, one line per epoch otherwise."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    lines = err if as_json else out

    def line(s) -> str:
        return f"epoch {s.epoch}/{epochs}  loss {s.loss:.4f}  lr {s.lr:.5f}  {s.seconds:.1f}s"

    if not lines.is_terminal:
        return None, lambda s: lines.print(line(s), soft_wrap=True), contextlib.nullcontext()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), console=lines, transient=False)
    task = progress.add_task("building the supernet", total=None, info="")

    def on_step(epoch: int, i: int, n: int, loss: float) -> None:
        progress.update(task, description=f"epoch {epoch}/{epochs}", completed=i, total=n,
                        info=f"loss {loss:.4f}")

    return on_step, lambda s: progress.console.print(line(s)), progress


@supernet_app.command("train")
def supernet_train(space: str = typer.Option(..., "--space", help="Search space (see `y7nas spaces`)."),
                   data: str = typer.Option("synthetic", "--data", help=_DATA_HELP + "."),
                   output: Path = typer.Option(..., "-o", "--output", help="Supernet file (re-running resumes it)."),
                   epochs: int = typer.Option(30, "--epochs", help="Training epochs."),
                   img: int = typer.Option(160, "--img", help="Square input size (multiple of 32); "
                                           "searches with this supernet use the same."),
                   batch: int = typer.Option(16, "--batch", help="Batch size."),
                   seed: int = typer.Option(0, "--seed", help="Seed of initialisation, sub-network sampling and augmentation."),
                   activation: str = typer.Option("silu", "--activation", help="The one activation of every "
                                                  "sub-network (a search with this supernet fixes it)."),
                   random_subnets: int = typer.Option(2, "--random-subnets", help="Random sub-networks per step "
                                                      "besides the largest and the smallest (sandwich rule)."),
                   distill: bool = typer.Option(False, "--distill/--no-distill", help="In-place distillation "
                                                "from the largest sub-network."),
                   subset: Optional[int] = typer.Option(None, "--subset", help="Train on this many images (default all)."),
                   calib_images: int = typer.Option(64, "--calib-images", help="Training images that re-estimate "
                                                    "BatchNorm before a sub-network is scored."),
                   shards: int = typer.Option(1, "--shards", help="Split every batch into this many pieces "
                                              "(summed gradients); under torchrun each process takes its "
                                              "share (default: one per process)."),
                   device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
                   threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
                   as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
                   ) -> None:
    """Train the weight-sharing supernet of a space once; every candidate then scores in seconds.
    Data parallel: `torchrun --nproc_per_node N .venv/bin/y7nas supernet train ...`."""
    from nas.data import load_data_config
    from nas.supernet import SupernetConfig, train_supernet
    from search_spaces import get_space

    with user_errors():
        get_space(space)
        config = SupernetConfig(epochs=epochs, img=img, batch=batch, seed=seed, activation=activation,
                                random_subnets=random_subnets, distill=distill, subset=subset,
                                calib_images=calib_images, shards=shards, device=device, threads=threads)
        data_cfg = load_data_config(data)
        on_step, on_epoch, ctx = _supernet_progress(as_json, epochs)
        (err if as_json else out).print(f"supernet of {space} ({activation}) on {data} -> {output}")
        with ctx:
            result = train_supernet(get_space(space, nc=data_cfg.nc), data_cfg, output, config,
                                    on_step=on_step, on_epoch=on_epoch)
    summary = {"supernet": str(result.path), "epochs": result.epochs, "seconds": round(result.seconds, 3),
               "map50_95_largest": result.map50_95_largest, "map50_95_smallest": result.map50_95_smallest,
               "resumed_from": result.resumed_from}
    if int(os.environ.get("RANK", "0")) != 0:
        return                  # under torchrun rank 0 scores the result and reports it; the others do not
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    if result.resumed_from:
        out.print(f"resumed after epoch {result.resumed_from}")
    out.print(f"largest sub-network mAP@0.5:0.95 {result.map50_95_largest:.4f}  smallest "
              f"{result.map50_95_smallest:.4f}  {result.seconds:.1f}s")
    out.print(f"supernet: {result.path}")


# ----------------------------------------------------------------------------- latency tables
latency_app = typer.Typer(no_args_is_help=True, help="Latency tables: every layer of a search space timed once "
                          "on the target device, summed to predict latency (docs/LATENCY.md).")
app.add_typer(latency_app, name="latency-table")

_TABLE_STAGES = {"sampling": "timing layers", "calibrating": "calibrating", "coverage": "coverage"}


def _table_progress(lines: Console):
    """(on_progress, context): a rich bar per stage on a terminal, one line per stage otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not lines.is_terminal:
        def on_line(stage: str, done: int, total: int, layers: int) -> None:
            if done == total:
                lines.print(f"{_TABLE_STAGES[stage]}: {done}/{total} architectures, {layers} layers", soft_wrap=True)
        return on_line, contextlib.nullcontext()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[layers]} layers"), TimeElapsedColumn(), console=lines)
    tasks: dict[str, int] = {}

    def on_bar(stage: str, done: int, total: int, layers: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(_TABLE_STAGES[stage], total=total, layers=layers)
        progress.update(tasks[stage], completed=done, layers=layers)

    return on_bar, progress


@latency_app.command("build")
def latency_table_build(space: str = typer.Option(..., "--space", help="Search space (see `y7nas spaces`)."),
                        img: int = typer.Option(..., "--img", "--deploy-img", help="Size the table times layers "
                                                "at: the size you deploy at (searches using it measure costs there)."),
                        output: Path = typer.Option(..., "-o", "--output", help="Table file (JSON); an existing "
                                                    "table of this device is extended."),
                        backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime or torch."),
                        threads: int = typer.Option(1, "--threads", help="Intra-op CPU threads."),
                        device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
                        samples: int = typer.Option(100, "--samples", help="Random architectures whose layers "
                                                    "are timed (plus the space's preset)."),
                        calibration: int = typer.Option(6, "--calibration", help="Random whole models timed "
                                                        "(plus the preset) to calibrate the layer sums."),
                        holdout: int = typer.Option(20, "--holdout", help="Further architectures, not timed, that "
                                                    "estimate how often a new one finds all its layers."),
                        seed: int = typer.Option(0, "--seed", help="Seed of the sampled architectures."),
                        runs: int = typer.Option(20, "--runs", help="Timed runs per layer (median)."),
                        warmup: int = typer.Option(3, "--warmup", help="Untimed runs per layer."),
                        as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
                        ) -> None:
    """Time every distinct layer a space produces at one size, once, on this device; calibrate the
    layer sums on whole models. `--latency-table FILE` on search, scale and profile then predicts,
    for any class count (detect heads are timed at 1, 20 and 80 classes and interpolated)."""
    from nas.latency._table import build_table
    from search_spaces import get_space

    lines = err if as_json else out
    with user_errors():
        search_space = get_space(space)
        on_progress, ctx = _table_progress(lines)
        with ctx:
            result = build_table(search_space, img, output, backend=backend, threads=threads, device=device,
                                 samples=samples, calibration_models=calibration, holdout=holdout, seed=seed,
                                 runs=runs, warmup=warmup, progress=on_progress)
    cal = result.calibration
    summary = {"table": str(result.path), "layers": result.layers, "seconds": round(result.seconds, 2),
               "calibration": {k: cal[k] for k in ("curve", "a", "b", "call_overhead_ms", "fit_mape_percent")},
               "coverage": result.coverage}
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    cov = result.coverage
    curve = (f"{cal['a']:.3f} x sum {cal['b']:+.3f} ms" if cal["curve"] == "linear"
             else f"{cal['a']:.3f} x sum^{cal['b']:.3f}")
    out.print(f"{result.layers} layers ({result.timed} timed now) in {result.seconds:.1f}s; latency ≈ {curve} "
              f"(fit error {cal['fit_mape_percent']:.1f} % on {len(cal['points'])} whole models)", soft_wrap=True)
    if cov.get("holdout_architectures"):
        out.print(f"coverage: {cov['holdout_layer_hit_rate']:.1%} of the layers of {cov['holdout_architectures']} "
                  f"new random architectures found, {cov['holdout_complete_rate']:.0%} of them complete",
                  soft_wrap=True)
    out.print(f"table: {escape(str(result.path))}", soft_wrap=True)


if __name__ == "__main__":
    app()
