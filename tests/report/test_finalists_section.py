"""The report's finalists section: how they were chosen, the hand design's row beside them and the
plain verdict; the reproduce command repeats the choice (crafted finalists.json payloads)."""
from __future__ import annotations

from nas.report._data import reproduce_commands
from nas.report._html import finalists_section


def _payload(hand_map: float | None, baseline_spec: str = "preset") -> dict:
    rows = [{"role": "searched", "name": "trial 7", "number": 7, "genome_hash": "a", "score": 0.2,
             "gflops": 0.019, "params": 600000, "init": "inherited", "map50": 0.3, "map50_95": 0.150,
             "train_s": 1.0, "on_map_front": True, "fail_reason": ""},
            {"role": "searched", "name": "trial 3", "number": 3, "genome_hash": "b", "score": 0.1,
             "gflops": 0.018, "params": 500000, "init": "inherited", "map50": 0.2, "map50_95": 0.120,
             "train_s": 1.0, "on_map_front": False, "fail_reason": ""}]
    if hand_map is not None:
        rows.append({"role": "baseline", "name": "yolov7-tiny (relu) phi=-9.10", "number": None, "genome_hash": "c",
                     "score": None, "gflops": 0.0195, "params": 700000, "init": "scratch", "map50": 0.3,
                     "map50_95": hand_map, "train_s": 1.0, "on_map_front": True, "fail_reason": ""})
    settings = {"top": 2, "epochs": 5, "img": 64, "subset": None, "data": "synthetic-large", "seed": 0,
                "threads": 2, "init_from": "results/demo/supernet.pt", "lr": 0.001,
                "choice": {"by": "band", "budget": {"metric": "gflops", "limit": 0.02}, "band": [0.85, 1.0],
                           "estimator": "score", "in_band": 11},
                "baseline": rows[-1]["name"] if hand_map is not None else None, "baseline_spec": baseline_spec}
    return {"objectives": ["score", "gflops"], "front_size": 4, "settings": settings, "rows": rows}


def _data(fin: dict) -> dict:
    return {"finalists": fin, "objectives": ["score", "gflops"], "trials": []}


def test_the_section_says_how_they_were_chosen_and_that_the_hand_design_won():
    html = finalists_section(_data(_payload(hand_map=0.170)))
    assert "2 finalist(s) from the band 0.85-1 x the budget gflops &lt;= 0.02 (11 candidates in it), best by score" in html
    assert "and the hand design (same recipe; never chosen; its init column says how it started)" in html
    assert ("The best searched finalist (trial 7, mAP@0.5:0.95 0.1500) loses to the hand design "
            "(yolov7-tiny (relu) phi=-9.10, 0.1700) by -0.0200; the hand design won this comparison.") in html
    assert html.count("<tr>") == 1 + 3           # header, two searched finalists, the hand design


def test_a_search_that_beats_the_hand_design_says_so_and_no_hand_design_says_nothing():
    assert "beats the hand design" in finalists_section(_data(_payload(hand_map=0.100)))
    html = finalists_section(_data(_payload(hand_map=None)))
    assert "hand design" not in html and html.count("<tr>") == 1 + 2


def test_the_reproduce_command_repeats_the_band_the_estimator_and_a_custom_baseline():
    stored = {"space": "yolov7-tiny-cpu", "fidelity": "oneshot", "objectives": ["score", "gflops"], "img": 64}
    line = reproduce_commands("demo", stored, 100, finalists=_payload(0.1, baseline_spec="hand.yaml"))[1]
    assert line.startswith("y7nas finalists --study demo --top 2 --epochs 5")
    assert "--band 0.85,1 --estimator score --baseline hand.yaml" in line
    line = reproduce_commands("demo", stored, 100, finalists=_payload(0.1))[1]
    assert "--baseline" not in line                 # preset: the default
