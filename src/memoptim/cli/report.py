"""``memoptim report``: Markdown + PNG report of benchmark runs (Tables 2-4 analogues).

Example::

    memoptim report --runs results/benchmarks/study --out results/benchmarks --findings

Reads every run directory (``config.json`` + ``summary.json`` + ``metrics.jsonl``) under
``--runs`` and writes ``<out>/report.md``, ``<out>/verdicts.json`` and the figures; see
:mod:`memoptim.experiments.report` for the method (mean +- std over seeds, best hyperparameters,
speed-up, significance).  The runs of a task must share one setup (epochs, subsets, batch size,
schedule): runs of different setups are refused, not pooled.  ``--findings`` also writes the
"Does it help?" section of the README and the docs' Findings page from the verdicts
(:mod:`memoptim.experiments.findings`).
"""

from __future__ import annotations

import argparse
import sys
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
    p.add_argument("--findings", action="store_true",
                   help="also write the README's 'Does it help?' section and docs/findings.md from the "
                        "verdicts (run from the repository root)")
    p.add_argument("--readme", default="README.md", help="README to update with --findings")
    p.add_argument("--docs", default="docs/findings.md", help="findings page written with --findings")
    p.add_argument("--toy", default="results/toy/results.json",
                   help="toy reproduction numbers the findings cite (skipped if missing)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memoptim.experiments.report import MixedSetups, build_report

    out = args.out or args.runs
    try:
        path = build_report(args.runs, out, plots=not args.no_plots)
    except (MixedSetups, FileNotFoundError) as exc:
        print(f"memoptim report: error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    if args.findings:
        from pathlib import Path

        from memoptim.experiments.findings import write_findings

        for written in write_findings(Path(out) / "verdicts.json", args.readme, args.docs, args.toy):
            print(f"findings written to {written}")
    return 0
