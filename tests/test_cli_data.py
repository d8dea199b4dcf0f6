"""``--data`` on the CLI: ``y7nas run`` requires it (a forgotten one must not search synthetic data
silently), ``y7nas demo`` still runs without it, and every ``--data`` help names what it accepts."""
from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from cli import app
from nas.data._config import SYNTHETIC_SOURCES
from tests.test_readme_cli import leaf_commands, options_of

runner = CliRunner()
DATA_OPTIONS = [(name, option) for name, command in leaf_commands(typer.main.get_command(app))
                for option in options_of(command) if "--data" in option.opts]


def test_run_without_data_stops_in_one_line_before_anything_runs(tmp_path):
    result = runner.invoke(app, ["run", "--space", "yolov7-tiny-cpu", "--study", "s",
                                 "--results-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "Missing option '--data'" in result.output
    assert list(tmp_path.iterdir()) == []


def test_demo_needs_no_data_option_and_runs_on_synthetic_large(monkeypatch):
    import nas.pipeline

    configs = []

    def fake_pipeline(cfg, hooks):
        configs.append(cfg)
        return {"report": {"outputs": {"report": "results/demo/report.html"}}}

    monkeypatch.setattr(nas.pipeline, "run_pipeline", fake_pipeline)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert [cfg.data for cfg in configs] == ["synthetic-large"]
    assert "--data synthetic-large" in result.output          # the y7nas run line it prints


def test_the_commands_reading_data_are_all_found():
    assert {name for name, _ in DATA_OPTIONS} >= {"run", "search", "scale", "finalists", "train", "val",
                                                  "supernet train"}


@pytest.mark.parametrize("name,option", DATA_OPTIONS, ids=[name for name, _ in DATA_OPTIONS])
def test_every_data_help_names_the_accepted_values(name, option):
    for source in SYNTHETIC_SOURCES:
        assert f"'{source}'" in option.help, f"y7nas {name} --data: help does not name {source!r}"
    assert "data.yaml" in option.help, f"y7nas {name} --data: help does not name a data YAML"


def test_run_requires_data_and_the_others_keep_their_default():
    required = {name for name, option in DATA_OPTIONS if option.required}
    assert "run" in required and "search" not in required
