"""Several workers on a real PostgreSQL server (Optuna RDB storage, psycopg 3 driver).

Runs only when ``Y7NAS_TEST_POSTGRES_URL`` names a server, e.g.
``postgresql+psycopg://y7nas:y7nas@127.0.0.1:5432/y7nas_test`` (``.ci/run`` installs Debian's
postgresql package, starts it on loopback and sets this variable; docs/SEARCH.md shows the same
steps for a local run).
"""
from __future__ import annotations

import collections
import os
import uuid

import pytest
from typer.testing import CliRunner

from cli import app

from nas.search import load_study_config, open_storage, open_study, run_search
from tests.search._helpers import SmallSpace, config

URL = os.environ.get("Y7NAS_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not URL, reason="no PostgreSQL server: set Y7NAS_TEST_POSTGRES_URL=postgresql+psycopg://USER:PW@HOST/DB "
                    "(.ci/run starts one; see docs/SEARCH.md)")


@pytest.fixture(scope="module")
def server():
    open_storage(URL)  # a server that was promised but is unreachable fails here, in one line
    return URL


def test_local_workers_and_a_joining_worker_share_a_postgres_study(server, tmp_path, monkeypatch):
    import optuna

    name = f"pg-{uuid.uuid4().hex[:8]}"
    cfg = config(tmp_path, study=name, space="small", storage=server, trials=4, workers=2, threads=2,
                 sampler="random")
    summary = run_search(cfg, SmallSpace())
    study = optuna.load_study(study_name=name, storage=server)
    counts = collections.Counter(t.state.name for t in study.trials)
    assert counts == {"COMPLETE": 4} and summary.complete == 4
    assert len({t.number for t in study.trials}) == 4 and len({t.user_attrs["worker"] for t in study.trials}) == 2

    # another machine's view: everything needed is read back from the study
    joined = load_study_config(name, server)
    assert (joined.space, joined.objectives, joined.img, joined.fidelity, joined.trials) == \
        ("small", ("gflops", "params"), 64, "flops", 4)

    # raise the budget to 6 (queues 2 tickets) and let `y7nas worker`, as on another machine, run them
    open_study(cfg.replace(trials=6, workers=1), open_storage(server), create=True)
    import search_spaces

    monkeypatch.setattr(search_spaces, "SPACES", {**search_spaces.SPACES, "small": SmallSpace})
    result = CliRunner().invoke(app, ["worker", "--study", name, "--storage", server, "--threads", "1"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name=name, storage=server)
    counts = collections.Counter(t.state.name for t in study.trials)
    assert counts == {"COMPLETE": 6}
    workers = collections.Counter(t.user_attrs["worker"].rsplit(":", 1)[-1] for t in study.trials)
    assert workers["w0"] + workers["w1"] == 4 and sum(workers.values()) == 6  # 2 by the joining worker
