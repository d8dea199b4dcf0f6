"""Turn what a user names as MODEL (preset, genome YAML, flat yolov7 YAML) into a cfg."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nas.cfg import ModelCfg, parse_cfg, read_model_text, read_yaml_mapping
from nas.errors import NasError
from nas.expand import expand
from nas.genome import Genome
from nas.presets import PRESETS


@dataclass(frozen=True)
class ModelSource:
    """A resolved MODEL argument: the flat cfg, and the genome when one is known."""

    name: str
    cfg: ModelCfg
    genome: Genome | None


def resolve_model(spec: str) -> ModelSource:
    """Resolve a preset name, a genome YAML file or a flat yolov7-format YAML file."""
    if spec in PRESETS:
        genome = PRESETS[spec]
        return ModelSource(spec, parse_cfg(expand(genome), source=f"preset {spec}"), genome)
    path = Path(spec)
    if not path.exists():
        raise NasError(f"{spec}: not a preset ({', '.join(PRESETS)}) and no such file")
    data = read_yaml_mapping(read_model_text(path), spec)
    if "backbone" in data:
        return ModelSource(path.stem, parse_cfg(data, source=spec), None)
    genome = Genome.from_dict(data, source=spec)
    return ModelSource(path.stem, parse_cfg(expand(genome), source=spec), genome)
