"""Pareto front, hypervolume and the plot's data step, against brute-force / hand-computed oracles."""
from __future__ import annotations

import itertools
import random

import pytest

from nas.search import hypervolume_2d, pareto_front, pareto_plot_data, pareto_rows
from nas.search._results import columns, csv_text


def brute_force_front(points, directions):
    """Definition-level oracle: i is on the front iff no j is <= everywhere and < somewhere."""
    sign = [(-1 if d == "maximize" else 1) for d in directions]
    front = []
    for i, p in enumerate(points):
        dominated = False
        for j, q in enumerate(points):
            if i == j:
                continue
            le = all(s * a <= s * b for a, b, s in zip(q, p, sign))
            lt = any(s * a < s * b for a, b, s in zip(q, p, sign))
            if le and lt:
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("directions", [("maximize", "minimize"), ("minimize", "minimize"),
                                        ("maximize", "minimize", "minimize")])
def test_front_matches_brute_force(seed, directions):
    rng = random.Random(seed)
    # few distinct values → many ties and exact duplicates
    points = [[rng.randint(0, 6) for _ in directions] for _ in range(rng.randint(1, 60))]
    assert pareto_front(points, directions) == brute_force_front(points, directions)


def test_front_small_hand_case():
    pts = [(10, 5), (9, 4), (10, 6), (8, 8), (11, 9), (9, 4)]
    # maximize score, minimize latency: (10,5) beats (10,6); (11,9) top score; (9,4) twice fastest
    assert pareto_front(pts, ("maximize", "minimize")) == [0, 1, 4, 5]


def test_hypervolume_hand_computed():
    # minimize both, reference (4, 4): points (1,3), (2,2), (3,1) → staircase area 1*1+2*1+3*1 = 6
    assert hypervolume_2d([(1, 3), (2, 2), (3, 1)], (4, 4), ("minimize", "minimize")) == pytest.approx(6)
    # a dominated point and one outside the reference add nothing
    assert hypervolume_2d([(1, 3), (2, 2), (3, 1), (3, 3), (5, 0)], (4, 4),
                          ("minimize", "minimize")) == pytest.approx(6)
    # maximize the first: score 3 at cost 1 vs reference score 0, cost 2 → 3 * 1
    assert hypervolume_2d([(3, 1)], (0, 2), ("maximize", "minimize")) == pytest.approx(3)


def test_hypervolume_equals_union_of_boxes_brute_force():
    rng = random.Random(7)
    pts = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(15)]
    ref = (10, 10)
    cells = {(x, y) for px, py in pts for x, y in itertools.product(range(px, 10), range(py, 10))}
    assert hypervolume_2d(pts, ref, ("minimize", "minimize")) == pytest.approx(len(cells))


def _row(number, state="COMPLETE", score=1.0, latency=1.0, feasible=True, duplicate_of=""):
    return {"number": number, "state": state, "score": score, "latency_ms": latency, "params": 1000,
            "gflops": 0.1, "feasible": feasible, "duplicate_of": duplicate_of, "genome_hash": f"h{number}"}


def test_pareto_rows_keep_only_complete_feasible_unique_candidates():
    rows = [
        _row(0, score=5, latency=5),
        _row(1, score=6, latency=9),
        _row(2, score=9, latency=1, feasible=False),      # would dominate all: infeasible, excluded
        _row(3, state="FAIL", score=float("nan")),
        _row(4, score=6, latency=9, duplicate_of=1),      # same architecture as 1
        _row(5, score=4, latency=6),                      # dominated by 0
        _row(6, score=3, latency=2),
    ]
    front = pareto_rows(rows, ("score", "latency_ms"))
    assert [r["number"] for r in front] == [1, 0, 6]  # sorted by score, best first
    candidates = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"] and not r["duplicate_of"]]
    oracle = brute_force_front([(r["score"], r["latency_ms"]) for r in candidates], ("maximize", "minimize"))
    assert sorted(r["number"] for r in front) == sorted(candidates[i]["number"] for i in oracle)


def test_plot_data_marks_front_infeasible_and_fitting_presets():
    rows = [_row(0, score=5, latency=5), _row(1, score=6, latency=9), _row(2, score=9, latency=1, feasible=False),
            _row(3, state="FAIL"), _row(5, score=4, latency=6)]
    refs = {"inside": {"score": 5.5, "latency_ms": 4.0}, "far": {"score": 100.0, "latency_ms": 400.0},
            "partial": {"params": 5}}
    data = pareto_plot_data(rows, ("score", "latency_ms"), refs, title="t")
    assert [p.number for p in data.points] == [0, 1, 2, 5]                  # COMPLETE only
    assert {p.number for p in data.points if p.on_front} == {0, 1}
    assert [p.number for p in data.front] == [0, 1] and data.front[0].x <= data.front[1].x
    assert [p.feasible for p in data.points] == [True, True, False, True]
    assert [r.name for r in data.references] == ["inside"]
    assert data.x_label.startswith("score") and data.y_label.startswith("latency")
    lo, hi = data.x_range
    assert lo < 4 and hi > 9


def test_plot_data_single_objective_uses_trial_number():
    data = pareto_plot_data([_row(0, score=2), _row(1, score=3)], ("score",), {})
    assert data.x_label == "trial number" and [p.x for p in data.points] == [0.0, 1.0]
    assert [p.number for p in data.front] == [1]


def test_draw_writes_a_png(tmp_path):
    from nas.search import draw_pareto

    data = pareto_plot_data([_row(0, score=5, latency=5), _row(1, score=6, latency=9)], ("score", "latency_ms"),
                            {"p": {"score": 5.5, "latency_ms": 6}})
    png = draw_pareto(data, tmp_path / "p.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "p.png").read_bytes() == png


def test_csv_columns_order_and_params():
    rows = [{**_row(0), "naswot": 3.0, "param:width": 0.5}, {**_row(1), "param:outputs": "conv"}]
    header = columns(rows)
    assert header[:6] == ["number", "state", "score", "params", "gflops", "latency_ms"]
    assert header.index("naswot") < header.index("feasible") < header.index("param:width")
    text = csv_text(rows, header)
    assert text.splitlines()[0] == ",".join(header)
