"""The report in a real browser: headless Chromium renders it offline; the DOM it builds holds one
table row per trial (rows are made by the page's script from the embedded JSON, so this proves
the script ran), the chart, and a hovered point's details; its screenshot is not blank.

Needs Debian's ``chromium`` (``.ci/run`` installs it as root with apt); skipped without it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nas.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; "
                                                         ".ci/run installs it when run as root)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars")


def chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium offline with a throw-away profile; its stdout."""
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def trials_tbody(dom: str) -> str:
    m = re.search(r'<table id="trials"[^>]*>.*?<tbody>(.*?)</tbody>', dom, re.S)
    assert m, "no trials table in the DOM"
    return m.group(1)


@pytest.mark.parametrize("study", ["real", "mixed"])
def test_browser_builds_one_row_per_trial_and_the_chart(study, real_study, mixed_study, tmp_path):
    results = {"real": real_study, "mixed": mixed_study}[study]
    page = write_report(study, results)
    n_trials = len((results / study / "trials.csv").read_text().strip().splitlines()) - 1
    assert "<tbody></tbody>" in page.read_text()  # the page itself ships no rows...
    dom = chromium(tmp_path, "--dump-dom", page.resolve().as_uri())
    rows = re.findall(r'<tr class="s-[a-z]+" data-n="(\d+)"', trials_tbody(dom))
    assert len(rows) == n_trials  # ...the script built them
    assert sorted(map(int, rows)) == list(range(n_trials))
    assert 'data-ready="1"' in dom
    assert re.search(r'<svg class="pareto-chart"[^>]*>', dom) and dom.count('class="pt k-') >= 1


def test_hovered_point_shows_trial_costs_and_preset_diff(real_study, tmp_path):
    page = write_report("real", real_study)
    dom = chromium(tmp_path, "--dump-dom", page.resolve().as_uri() + "#trial-0")
    tip = re.search(r'<div id="tip" class="tip"([^>]*)>(.*?)</div></div>', dom, re.S)
    assert tip and "hidden" not in tip.group(1)
    text = re.sub(r"<[^>]+>", " ", tip.group(2))
    assert "trial 0" in text and "GFLOPs:" in text and "params (M):" in text and "score:" in text
    assert re.search(r"nearest preset yolov7(-tiny|x)?: \d+ of \d+ fields differ", text)


def test_screenshot_is_not_blank(real_study, tmp_path):
    from PIL import Image

    page = write_report("real", real_study)
    png = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,2000", page.resolve().as_uri())
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 200  # text, markers, lines, tables: not a blank or single-colour page
    non_white = sum(n for n, c in colours if min(c) < 235)
    assert non_white > 0.05 * image.size[0] * image.size[1]
    # the chart's front markers (#1f6feb) were painted
    assert any(abs(c[0] - 0x1f) + abs(c[1] - 0x6f) + abs(c[2] - 0xeb) < 30 for n, c in colours if n > 20)
