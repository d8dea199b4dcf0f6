"""--deploy-img: candidates are scored at --img, every cost (and so every budget) is measured at the
size the user deploys at; without it the costs are at --img and the run says so in one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nas.errors import NasError
from nas.profile import profile_model
from tests.search._helpers import config, load

from nas.pipeline import RunConfig
from nas.pipeline._stages import STAGES, search_config

ROOT = Path(__file__).resolve().parents[2]


def _gflops_at(genome, img: int) -> float:
    from nas.build import build_model
    from nas.cfg import parse_cfg
    from nas.expand import expand
    from nas.fuse import fuse

    return profile_model(fuse(build_model(parse_cfg(expand(genome), source="test"))).eval(), img).gflops


def test_costs_and_the_budget_are_measured_at_the_deployment_size(tmp_path):
    """Trained/scored at 64 px, deployed at 128 px: each trial's GFLOPs are its 128 px GFLOPs (about
    4x its 64 px ones), and the budget is checked against those."""
    from nas.search import run_search
    from search_spaces import get_space
    from nas.genome import Genome

    space = get_space("yolov7-tiny", nc=80)
    limit = 0.3        # GFLOPs: these six draws cost 0.10-0.49 at 128 px, all under 0.13 at 64 px
    cfg = config(tmp_path, trials=6, img=64, deploy_img=128, max_gflops=limit, sampler="random", seed=3)
    assert cfg.cost_img == 128 and cfg.cost_size_note() is None
    run_search(cfg, space, write=False)
    trials = [t for t in load(cfg).trials if t.state.name == "COMPLETE"]
    assert len(trials) == 6
    feasibility = []
    for t in trials:
        genome = Genome.from_dict(json.loads(t.user_attrs["genome"]), source="trial")
        at_128, at_64 = _gflops_at(genome, 128), _gflops_at(genome, 64)
        assert t.user_attrs["metrics"]["gflops"] == pytest.approx(at_128, rel=1e-4)
        assert at_128 == pytest.approx(4 * at_64, rel=0.05)
        assert t.user_attrs["feasible"] == (at_128 <= limit)
        feasibility.append(t.user_attrs["feasible"])
    assert load(cfg).user_attrs["y7nas:config"]["deploy_img"] == 128
    assert any(at is False for at in feasibility), "the 128 px budget rejects some that fit at 64 px"


def test_without_a_deployment_size_the_costs_are_at_img_and_one_line_says_so(tmp_path):
    cfg = config(tmp_path, img=64, max_latency=5.0)
    assert cfg.cost_img == 64
    note = cfg.cost_size_note()
    assert note.startswith("note:") and "64 px" in note and "--deploy-img" in note and "\n" not in note
    assert config(tmp_path, img=64, objectives=("params",), fidelity="flops").cost_size_note() is None


def test_a_study_deployed_at_another_size_is_refused_on_resume(tmp_path):
    from nas.search import run_search
    from search_spaces import get_space

    space = get_space("yolov7-tiny", nc=80)
    run_search(config(tmp_path, trials=1, deploy_img=128), space, write=False)
    with pytest.raises(NasError, match="deploy_img=128.*deploy_img=256"):
        run_search(config(tmp_path, trials=2, deploy_img=256), space, write=False)


@pytest.mark.parametrize("bad", [48, 0, -64])
def test_a_deployment_size_not_a_multiple_of_32_is_one_line(tmp_path, bad):
    with pytest.raises(NasError, match="--deploy-img must be a positive multiple of 32"):
        config(tmp_path, deploy_img=bad)
    with pytest.raises(NasError, match="--deploy-img must be a positive multiple of 32"):
        RunConfig(study="s", space="yolov7-tiny", deploy_img=bad)


def test_run_measures_the_search_finalists_and_family_at_the_deployment_size():
    cfg = RunConfig(study="s", space="yolov7-tiny-cpu", img=64, deploy_img=640, max_latency=5.0)
    assert search_config(cfg).img == 64 and search_config(cfg).cost_img == 640
    assert cfg.cost_img == 640
    depends = {s.name: s.depends_of(cfg) for s in STAGES}
    for stage in ("search", "finalists", "family"):
        assert "deploy_img" in depends[stage], stage
    assert "deploy_img" not in depends["supernet"]                   # random sub-networks from the whole space
    pooled = RunConfig(study="s", space="yolov7-tiny-cpu", img=64, deploy_img=640, max_latency=5.0, random_from="band")
    assert "deploy_img" in STAGES[0].depends_of(pooled)              # its pool is drawn in the band
    assert RunConfig(study="s", space="yolov7-tiny-cpu", img=64).cost_img == 64


def test_the_cli_prints_where_costs_are_measured(tmp_path):
    """`y7nas search` without --deploy-img but with a latency budget: the one line, then the search."""
    args = [sys.executable, "-c", "import cli; cli.app()", "search", "--space", "yolov7-tiny", "--trials", "1",
            "--study", "c", "--results-dir", str(tmp_path), "--fidelity", "flops", "--objectives", "gflops",
            "--img", "64", "--max-gflops", "5"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "costs (gflops) are measured at --img 64 px" in " ".join(done.stderr.split())
    again = subprocess.run([*args[:-4], "--img", "64", "--deploy-img", "128", "--study", "d"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "are measured at --img" not in again.stderr
    import optuna

    study = optuna.load_study(study_name="d", storage=f"sqlite:///{tmp_path / 'd' / 'study.db'}")
    assert study.user_attrs["y7nas:config"]["img"] == 64
    assert study.user_attrs["y7nas:config"]["deploy_img"] == 128
