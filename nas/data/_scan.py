"""Scan a split: list its images, pair them with labels, validate, report.

Conventions follow YOLOv5/v7: the label of ``.../images/.../x.jpg`` is
``.../labels/.../x.txt`` (last ``/images/`` replaced); each label row is
``cls cx cy w h`` normalised to [0, 1] (polygon rows ``cls x1 y1 x2 y2 ...`` are turned into
their bounding box, as YOLOv5 does). An image without a label file, or with an empty one, is a
background image. An image whose label file has any bad row is dropped whole.

Reporting: every scan ends in one summary line (YOLOv5's "N found, M missing, K corrupt") and,
when anything was dropped or ignored, a details file listing each problem. :func:`scan_split`
hands its :class:`ScanSummary` to the current scan reporter — by default :func:`report_scan`,
which prints the line on stderr when something was dropped or ignored and nothing for a clean
split — so every command that loads data through :func:`scan_split` tells the user, with no
code of its own. :func:`scan_reporter` swaps the reporter (a callback, or None to stay silent).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, TextIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from nas.data._config import DataConfig
from nas.errors import DataError

IMG_FORMATS = (".jpg", ".jpeg", ".png", ".bmp")
COORD_EPS = 1e-3  # tolerated excursion of normalised coordinates outside [0, 1]
MIN_IMAGE_SIDE = 2
_EXIF_ORIENTATION = 274
_log = logging.getLogger("y7nas.data")


#: Why an image was dropped, in the order the summary names them: kind → what the summary says.
DROP_REASONS = {
    "class": "class id out of range",
    "coords": "coordinates outside [0, 1]",
    "columns": "wrong column count",
    "number": "non-numeric values",
    "finite": "non-finite values",
    "size": "zero-size boxes",
    "label-file": "unreadable label file",
    "unreadable": "unreadable image",
    "missing": "image file missing",
    "format": "unsupported image format",
    "small": "image too small",
}


@dataclass(frozen=True)
class ScanStats:
    """Counts of one scan. ``images`` are the images kept, backgrounds included.

    ``found``: images listed by the split; ``missing_labels``: kept images without a label file
    (backgrounds, YOLOv5's "missing"); ``dropped``: (reason, images) pairs summing to
    ``corrupt``, reasons from :data:`DROP_REASONS`; ``duplicate_rows``: label rows removed as
    duplicates; ``orphan_labels``: label files matching no image (ignored).
    """

    images: int
    backgrounds: int
    corrupt: int
    orphan_labels: int
    found: int = 0
    missing_labels: int = 0
    duplicate_rows: int = 0
    dropped: tuple[tuple[str, int], ...] = ()

    @property
    def clean(self) -> bool:
        """Nothing dropped, ignored, removed or missing: nothing worth telling the user."""
        return not (self.corrupt or self.orphan_labels or self.missing_labels or self.duplicate_rows)


@dataclass(frozen=True)
class ScanSummary:
    """What one scan has to say: the split, its counts, the one-line ``text`` and the details
    file (None when nothing went wrong). ``str(summary)`` is the line."""

    split: str
    stats: ScanStats
    text: str
    log_path: Path | None = None
    source: str = ""

    @property
    def clean(self) -> bool:
        return self.stats.clean

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, eq=False)
class SplitIndex:
    """The valid images of one split with their labels.

    Attributes:
        split: split name ('train', 'val').
        images: image paths, one per sample.
        labels: per image a float32 array (n, 5) of ``cls cx cy w h`` normalised; (0, 5) for
            backgrounds.
        shapes: per image its (height, width) after EXIF rotation.
        nc / names: the classes.
        stats: the counts of the scan.
        summary: one line, e.g. ``train: 14 images, 2 backgrounds, 3 corrupt, 1 label without
            image; details in <log>``.
        log_path: the file listing each problem (None when there was none).
    """

    split: str
    images: tuple[Path, ...]
    labels: tuple[np.ndarray, ...]
    shapes: tuple[tuple[int, int], ...]
    nc: int
    names: tuple[str, ...]
    stats: ScanStats
    summary: str
    log_path: Path | None = None
    problems: tuple[str, ...] = field(default=(), repr=False)
    source: str = ""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def scan(self) -> ScanSummary:
        """This split's :class:`ScanSummary` (what :func:`report_scan` prints)."""
        return ScanSummary(self.split, self.stats, self.summary, self.log_path, self.source)


def report_scan(summary: ScanSummary | SplitIndex, stream: TextIO | None = None) -> bool:
    """Print ``summary``'s line on ``stream`` (default: the current ``sys.stderr``) when the scan
    dropped or ignored something; a clean scan prints nothing. Returns whether it printed."""
    if isinstance(summary, SplitIndex):
        summary = summary.scan
    if summary.clean:
        return False
    stream = sys.stderr if stream is None else stream
    stream.write(f"{summary.source}: {summary.text}\n" if summary.source else f"{summary.text}\n")
    stream.flush()
    return True


_REPORTERS: list[Callable[[ScanSummary], object] | None] = []


@contextlib.contextmanager
def scan_reporter(callback: Callable[[ScanSummary], object] | None) -> Iterator[None]:
    """Within the block, :func:`scan_split` hands each summary to ``callback`` (None: to no one)
    instead of :func:`report_scan`."""
    _REPORTERS.append(callback)
    try:
        yield
    finally:
        _REPORTERS.pop()


def _emit(summary: ScanSummary) -> None:
    callback = _REPORTERS[-1] if _REPORTERS else report_scan
    if callback is not None:
        callback(summary)


def img2label_path(image: Path | str) -> Path:
    """YOLOv5's rule: last ``/images/`` → ``/labels/``, extension → ``.txt``."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        head, tail = s.rsplit(sa, 1)
        s = head + sb + tail
    return Path(s).with_suffix(".txt")


def list_images(source: Path) -> list[Path]:
    """Images of one split source: a folder (recursive), a list file, or one image."""
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMG_FORMATS)
    if source.suffix.lower() == ".txt":
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read image list ({e.__class__.__name__})",
                            where=str(source)) from None
        out = []
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line).expanduser()
                out.append(p if p.is_absolute() else (source.parent / p))
        return [Path(os.path.normpath(p)) for p in out]
    return [source]


def scan_split(config: DataConfig, split: str = "train", *,
               log_path: Path | str | None = None) -> SplitIndex:
    """Scan split ``split`` of ``config``: keep valid images, count and log the rest.

    The summary goes to the current scan reporter (default :func:`report_scan`: a line on stderr
    when something was dropped or ignored) and to the ``y7nas.data`` logger.

    Args:
        config: the dataset.
        split: 'train' or 'val'.
        log_path: where the problem details go; default ``<root>/y7nas-scan-<split>.log``
            (a temp file when the root is not writable). Written only when there are problems.

    Raises:
        DataError: nothing valid remains.
    """
    sources = config.split(split)
    images: list[Path] = []
    for src in sources:
        images += list_images(src)
    problems: list[str] = []
    kept, labels, shapes = [], [], []
    backgrounds = missing_labels = duplicates = 0
    dropped: Counter = Counter()
    for image in images:
        shape, err, kind = _image_check(image)
        label_path = img2label_path(image)
        rows, label_errs, notes, dup = (None, [], [], 0)
        has_label = label_path.is_file()
        if err is None and has_label:
            rows, label_errs, notes, dup = _parse_label_file(label_path, config.nc)
        problems += notes
        if err is not None or label_errs:
            dropped[kind if err is not None else label_errs[0][0]] += 1
            problems += [f"{image}: {err} (image dropped)"] if err else []
            problems += [f"{e} (image {image.name} dropped)" for _k, e in label_errs]
            continue
        duplicates += dup
        if not has_label:
            missing_labels += 1
            problems.append(f"{image}: no label file {label_path} (used as a background image)")
        rows = np.zeros((0, 5), np.float32) if rows is None else rows
        backgrounds += len(rows) == 0
        kept.append(image)
        labels.append(rows)
        shapes.append(shape)
    orphans = find_orphan_labels(sources, images)
    problems += [f"{p}: label file without image (ignored)" for p in orphans]

    stats = ScanStats(len(kept), backgrounds, sum(dropped.values()), len(orphans), found=len(images),
                      missing_labels=missing_labels, duplicate_rows=duplicates,
                      dropped=tuple((k, dropped[k]) for k in DROP_REASONS if dropped[k]))
    written = _write_log(problems, log_path, config.root, split) if problems else None
    summary = format_summary(split, stats, written)
    _log.info(summary)
    if not kept:
        where = f"{config.source or config.root}: {split}"
        raise DataError(f"no valid images left ({summary})", where=where)
    index = SplitIndex(split, tuple(kept), tuple(labels), tuple(shapes), config.nc, config.names,
                       stats, summary, written, tuple(problems), str(config.source or config.root))
    _emit(index.scan)
    return index


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def format_summary(split: str, stats: ScanStats, log_path: Path | None) -> str:
    """The one-line summary of a scan, e.g. ``train: 20 images found, 11 kept (4 backgrounds,
    2 without a label file), 9 corrupt dropped (class id out of range: 3, unreadable image: 2,
    …), 1 label file without image ignored; details in <file>``."""
    kept = f"{_count(stats.backgrounds, 'background')}"
    if stats.missing_labels:
        kept += f", {stats.missing_labels} without a label file"
    s = f"{split}: {_count(stats.found, 'image')} found, {stats.images} kept ({kept}), {stats.corrupt} corrupt dropped"
    if stats.dropped:
        s += " (" + ", ".join(f"{DROP_REASONS[k]}: {n}" for k, n in stats.dropped) + ")"
    if stats.orphan_labels:
        s += f", {_count(stats.orphan_labels, 'label file')} without image ignored"
    if stats.duplicate_rows:
        s += f", {_count(stats.duplicate_rows, 'duplicate label row')} removed"
    return s + (f"; details in {log_path}" if log_path else "")


def image_shape(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(height, width) of an image after EXIF rotation, or (None, reason) when unusable."""
    shape, err, _kind = _image_check(path)
    return shape, err


def _image_check(path: Path) -> tuple[tuple[int, int] | None, str | None, str | None]:
    """:func:`image_shape` plus the :data:`DROP_REASONS` kind of a failure."""
    if path.suffix.lower() not in IMG_FORMATS:
        return None, f"unsupported image format {path.suffix!r}", "format"
    if not path.is_file():
        return None, "image file missing", "missing"
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:  # verify() leaves the object unusable; reopen for size
            w, h = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except UnidentifiedImageError:
        return None, "unreadable image (not a JPEG/PNG/BMP file)", "unreadable"
    except (OSError, SyntaxError, ValueError) as e:
        reason = " ".join(str(e).replace(str(path), "").split()) or e.__class__.__name__
        return None, f"unreadable image ({reason})", "unreadable"
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    if min(w, h) < MIN_IMAGE_SIDE:
        return None, f"image too small ({w}x{h})", "small"
    return (h, w), None, None


def parse_label_file(path: Path, nc: int) -> tuple[np.ndarray | None, list[str], list[str]]:
    """Parse one label file → (rows (n, 5) float32 or None, errors, notes).

    Errors make the image unusable; notes (duplicate rows removed) do not.
    """
    rows, errors, notes, _dup = _parse_label_file(path, nc)
    return rows, [e for _kind, e in errors], notes


def _parse_label_file(path: Path, nc: int) -> tuple[np.ndarray | None, list[tuple[str, str]], list[str], int]:
    """:func:`parse_label_file` with (kind, error) pairs and the number of duplicate rows."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        return None, [("label-file", f"{path}: unreadable label file ({e.__class__.__name__})")], [], 0
    rows, errors = [], []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row, err, kind = _check_row(line, nc)
        if err:
            errors.append((kind, f"{path} line {i}: {err}"))
        else:
            rows.append(row)
    if errors:
        return None, errors, [], 0
    arr = np.array(rows, np.float32).reshape(-1, 5)
    uniq, first = np.unique(arr, axis=0, return_index=True)
    notes, duplicates = [], len(arr) - len(uniq)
    if duplicates:
        notes.append(f"{path}: {duplicates} duplicate row(s) removed")
        arr = arr[np.sort(first)]
    return arr, [], notes, duplicates


def parse_label_row(line: str, nc: int) -> tuple[list[float] | None, str | None]:
    """One ``cls cx cy w h`` (or polygon) row → (values, None) or (None, what is wrong)."""
    row, err, _kind = _check_row(line, nc)
    return row, err


def _check_row(line: str, nc: int) -> tuple[list[float] | None, str | None, str | None]:
    """:func:`parse_label_row` plus the :data:`DROP_REASONS` kind of an error."""
    parts = line.split()
    if len(parts) != 5 and (len(parts) < 7 or len(parts) % 2 == 0):
        return None, f"{len(parts)} columns, expected 5 (cls cx cy w h)", "columns"
    try:
        values = [float(v) for v in parts]
    except ValueError:
        return None, f"non-numeric value in {line.strip()!r}", "number"
    if not all(np.isfinite(values)):
        return None, f"non-finite value in {line.strip()!r}", "finite"
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < nc:
        return None, f"class id {parts[0]} outside 0..{nc - 1}", "class"
    coords = values[1:]
    if min(coords) < -COORD_EPS or max(coords) > 1 + COORD_EPS:
        return None, f"coordinates outside [0, 1] in {line.strip()!r}", "coords"
    coords = [min(max(c, 0.0), 1.0) for c in coords]
    if len(parts) > 5:  # polygon → its bounding box
        xs, ys = coords[0::2], coords[1::2]
        coords = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2,
                  max(xs) - min(xs), max(ys) - min(ys)]
    if coords[2] <= 0 or coords[3] <= 0:
        return None, f"non-positive box width/height in {line.strip()!r}", "size"
    return [cls, *coords], None, None


def find_orphan_labels(sources: Iterable[Path], images: Iterable[Path]) -> list[Path]:
    """Label files under the labels folder of each *folder* source that match no image.

    List-file sources are skipped: their label folders are often shared with other splits.
    """
    wanted = {img2label_path(p) for p in images}
    orphans: list[Path] = []
    for src in sources:
        if not src.is_dir():
            continue
        labels_dir = img2label_path(Path(str(src) + os.sep + "x")).parent
        if labels_dir == src or not labels_dir.is_dir():
            continue
        orphans += sorted(p for p in labels_dir.rglob("*.txt") if p not in wanted)
    return orphans


def _write_log(problems: list[str], log_path: Path | str | None, root: Path, split: str) -> Path:
    text = "".join(f"{p}\n" for p in problems)
    target = Path(log_path) if log_path else root / f"y7nas-scan-{split}.log"
    try:
        _atomic_write(target, text)
    except OSError:
        if log_path:  # the caller chose this path: say so
            raise DataError(f"cannot write scan log {target}") from None
        fd, name = tempfile.mkstemp(prefix=f"y7nas-scan-{split}-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        target = Path(name)
    return target


def _atomic_write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
