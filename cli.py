"""y7nas command line: thin typer commands over the library.

Each command parses its options, calls one library function and prints the result. Every
:class:`~nas.errors.NasError` becomes one ``error: ...`` line on stderr and exit status 1.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
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
        err.print(f"[bold red]error:[/] {exc}", markup=True, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file so no partial file is ever left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


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
            ) -> None:
    """Count params and FLOPs (GFLOPs = 2 x multiply-adds / 1e9), optionally fuse and time a model."""
    from nas.build import build_model
    from nas.profile import profile_report
    from nas.sources import resolve_model

    with user_errors():
        source = resolve_model(model)
        net = build_model(source.cfg)
        report = profile_report(net, img=img, batch=batch, deploy=deploy, latency=latency, runs=runs,
                                warmup=warmup, threads=threads, device=device, layers=layers)
    if as_json:
        sys.stdout.write(json.dumps({"model": source.name, **report}) + "\n")
        return
    _print_profile(source.name, report)


def _print_profile(name: str, report: dict) -> None:
    if "layers" in report:
        table = Table("#", "module", "params", "GFLOPs", title=f"{name}: per layer")
        for row in report["layers"]:
            table.add_row(str(row["index"]), row["module"], f"{row['params']:,}", f"{2 * row['macs'] / 1e9:.3f}")
        out.print(table)
    table = Table("metric", "value", title=f"{name} @ {report['img']}px")
    table.add_row("params", f"{report['params']:,}")
    table.add_row("multiply-adds", f"{report['macs']:,}")
    table.add_row("GFLOPs (2 x MACs)", f"{report['gflops']:.2f}")
    if "params_deploy" in report:
        table.add_row("params (deploy)", f"{report['params_deploy']:,}")
        table.add_row("GFLOPs (deploy)", f"{report['gflops_deploy']:.2f}")
        table.add_row("max |fused - original|", f"{report['max_abs_diff']:.2e}")
    if "latency_ms" in report:
        lat = report["latency_ms"]
        table.add_row(f"latency median ({lat['form']}, {lat['device']}, batch {lat['batch']}, "
                      f"{lat['threads']} threads)", f"{lat['median']:.2f} ms")
        table.add_row(f"latency p90 ({lat['runs']} runs, {lat['warmup']} warm-up)", f"{lat['p90']:.2f} ms")
    out.print(table)


# ----------------------------------------------------------------------------- demo
@app.command()
def demo() -> None:
    """The main job on the embedded defaults: profile every preset (train and deploy form)."""
    from nas.build import build_model
    from nas.cfg import parse_cfg
    from nas.expand import expand
    from nas.presets import PRESETS
    from nas.profile import profile_report

    table = Table("preset", "params", "params (deploy)", "GFLOPs@640", "latency@320 deploy (ms)",
                  title="y7nas presets (GFLOPs = 2 x multiply-adds)")
    with user_errors():
        for name, genome in PRESETS.items():
            out.print(f"profiling {name} ...")
            model = build_model(parse_cfg(expand(genome), source=name))
            r640 = profile_report(model, img=640, deploy=True)
            r320 = profile_report(model, img=320, deploy=True, latency=True, runs=5, warmup=2)
            table.add_row(name, f"{r640['params']:,}", f"{r640['params_deploy']:,}", f"{r640['gflops']:.2f}",
                          f"{r320['latency_ms']['median']:.1f}")
    out.print(table)


if __name__ == "__main__":
    app()
