"""``memoptim report``: Markdown + PNG report of benchmark runs (Tables 2-4 analogues).

Example::

    memoptim report --runs results/benchmarks/study --out results/benchmarks

Reads every run directory (``config.json`` + ``summary.json`` + ``metrics.jsonl``) under
``--runs`` and writes ``<out>/report.md`` and its figures; see
:mod:`memoptim.experiments.report` for the method (mean +- std over seeds, best hyperparameters,
speed-up, significance).
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="Markdown + PNG report of benchmark runs (paper Tables 2-4 analogues)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--runs", default="runs", help="root directory of the run directories")
    p.add_argument("--out", default=None, help="output directory (default: --runs)")
    p.add_argument("--no-plots", action="store_true", help="Markdown only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memoptim.experiments.report import build_report

    path = build_report(args.runs, args.out or args.runs, plots=not args.no_plots)
    print(f"report written to {path}")
    return 0
