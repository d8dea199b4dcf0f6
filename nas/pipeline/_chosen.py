"""The model a run hands over: ``results/<study>/chosen.*``.

The chosen model is the best searched finalist within the budget (:func:`best_finalist`). Its
files are copies of the finalist's own, so they stay valid whatever is re-run later:

* ``chosen.yaml`` — the flat YOLOv7 cfg (trains unchanged with YOLOv7's ``train.py --cfg``), and
  ``chosen.genome.yaml``, the same architecture as a y7nas genome;
* ``chosen.pt`` — the finalist's trained weights: a plain state dict of CPU tensors that
  ``torch.load(..., weights_only=True)`` reads and ``chosen.yaml``'s model loads strictly
  (``y7nas train chosen.yaml --init-from chosen.pt`` continues from it);
* ``chosen.onnx`` (``y7nas run --onnx``) — those weights in deploy form, exported at the
  deployment size and checked against torch before it is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from nas.search._files import write_atomically

CHOSEN = "chosen"


def chosen_paths(study_dir: Path) -> dict[str, Path]:
    """Where the chosen model's files go (``yaml``, ``genome``, ``weights``, ``onnx``)."""
    return {"yaml": study_dir / f"{CHOSEN}.yaml", "genome": study_dir / f"{CHOSEN}.genome.yaml",
            "weights": study_dir / f"{CHOSEN}.pt", "onnx": study_dir / f"{CHOSEN}.onnx"}


def write_chosen(study_dir: Path, best: Mapping[str, Any], say: Callable[[str], None]) -> dict[str, str]:
    """Copy finalist ``best``'s YAMLs and weights (a finalists.json row) to ``chosen.*``; returns
    the paths written. A finalist without saved weights (finalists trained by a y7nas that did not
    keep them) gets its YAMLs only, and one line says so."""
    paths = chosen_paths(study_dir)
    flat = study_dir / "models" / f"trial_{best['number']}.yaml"
    sources = {"yaml": flat, "genome": flat.with_name(flat.stem + ".genome.yaml")}
    if best.get("weights"):
        sources["weights"] = study_dir / best["weights"]
    else:
        say(f"chosen: trial {best['number']} has no saved weights (re-run `y7nas finalists` to keep them); "
            f"{paths['yaml'].name} only")
    written = {}
    for key, source in sources.items():
        write_atomically(paths[key], source.read_bytes())
        written[key] = str(paths[key])
    say(f"chosen model: trial {best['number']} (mAP@0.5:0.95 {float(best['map50_95']):.4f}) -> "
        f"{', '.join(Path(p).name for p in written.values())}")
    return written


def write_chosen_onnx(study_dir: Path, img: int, say: Callable[[str], None]) -> str:
    """Export ``chosen.yaml`` with ``chosen.pt``'s weights to ``chosen.onnx`` at ``img`` px."""
    from nas.build import build_model
    from nas.evaluate import load_weights
    from nas.latency import write_onnx
    from nas.sources import resolve_model

    paths = chosen_paths(study_dir)
    net = build_model(resolve_model(str(paths["yaml"])).cfg)
    if paths["weights"].is_file():
        load_weights(net, paths["weights"], paths["yaml"].name)
    done = write_onnx(net.eval(), paths["onnx"], img=img)
    say(f"chosen model: {paths['onnx']} ({img} px, ONNX Runtime vs torch max abs difference "
        f"{done.max_abs_diff:.2e})")
    return str(paths["onnx"])


__all__ = ["CHOSEN", "chosen_paths", "write_chosen", "write_chosen_onnx"]
