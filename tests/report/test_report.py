"""The HTML report's content, read back from the page (no browser needed): one entry per trial,
the front, infeasible / pruned / failed trials, finalists, family and pruning as the result files
say; every string escaped; nothing fetched from outside; the CLI command and its guard."""
from __future__ import annotations

import collections
import csv
import html
import json
import re
from pathlib import Path
from urllib.parse import unquote

from typer.testing import CliRunner

from cli import app
from nas.presets import PRESETS
from nas.report import genome_diff, nearest_preset, render_html, write_report
from nas.report._gather import gather
from tests.report.conftest import HOSTILE

runner = CliRunner()


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def embedded(page: str) -> dict:
    """The JSON the page's script reads."""
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert m, "no embedded data block"
    return json.loads(m.group(1))


def test_real_study_report_matches_the_result_files(real_study):
    path = write_report("real", real_study)
    study_dir = real_study / "real"
    assert path == study_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    data = embedded(page)
    trials = csv_rows(study_dir / "trials.csv")
    assert [t["number"] for t in data["trials"]] == [int(r["number"]) for r in trials]

    # the chart: every COMPLETE trial, the front of pareto.csv, infeasible ones marked, the limit line
    kinds = {p["n"]: p["kind"] for p in data["chart"]["points"]}
    front = {int(r["number"]) for r in csv_rows(study_dir / "pareto.csv")}
    assert {n for n, k in kinds.items() if k == "front"} == front
    infeasible = {int(r["number"]) for r in trials if r["feasible"] == "False"}
    assert infeasible and {n for n, k in kinds.items() if k == "infeasible"} == infeasible
    assert data["chart"]["limits"] == [{"axis": "y", "value": 0.006, "label": "limit 0.006"}]
    assert page.count('class="pt k-infeasible"') == len(infeasible)
    assert page.count('class="limit"') == 1

    # settings and reproduce commands
    settings = dict(data["settings"])
    assert settings["search space"] == "small" and settings["constraints"] == "gflops ≤ 0.006"
    assert data["commands"][0].startswith("y7nas search --space small --trials 8 --study real ")
    assert "--max-gflops 0.006" in data["commands"][0]
    assert data["commands"][1].startswith("y7nas finalists --study real --top 2 --epochs 1 --img 64 --subset 8")

    # nearest preset of every trial, with its differing fields
    diff = data["trials"][0]["diff"]
    assert diff["preset"] in PRESETS and diff["differ"] == len(diff["changes"]) + diff["widths_differ"] > 0

    # finalists and family exactly as their files; links point at files that exist
    assert [int(r["number"]) for r in csv_rows(study_dir / "finalists.csv")] == \
        [r["number"] for r in data["finalists"]["rows"]]
    assert page.count("<tr>", page.index('id="finalists-table"'), page.index('id="family"')) == 1 + 2
    family = csv_rows(study_dir / "family" / "family.csv")
    assert [r["phi"] for r in data["family"]["rows"]] == [int(r["phi"]) for r in family]
    hrefs = re.findall(r'href="([^"#][^"]*)"', page)
    hrefs += [link for t in data["trials"] for link in t["links"].values()]
    assert any(h.startswith("models/trial_") and h.endswith(".yaml") for h in hrefs)
    assert any(h.startswith("family/") for h in hrefs)
    for h in hrefs:
        assert (study_dir / unquote(h)).is_file(), h
    onnx = list((study_dir / "models").glob("*.onnx"))
    assert len([t for t in data["trials"] if "onnx" in t["links"]]) == len(onnx)


def test_pruned_and_failed_trials_are_counted_and_marked(mixed_study):
    page = write_report("mixed", mixed_study).read_text(encoding="utf-8")
    data = embedded(page)
    trials = csv_rows(mixed_study / "mixed" / "trials.csv")
    pruned = [r for r in trials if r["state"] == "PRUNED"]
    failed = [r for r in trials if r["state"] == "FAIL"]
    assert pruned and failed
    by_epoch = collections.Counter(int(r["pruned_at"]) for r in pruned)
    assert data["pruning"]["by_epoch"] == [[e, n] for e, n in sorted(by_epoch.items())]
    assert data["pruning"]["constraint_skipped"] == by_epoch[0] > 0 and set(by_epoch) != {0}
    saved = json.loads((mixed_study / "mixed" / "pruning.json").read_text())
    assert data["pruning"]["saved_s"] == saved["saved_s"]
    status = collections.Counter(t["status"] for t in data["trials"])
    assert status["pruned"] == len(pruned) and status["failed"] == len(failed)
    # every pruned and failed trial is on the chart: a point (partial score) or a mark at its cost
    marked = {p["n"]: p for p in data["chart"]["points"] if p["kind"] in ("pruned", "failed")}
    assert set(marked) == {int(r["number"]) for r in pruned + failed}
    assert any(p.get("rug") == "y" for p in marked.values()) and any("rug" not in p for p in marked.values())
    # the hostile failure message is data, never markup
    assert HOSTILE not in page
    assert {t["fail_reason"] for t in data["trials"] if t["status"] == "failed"} == {f"synthetic failure {HOSTILE}"}


def test_every_string_is_escaped_and_nothing_is_fetched(mixed_study):
    data = gather("mixed", mixed_study, mixed_study / "mixed")
    data["study"] = HOSTILE
    data["settings"].append([HOSTILE, HOSTILE])
    data["commands"].append(f"y7nas report --study '{HOSTILE}'")
    data["trials"][0]["diff"]["changes"].append(HOSTILE)
    data["trials"][0]["links"] = {"yaml": f'models/{HOSTILE}.yaml'}
    data["chart"]["title"] = HOSTILE
    page = render_html(data)
    assert HOSTILE not in page and "<img" not in page
    assert html.escape(HOSTILE) in page  # title, heading, settings, chart title
    assert page.count("</script>") == 2  # the data block and the script, nothing closed early
    assert embedded(page) == json.loads(json.dumps(data))
    # self-contained: no URL with a scheme anywhere, nothing loaded by src, only relative or #anchor links
    assert "http://" not in page and "https://" not in page
    tags = parse_tags(page)
    assert {t for t, _ in tags} & {"img", "iframe", "link", "object", "embed", "image", "use"} == set()
    assert all(name != "src" and not name.endswith("href") or name == "href" for _, attrs in tags for name, _ in attrs)
    hrefs = [v for _, attrs in tags for name, v in attrs if name == "href"]
    assert hrefs and all(not re.match(r"[a-z][a-z0-9+.-]*:|//", h, re.I) for h in hrefs)
    assert "@import" not in page and "url(" not in page


def parse_tags(page: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(tag, attributes) of every start tag, as a browser's tokenizer reads them."""
    from html.parser import HTMLParser

    found = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, [(k, v or "") for k, v in attrs]))

    Tags().feed(page)
    return found


def test_report_size_is_small(real_study, mixed_study):
    for study, where in (("real", real_study), ("mixed", mixed_study)):
        size = write_report(study, where).stat().st_size
        assert 10_000 < size < 400_000, (study, size)


def test_genome_diff_against_the_presets():
    tiny = PRESETS["yolov7-tiny"]
    same = genome_diff(tiny, tiny)
    assert same["differ"] == 0 and same["changes"] == [] and same["width_ratio"] == [1.0, 1.0]
    deeper = tiny.replace_at("stages[3].elan.depth", 4)
    near = nearest_preset(deeper, PRESETS)
    assert near["preset"] == "yolov7-tiny" and near["differ"] == 1
    assert near["changes"] == ["stages[3].elan.depth: 2 → 4"]
    narrow = tiny.map_fields(lambda _path, w: max(8, w // 2))
    half = genome_diff(narrow, tiny)
    assert half["changes"] == [] and half["widths_differ"] == half["differ"] > 20
    assert half["width_ratio"] == [0.5, 0.5]
    # the class count and anchors never count as a difference
    assert genome_diff(tiny.replace(nc=3), tiny)["differ"] == 0
    assert nearest_preset(PRESETS["yolov7x"].replace(nc=5), PRESETS)["preset"] == "yolov7x"


def test_cli_report_writes_the_page_and_bad_input_is_one_line(real_study, tmp_path):
    out = tmp_path / "elsewhere" / "r.html"
    result = runner.invoke(app, ["report", "--study", "real", "--results-dir", str(real_study), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"report: {out}" in result.output
    data = embedded(out.read_text(encoding="utf-8"))
    links = [link for t in data["trials"] for link in t["links"].values()]
    assert links and all((out.parent / unquote(h)).resolve().is_file() for h in links)  # relative to -o

    result = runner.invoke(app, ["report", "--study", "ghost", "--results-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no study database at" in result.output
    result = runner.invoke(app, ["report", "--study", "real", "--results-dir", str(real_study), "-o", str(tmp_path)])
    assert result.exit_code == 1 and "is a folder; give a file name for the report" in result.output
    for r in (result,):
        assert "Traceback" not in r.output and r.output.count("error:") == 1


def test_a_broken_result_file_is_one_line(real_study, tmp_path):
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(real_study, copy)
    (copy / "real" / "finalists.json").write_text("{not json")
    result = runner.invoke(app, ["report", "--study", "real", "--results-dir", str(copy)])
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert "finalists.json: not valid JSON (line 1" in result.output and "Traceback" not in result.output


def test_search_writes_the_report_and_a_report_failure_keeps_the_results(tmp_path):
    common = ["--space", "yolov7-tiny", "--trials", "2", "--objectives", "gflops,params", "--fidelity", "flops",
              "--img", "64", "--threads", "1", "--results-dir", str(tmp_path)]
    result = runner.invoke(app, ["search", "--study", "ok", *common])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ok" / "report.html").is_file() and "report: " in result.output

    (tmp_path / "bad" / "report.html").mkdir(parents=True)  # the report cannot be written there
    result = runner.invoke(app, ["search", "--study", "bad", *common])
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: report not written:") == 1 and "is a folder" in result.output
    assert len(csv_rows(tmp_path / "bad" / "trials.csv")) == 2 and (tmp_path / "bad" / "pareto.csv").is_file()


def test_settings_and_commands_follow_the_stored_study():
    from nas.report._data import reproduce_commands, settings_rows

    stored = {"version": 1, "space": "yolov7-tiny", "objectives": ["score", "latency_ms"], "fidelity": "proxy",
              "img": 320, "data": "synthetic", "constraints": {"latency_ms": 20.0, "params": 3e6},
              "device": "cpu", "latency_runs": 10, "latency_warmup": 3, "proxy_epochs": 5, "proxy_subset": 256,
              "proxy_img": 160, "prune": False, "prune_eta": 3, "prune_min_epoch": 1, "sampler": "nsga2",
              "seed": 0, "supernet": None,
              "latency": {"backend": "onnxruntime", "threads": 2, "device": "cpu"}}
    rows = dict(settings_rows(stored, budget=40, storage="postgresql+psycopg://u:***@h/db"))
    assert rows["constraints"] == "latency_ms ≤ 20, params ≤ 3M" and rows["pruning"] == "off"
    assert rows["latency runs (median of)"] == "10" and rows["storage"].endswith("@h/db")
    assert rows["latency measurement"] == "backend=onnxruntime, threads=2, device=cpu"
    assert "supernet" not in rows and "version" not in rows
    search = reproduce_commands("s1", stored, 40, results_dir="out")[0]
    assert search.startswith("y7nas search --space yolov7-tiny --trials 40 --study s1 --objectives score,latency_ms "
                             "--fidelity proxy --sampler nsga2 --seed 0 --img 320 --data synthetic")
    for flag in ("--max-latency 20", "--max-params 3", "--proxy-img 160", "--no-prune", "--latency-backend onnxruntime",
                 "--latency-threads 2", "--results-dir out"):
        assert flag in search
    # a value with spaces or shell characters is quoted
    assert "--data '/my data/d.yaml'" in reproduce_commands("s1", {**stored, "data": "/my data/d.yaml"}, 40)[0]


def test_one_objective_chart_plots_score_against_trial_number():
    from nas.report import chart_data

    rows = [{"number": i, "state": s, "score": v, "feasible": True, "duplicate_of": ""}
            for i, (s, v) in enumerate([("COMPLETE", 1.0), ("COMPLETE", 3.0), ("PRUNED", 0.5), ("FAIL", "")])]
    chart = chart_data(rows, ["score"], {})
    assert chart["x_key"] == "number" and chart["x_label"] == "trial number"
    assert [(p["n"], p["x"], p["y"], p["kind"]) for p in chart["points"]] == \
        [(0, 0.0, 1.0, "complete"), (1, 1.0, 3.0, "front"), (2, 2.0, 0.5, "pruned")]
    assert chart["unplotted"] == {"pruned": 0, "failed": 1}
