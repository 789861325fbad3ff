"""Analysis of snnbench runs: collect run folders, compare, plot, report.

``collect(paths)`` reads every run (a folder with ``metrics.json``) under the paths;
:mod:`analysis.tables` builds comparison tables, :mod:`analysis.figures` the PNGs, and
``python -m analysis PATH... --out DIR`` writes all of it as ``DIR/report.md``.
"""

from analysis.collect import Collection, NoRunsError, Problem, collect
from analysis.report import write_report
from analysis.tables import compare, format_compare, study_table, to_latex, to_markdown

__all__ = [
    "Collection",
    "NoRunsError",
    "Problem",
    "collect",
    "compare",
    "format_compare",
    "study_table",
    "to_latex",
    "to_markdown",
    "write_report",
]
