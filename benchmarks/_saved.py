"""A benchmark's results file: every finished measurement is saved as it ends, and a re-run with
the same arguments resumes from it (so a run spanning several sittings finishes)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

#: arguments that do not change what is measured (where it runs, where it writes)
LOCAL_ARGS = ("results", "threads", "out_dir")


class Saved:
    """The results file: one JSON dict (``args``, ``measured`` and whatever the benchmark adds),
    rewritten atomically after every measurement."""

    def __init__(self, path: Path, args: dict, defaults: dict | None = None):
        """``defaults``: the parser's; an argument the file does not record (added to the
        benchmark after the file was started) matches when it has its default value."""
        self.path = Path(path)
        self.doc = json.loads(self.path.read_text()) if self.path.is_file() else {}
        keep = {k: v for k, v in args.items() if k not in LOCAL_ARGS}
        stored = dict(self.doc.get("args") or {})
        for key, value in keep.items():
            if self.doc and key not in stored and defaults is not None and defaults.get(key) == value:
                stored[key] = value
        if self.doc:
            self.doc["args"] = stored
        if self.doc and stored != keep:
            raise SystemExit(f"{self.path} holds a run with other arguments: {self.doc.get('args')}; "
                             f"use another --results")
        self.doc.setdefault("args", keep)
        self.doc.setdefault("measured", {})

    def get(self, key: str) -> Any:
        return self.doc["measured"].get(key)

    def put(self, key: str, value: Any) -> None:
        self.doc["measured"][key] = value
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1) + "\n")
        tmp.replace(self.path)


def measure(saved: Saved, key: str, fn: Callable[[], Any], show: Callable[[Any], str] = lambda v: f"{v:.4g}") -> Any:
    """``fn()`` once: its result is saved under ``key`` (with the CPU seconds it took)."""
    found = saved.get(key)
    if found is not None:
        return found["value"]
    t0 = time.process_time()
    value = fn()
    saved.put(key, {"value": value, "cpu_s": round(time.process_time() - t0, 2)})
    print(f"  {key}: {show(value)} ({time.process_time() - t0:.0f} cpu-s)", flush=True)
    return value
