"""Data YAML (YOLOv5/v7 style) → :class:`DataConfig`.

A data YAML names the splits and the classes::

    path: ../datasets/coco128   # optional root; relative to the YAML's folder
    train: images/train2017     # folder, list file (*.txt), image, or a list of those
    val: images/val2017
    nc: 80                      # optional when names is given
    names: [person, bicycle, ...]   # or {0: person, 1: bicycle, ...}

``train``/``val`` resolve against ``path`` (relative to the YAML's folder), or, when ``path`` is
absent, against the YAML's folder and then the working directory: YOLOv7's own data files
(``train: ./coco/train2017.txt``) are written relative to the folder ``train.py`` runs from. The
YAML's folder wins when both hold the entry.
Every problem ends in one :class:`~nas.errors.DataError` line naming the file and the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from nas.errors import DataError

SPLITS = ("train", "val")


@dataclass(frozen=True)
class DataConfig:
    """A resolved dataset description.

    Attributes:
        root: dataset root that relative split entries were resolved against.
        train / val: the split sources, absolute: image folders, list files (one image path a
            line) or single images. :func:`nas.data.scan_split` expands them into images.
        nc: number of classes.
        names: class names, ``len(names) == nc``.
        source: the data YAML this came from (None when built in code).
    """

    root: Path
    train: tuple[Path, ...]
    val: tuple[Path, ...]
    nc: int
    names: tuple[str, ...]
    source: Path | None = None

    def split(self, name: str) -> tuple[Path, ...]:
        """The sources of split ``name`` ('train' or 'val')."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}, expected one of {', '.join(SPLITS)}")
        return getattr(self, name)


#: names that ``--data`` accepts for the embedded synthetic datasets → their parameters:
#: ``synthetic`` (the default: 5 shapes from tiny to large, 512 / 128 images at 256 px) and
#: ``synthetic-large`` (3 shapes, large objects only, 512 / 128 images at 128 px: learnable by a
#: small detector in minutes on a CPU, used by ``make demo``) and ``synthetic-alt`` (the set no
#: default was tuned on, for confirming them: 3 other shapes, textured backgrounds, medium objects,
#: another seed; 512 / 128 images at 128 px)
SYNTHETIC_SOURCES: dict[str, dict] = {
    "synthetic": {},
    "synthetic-large": {"nc": 3, "sizes": "large", "img": 128},
    "synthetic-alt": {"nc": 3, "sizes": "medium", "img": 128, "style": "alt", "seed": 1},
}


def load_data_config(source: str | Path, *, cache_dir: str | Path | None = None) -> DataConfig:
    """Read a data YAML, or generate/reuse the synthetic dataset when ``source == 'synthetic'``.

    Args:
        source: path to a data YAML, or the word ``synthetic``.
        cache_dir: where the synthetic dataset is cached (see :func:`synthetic_dataset`).

    Raises:
        DataError: missing file, unreadable YAML, missing keys, nc/names mismatch, or a split
            source that does not exist.
    """
    if str(source) in SYNTHETIC_SOURCES:
        from nas.data._synthetic import synthetic_dataset  # local: avoid an import cycle

        source = synthetic_dataset(cache_dir=cache_dir, **SYNTHETIC_SOURCES[str(source)])
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError("data YAML not found", where=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"not valid YAML ({_first_line(e)})", where=str(path)) from None
    if not isinstance(raw, Mapping):
        raise DataError("expected a mapping with keys train, val, names/nc", where=str(path))
    return parse_data_config(raw, path)


def parse_data_config(raw: Mapping[str, Any], path: Path) -> DataConfig:
    """Validate an already-loaded data mapping; ``path`` is the YAML it came from."""
    where = str(path)
    missing = [k for k in SPLITS if raw.get(k) in (None, "", [])]
    if "names" not in raw and "nc" not in raw:
        missing.append("names (or nc)")
    if missing:
        raise DataError(f"missing key(s): {', '.join(missing)}", where=where)
    root = _resolve_root(raw.get("path"), path)
    nc, names = _classes(raw, where)
    also = Path.cwd() if raw.get("path") in (None, "") else None      # YOLOv7's cwd-relative entries
    splits = {k: _split_sources(raw[k], root, f"{where}: {k}", also) for k in SPLITS}
    return DataConfig(root=root, nc=nc, names=names, source=path.resolve(), **splits)


def _resolve_root(value: Any, yaml_path: Path) -> Path:
    base = yaml_path.resolve().parent
    if value in (None, ""):
        return base
    if not isinstance(value, str):
        raise DataError(f"path: expected a folder name, got {value!r}", where=str(yaml_path))
    root = Path(value).expanduser()
    return (root if root.is_absolute() else base / root).resolve()


def _classes(raw: Mapping[str, Any], where: str) -> tuple[int, tuple[str, ...]]:
    nc = raw.get("nc")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
        raise DataError(f"nc: expected a positive integer, got {nc!r}", where=where)
    names = raw.get("names")
    if names is None:
        return nc, tuple(f"class{i}" for i in range(nc))
    if isinstance(names, Mapping):
        keys = sorted(names) if all(isinstance(k, int) for k in names) else None
        if keys != list(range(len(names))):
            raise DataError("names: dict keys must be the integers 0..n-1", where=where)
        names = [names[k] for k in keys]
    if not isinstance(names, list) or not names:
        raise DataError("names: expected a non-empty list or {id: name} dict", where=where)
    names = tuple(str(n) for n in names)
    if nc is not None and nc != len(names):
        raise DataError(f"nc is {nc} but names lists {len(names)} classes", where=where)
    return len(names), names


def _split_sources(value: Any, root: Path, where: str, also: Path | None = None) -> tuple[Path, ...]:
    """The split's entries resolved against ``root``, else against ``also`` (the working directory
    for a YAML without ``path``)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise DataError(f"expected a path or a list of paths, got {item!r}", where=where)
        p = Path(item).expanduser()
        if p.is_absolute():
            candidates = [p]
        else:
            candidates = [root / p] + ([also / p] if also is not None and also.resolve() != root else [])
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            tried = " nor ".join(str(c) for c in candidates)
            raise DataError(f"{item} does not exist (neither {tried})" if len(candidates) > 1
                            else f"{candidates[0]} does not exist", where=where)
        out.append(found.resolve())
    return tuple(out)


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split())
