"""optuna-dashboard shows the studies' objective names and trials.

The dashboard's own WSGI app (``optuna_dashboard.wsgi``) is called in this process with a plain
WSGI environ (no server, no network) and its JSON API is read back: ``/api/studies`` lists the
study, ``/api/studies/<id>`` gives ``objective_names`` (absent when the study has none: the
"Objective 0 / Objective 1" case) and the trials.
"""
from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard

from nas.presets import PRESETS
from nas.search import run_search, write_study_results
from scaling.grid import coefficient_grid
from scaling.grid_search import STORAGE_NAME, STUDY_NAME, grid_search
from scaling.measure import Measurement
from tests.search._helpers import SmallSpace, config


def _get(app, path: str) -> Any:
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "",
                               "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status and status[0].startswith("200"), (path, status, body[:300])
    return json.loads(body)


def dashboard_view(storage_url: str, study_name: str) -> dict[str, Any]:
    """What the dashboard shows for ``study_name``: its detail JSON (a fresh app, no cache)."""
    app = optuna_dashboard.wsgi(storage_url)
    studies = _get(app, "/api/studies")["study_summaries"]
    ids = [s["study_id"] for s in studies if s["study_name"] == study_name]
    assert len(ids) == 1, studies
    return _get(app, f"/api/studies/{ids[0]}")


def _forget_names(db: Path) -> None:
    """Make the study look like one created before objective names were stored."""
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM study_system_attributes WHERE key = 'study:metric_names'")
    con.close()


def test_search_study_names_its_objectives_for_the_dashboard(tmp_path):
    cfg = config(tmp_path, space="small", trials=3, sampler="random", objectives=("gflops", "params"))
    run_search(cfg, SmallSpace())
    view = dashboard_view(cfg.storage_url, cfg.study)
    assert view["objective_names"] == ["gflops", "params"]
    assert view["directions"] == ["minimize", "minimize"]
    assert len(view["trials"]) == 3 == len(optuna.load_study(study_name=cfg.study, storage=cfg.storage_url).trials)
    assert {t["state"] for t in view["trials"]} == {"Complete"}
    assert [len(t["values"]) for t in view["trials"]] == [2, 2, 2]

    # a study made before the names were stored: no names (the dashboard says "Objective 0") ...
    db = cfg.study_dir / "study.db"
    _forget_names(db)
    assert "objective_names" not in dashboard_view(cfg.storage_url, cfg.study)
    # ... until it is resumed
    run_search(cfg.replace(trials=4), SmallSpace())
    view = dashboard_view(cfg.storage_url, cfg.study)
    assert view["objective_names"] == ["gflops", "params"]
    assert len(view["trials"]) == 4

    # `y7nas pareto` names them too
    _forget_names(db)
    write_study_results(cfg.study, cfg.results_dir)
    assert dashboard_view(cfg.storage_url, cfg.study)["objective_names"] == ["gflops", "params"]


def test_single_objective_search_is_named(tmp_path):
    cfg = config(tmp_path, space="small", trials=2, sampler="random", objectives=("params",))
    run_search(cfg, SmallSpace(), write=False)
    view = dashboard_view(cfg.storage_url, cfg.study)
    assert view["objective_names"] == ["params"] and len(view["trials"]) == 2


def test_scaling_grid_study_names_its_objective(tmp_path):
    grid = coefficient_grid(step=0.25)[:2]

    def run():
        return grid_search(PRESETS["yolov7-tiny"], 32, out_dir=tmp_path, grid=grid,
                           measure=lambda genome, img: Measurement(1, 1.0, None),
                           scorer=lambda genome, img: float(img))

    assert run().evaluated == 2
    url = f"sqlite:///{(tmp_path / STORAGE_NAME).resolve()}"
    view = dashboard_view(url, STUDY_NAME)
    assert view["objective_names"] == ["score"] and view["directions"] == ["maximize"]
    assert len(view["trials"]) == 2

    _forget_names(tmp_path / STORAGE_NAME)  # a grid study from before: named when resumed
    assert "objective_names" not in dashboard_view(url, STUDY_NAME)
    assert run().evaluated == 0
    assert dashboard_view(url, STUDY_NAME)["objective_names"] == ["score"]
