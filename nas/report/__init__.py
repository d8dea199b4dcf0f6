"""The study report: one self-contained HTML page per study (no network needed to open it).

Three steps, each in its own module: :mod:`~nas.report._gather` reads the study (storage and
result files) and :mod:`~nas.report._data` turns it into plain dicts (pure, tested);
:mod:`~nas.report._svg` draws the charts as inline SVG and :mod:`~nas.report._html` assembles
the page with its inline style and script (checked in a real browser by the tests).

Typical use::

    from nas.report import write_report

    path = write_report("s1")                 # results/s1/report.html
"""
from nas.report._data import chart_data, report_data, run_command
from nas.report._diff import genome_diff, nearest_preset
from nas.report._html import json_for_script, render_html
from nas.report._write import MAX_BYTES, write_report

__all__ = ["MAX_BYTES", "chart_data", "genome_diff", "json_for_script", "nearest_preset", "render_html",
           "report_data", "run_command", "write_report"]
