"""``memoptim reproduce toy``: rerun the paper's toy experiments (sections 3.2 and 4).

Writes ``DIR/report.md`` (and ``report.html``) with every table and figure next to the
paper's own numbers and a plain verdict per claim, ``DIR/results.json`` with every
number, and the PNG figures under ``DIR/figures``.  By default every claim about Adam+CM is
also re-evaluated under its variants (authors' semantics, memory off, v from g, and Adam at
3x / 10x its learning rate); ``--no-variants`` skips them.  The experiment logic lives in
:mod:`memoptim.lab.reproduce`; it needs the ``lab`` extra (matplotlib, scipy, tqdm).
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys

TARGETS = ("toy",)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="reproduce the paper's experiments (toy: sections 3.2 and 4)",
        description=(
            "Reproduce the paper's toy experiments: Tables 1 and 5, Figs. 1-7, 11-14, 16, 18, "
            "with every claim about Adam+CM also checked under its variants. The full run uses "
            "the paper's settings (about 10-15 minutes on 2 CPU cores with the variants, 4 "
            "without); --quick is a smoke test with fewer seeds and steps (under a minute)."
        ),
    )
    p.add_argument("target", choices=TARGETS, help="which experiments to run")
    p.add_argument("--out", default="results/toy", metavar="DIR",
                   help="output directory (default: results/toy)")
    p.add_argument("--quick", action="store_true",
                   help="fewer seeds, starting points and steps: a smoke test (< 1 minute)")
    p.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True,
                   help="also evaluate every claim about Adam+CM under the authors' semantics, "
                        "memory off, v from g and Adam at 3x / 10x lr (default: on)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    missing = [m for m in ("matplotlib", "scipy", "tqdm") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"memoptim reproduce needs {', '.join(missing)}: pip install 'memoptim[lab]'",
              file=sys.stderr)
        return 2
    from memoptim.lab.reproduce import reproduce_toy

    command = "memoptim reproduce toy --out " + shlex.quote(str(args.out))
    if args.quick:
        command += " --quick"
    if not args.variants:
        command += " --no-variants"
    res = reproduce_toy(args.out, quick=args.quick, variants=args.variants,
                        progress=not args.no_progress, command=command)
    ok = sum(c["reproduced"] for c in res["claims"])
    print(f"{ok} of {len(res['claims'])} checked claims reproduce "
          f"({res['meta']['wall_seconds']:.0f} s)")
    for c in res["claims"]:
        print(f"  [{'yes' if c['reproduced'] else ' no'}] {c['claim']}")
    for v in res["variants"].values():
        print(f"  under {v['label']}: {v['reproduced']} of {v['applicable']} applicable claims reproduce")
    print(f"report: {args.out}/report.md   numbers: {args.out}/results.json")
    return 0
