"""Choosing under a budget: the band, the estimators and the fill from below (pure, hand-made
rows), then the targeted phase and band finalists on a real tiny study."""
from __future__ import annotations

import itertools

import pytest

from nas.errors import SearchError
from nas.search import (Budget, band_rows, budget_of, choose_in_band, fill_band, parse_band, rank_rows,
                        run_search, train_finalists)
from nas.search._band import architecture_cost, draw_in_band
from nas.search._results import records
from tests.search._helpers import SmallSpace, config, load


def row(number, latency, score, params=1000, state="COMPLETE", feasible=True, duplicate_of=""):
    return {"number": number, "state": state, "latency_ms": latency, "score": score, "params": params,
            "feasible": feasible, "duplicate_of": duplicate_of}


ROWS = [row(0, 10.0, 0.30), row(1, 9.0, 0.20, params=3000), row(2, 8.6, 0.25, params=2000),
        row(3, 8.4, 0.90),                      # just below the band
        row(4, 9.5, 0.99, state="FAIL"), row(5, 9.6, 0.99, feasible=False), row(6, 9.7, 0.99, duplicate_of=2),
        row(7, 11.0, 0.99, feasible=False),     # over the budget
        row(8, 5.0, 0.50), row(9, 9.9, 0.25, params=500)]
BUDGET = Budget("latency_ms", 10.0)


@pytest.mark.parametrize("text,band", [("0.85,1.0", (0.85, 1.0)), ("0.5,0.9", (0.5, 0.9)), ((0.8, 1), (0.8, 1.0))])
def test_parse_band(text, band):
    assert parse_band(text) == band


@pytest.mark.parametrize("text", ["0.9", "1,0.9", "0.85,1.1", "0,1", "a,b", "0.9,0.9", "nan,1"])
def test_parse_band_refuses_in_one_line(text):
    with pytest.raises(SearchError, match="--band must be"):
        parse_band(text)


def test_budget_of_a_study():
    assert budget_of({"gflops": 2.0}) == Budget("gflops", 2.0)
    assert budget_of({}) is None
    with pytest.raises(SearchError, match="positive"):
        Budget("gflops", 0)


def test_band_rows_keep_evaluated_feasible_originals_inside_the_band():
    assert [r["number"] for r in band_rows(ROWS, BUDGET, (0.85, 1.0))] == [0, 1, 2, 9]
    assert [r["number"] for r in band_rows(ROWS, BUDGET, (0.9, 0.95))] == [1]


def test_estimators_rank_inside_the_band():
    inside = band_rows(ROWS, BUDGET, (0.85, 1.0))
    assert [r["number"] for r in rank_rows(inside, "score")] == [0, 2, 9, 1]
    assert [r["number"] for r in rank_rows(inside, "params")] == [1, 2, 0, 9]
    # ranks: score 0→4, 1→1, 2→2.5, 9→2.5; params 0→2, 1→4, 2→3, 9→1 → means 3, 2.5, 2.75, 1.75
    assert [r["number"] for r in rank_rows(inside, "score+params")] == [0, 2, 1, 9]
    with pytest.raises(SearchError, match="unknown estimator 'zen'"):
        rank_rows(inside, "zen")


def test_choose_in_band_takes_the_best_estimate_then_fills_from_just_below():
    assert [r["number"] for r in choose_in_band(ROWS, BUDGET, 2)] == [0, 2]
    # the band holds 4; the next come from below it, the costliest first (8.4 ms, then 5 ms)
    assert [r["number"] for r in choose_in_band(ROWS, BUDGET, 6)] == [0, 2, 9, 1, 3, 8]
    assert [r["number"] for r in choose_in_band(ROWS, BUDGET, 2, band=(0.5, 0.85))] == [3, 8]


# ------------------------------------------------------------------------------ a real tiny study
def _space_costs(space, img=64):
    """GFLOPs of every genome of the 32-genome test space."""
    dims = space.dimensions()
    costs = []
    for values in itertools.product(*(d.values() for d in dims)):
        genome = space.decode(dict(zip((d.name for d in dims), values)))
        costs.append(architecture_cost(genome, "gflops", img))
    return sorted(set(costs))


@pytest.fixture(scope="module")
def budget_study(tmp_path_factory, tiny_data):
    """A 3-trial zero-cost search of the small test space under a GFLOPs budget that sits at the
    upper third of the space's costs, band 0.9–1.0."""
    from nas.data import load_data_config

    space = SmallSpace(nc=load_data_config(tiny_data).nc)
    costs = _space_costs(space)
    limit = costs[2 * len(costs) // 3]
    cfg = config(tmp_path_factory.mktemp("band"), space="small", trials=3, fidelity="zero-cost",
                 objectives=("score", "gflops"), data=tiny_data, zero_cost_batch=4, sampler="random", seed=1,
                 max_gflops=limit)
    run_search(cfg, space)
    return cfg, space, Budget("gflops", limit), costs


def test_draws_in_the_band_are_new_and_inside_it(budget_study):
    cfg, space, budget, costs = budget_study
    band = (0.9, 1.0)
    expected = [c for c in costs if 0.9 * budget.limit <= c <= budget.limit]
    found = draw_in_band(space, budget, band, 64, 50, max_draws=200, seed=3)
    digests = {space.decode(p).genome_hash() for p in found}
    assert len(digests) == len(found) >= 1
    for params in found:
        assert 0.9 * budget.limit <= architecture_cost(space.decode(params), "gflops", 64) <= budget.limit
    assert {architecture_cost(space.decode(p), "gflops", 64) for p in found} <= set(expected)


def test_fill_band_queues_extra_trials_and_the_search_scores_them(budget_study):
    cfg, space, budget, _costs = budget_study
    band = (0.9, 1.0)
    before = len(band_rows(records(load(cfg).trials), budget, band, needs=()))
    new_budget = fill_band(cfg, space, budget, band, wanted=before + 2, max_draws=300)
    study = load(cfg)
    assert study.user_attrs["y7nas:budget"] == new_budget
    queued = [t for t in study.trials if t.state.name == "WAITING"]
    assert len(queued) == new_budget - 3 and 1 <= len(queued) <= 2
    summary = run_search(cfg.replace(trials=new_budget), space)     # the same study, resumed
    assert summary.complete == new_budget
    rows = records(load(cfg).trials)
    assert len(band_rows(rows, budget, band, needs=())) >= before + len(queued)
    assert fill_band(cfg, space, budget, band, wanted=1) == new_budget     # enough: nothing added


def test_band_finalists_and_the_hand_design_side_by_side(budget_study, tiny_data):
    from nas.search import hand_design_verdict

    cfg, space, budget, _costs = budget_study
    baseline = space.decode({"width": 0.25, "outputs": "conv", "p5.depth": 1, "activation": "relu"})
    lines = []
    result = train_finalists("t", cfg.results_dir, top=2, epochs=1, subset=8, img=64, threads=1,
                             band=(0.5, 1.0), baseline=baseline, baseline_name="hand", progress=lines.append)
    searched, base = result.searched, result.baseline
    rows = records(load(cfg).trials)
    assert [r["number"] for r in searched] == [r["number"] for r in choose_in_band(rows, budget, 2, (0.5, 1.0))]
    assert all(r["gflops"] <= budget.limit for r in searched) and all(r["role"] == "searched" for r in searched)
    assert base["role"] == "baseline" and base["name"] == "hand" and base["number"] is None
    assert base["gflops"] == pytest.approx(architecture_cost(baseline, "gflops", 64)) and base["init"] == "scratch"
    # measured like a trial (its zero-cost score too), so the report puts it on the study's chart
    from nas.report._data import hand_design_reference
    from nas.search._runner import Evaluator

    assert base["score"] == pytest.approx(Evaluator(cfg, 1).measure(baseline)["score"])
    assert hand_design_reference({"rows": list(result.rows)}) == {
        "hand (hand design)": {"score": base["score"], "gflops": base["gflops"], "params": base["params"]}}
    assert 0 <= base["map50_95"] <= 1 and result.rows[-1] is base
    choice = result.settings["choice"]
    assert choice["by"] == "band" and choice["budget"] == {"metric": "gflops", "limit": budget.limit}
    assert result.settings["baseline"] == "hand" and any("(hand design)" in line for line in lines)
    verdict = hand_design_verdict(result)
    best = max(searched, key=lambda r: r["map50_95"])
    assert f"{best['map50_95']:.4f}" in verdict and ("hand design won" in verdict) == (best["map50_95"] < base["map50_95"])
