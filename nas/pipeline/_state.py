"""The state of one ``y7nas run``: ``<results_dir>/<study>/run.json``.

It holds the settings the run was started with and, per stage, whether it started and when it
finished (seconds, files written). Re-running the same command reads it and skips finished
stages. A changed setting is refused when *any* stage that depends on it has already started
(its work would no longer match the settings), whichever stage depends on it first: a one-shot
run's image size belongs to the supernet, but a proxy run, which has no supernet stage, still
measured its search at it. A setting only unstarted stages depend on may change.
Written atomically after every change, so a ``kill -9`` leaves the last consistent state.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from nas.errors import NasError
from nas.search._files import write_atomically

FORMAT = "y7nas-run/1"


class RunError(NasError):
    """A ``y7nas run`` request cannot be carried out (bad settings, changed settings, bad state)."""


@dataclass
class RunState:
    path: Path
    settings: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path, settings: Mapping[str, Any],
             depends: Sequence[tuple[str, Sequence[str]]]) -> "RunState":
        """The state at ``path`` (new when absent) after checking ``settings`` against it.

        ``depends`` lists the stages in order with the setting keys each depends on; a key
        changed since the file was written is refused when any stage depending on it started
        (the message names the first such stage). A key the file does not record at all (written
        by a y7nas that did not record it) is taken as it is now.
        """
        settings = json.loads(json.dumps(dict(settings)))  # JSON-normalised (tuples → lists)
        if not path.exists():
            return cls(path, settings)
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("format") != FORMAT:
                raise ValueError(f"format {stored.get('format')!r}")
            old, stages = dict(stored["settings"]), dict(stored["stages"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RunError(f"{path}: not a y7nas run state ({exc}); remove it or use another --study") from None
        for key in sorted(set(old) | set(settings)):
            if key not in old or old.get(key) == settings.get(key):
                continue
            stage = next((name for name, keys in depends
                          if key in keys and stages.get(name, {}).get("started")), None)
            if stage is not None:
                raise RunError(
                    f"run {path.parent.name!r} already {'finished' if stages[stage].get('done') else 'started'} "
                    f"stage {stage} with {key}={_show(old.get(key))}; this run asks for "
                    f"{key}={_show(settings.get(key))} (use another --study or the same options)")
        return cls(path, settings, stages)

    def done(self, stage: str) -> bool:
        return bool(self.stages.get(stage, {}).get("done"))

    def start(self, stage: str) -> None:
        self.stages.setdefault(stage, {})["started"] = True
        self.save()

    def finish(self, stage: str, seconds: float, outputs: Mapping[str, Any]) -> None:
        self.stages[stage] = {"started": True, "done": True, "seconds": round(seconds, 1),
                              "outputs": dict(outputs)}
        self.save()

    def save(self) -> None:
        payload = {"format": FORMAT, "settings": self.settings, "stages": self.stages}
        write_atomically(self.path, json.dumps(payload, indent=2) + "\n")


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)
