"""``python -m analysis PATH... --out DIR``: runs under PATHs -> DIR/report.md, PNGs, CSVs.

Bad input (a path that does not exist or holds no run, an unknown grouping key or
metric) ends with one line on stderr and exit code 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys

from analysis.collect import METRICS, NoRunsError
from analysis.tables import DEFAULT_BY


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        self.exit(2, f"analysis: error: {message} (see python -m analysis --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _Parser(
        prog="python -m analysis",
        description="Collect snnbench runs (run dirs, outputs/ or multirun/ trees, sweep "
        "dirs) and write a report with comparison tables and figures.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="run dirs or folders of runs")
    p.add_argument("--out", required=True, metavar="DIR", help="where report.md and files go")
    p.add_argument(
        "--by",
        default=",".join(DEFAULT_BY),
        help="comma-separated grouping keys: run columns (model, encoding, neuron, T, beta, "
        "lr, seed, dataset, engine, readout, optimizer, batch_size) or config.<key> "
        f"(default: {','.join(DEFAULT_BY)})",
    )
    p.add_argument(
        "--metric",
        default="test_acc",
        help=f"metric of tables and figures: {', '.join(METRICS)} (default: test_acc)",
    )
    p.add_argument("--study-name", default=None, help="Optuna study in optuna.db files")
    p.add_argument("--raster-run", default=None, metavar="RUN_DIR", help="run for the raster")
    p.add_argument("--digits", type=int, default=4, help="test digits in the raster (4)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    by = [k.strip() for k in args.by.split(",") if k.strip()]
    if not by:
        print("analysis: error: --by needs at least one key", file=sys.stderr)
        return 2
    if args.digits < 1:
        print("analysis: error: --digits must be >= 1", file=sys.stderr)
        return 2
    from analysis.report import write_report

    try:
        report = write_report(
            args.paths,
            args.out,
            by=by,
            metric=args.metric,
            study_name=args.study_name,
            raster_run=args.raster_run,
            n_digits=args.digits,
        )
    except (NoRunsError, ValueError) as exc:
        print(f"analysis: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
