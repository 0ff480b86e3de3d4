"""``memoptim reproduce TARGET``: rerun one group of the paper's experiments.

``toy`` (sections 3.2 and 4): writes ``DIR/report.md`` (and ``report.html``) with every table
and figure next to the paper's own numbers and a plain verdict per claim, ``DIR/results.json``
with every number, and the PNG figures under ``DIR/figures``.  By default every claim about
Adam+CM is also re-evaluated under its variants (authors' semantics, memory off, v from g, and
Adam at 3x / 10x its learning rate); ``--no-variants`` skips them.  The experiment logic lives in
:mod:`memoptim.lab.reproduce`; it needs the ``lab`` extra (matplotlib, scipy).

``paper-figures`` (the real-data sensitivity figures: Figs. 9, 10, 19, Table 14 / Fig. 20 on
Fashion-MNIST, :mod:`memoptim.experiments.paper_figures`): trains the runs missing under ``DIR``
(finished runs are reused, so an interrupted invocation resumes), then writes ``DIR/report.md``,
``DIR/results.json`` and one PNG per artifact.  Needs matplotlib and the Fashion-MNIST data.

Options that belong to one target only (``--variants`` / ``--no-variants`` for ``toy``;
``--threads``, ``--data-root``, ``--no-verify`` for ``paper-figures``) are refused for the other
with a one-line error (status 2) rather than silently ignored.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from pathlib import Path

from memoptim.cli.common import fail

TARGETS = ("toy", "paper-figures")
#: default output directory of each target; toy's is git-ignored (/runs/), so that a rerun never
#: overwrites the committed results/toy (that takes an explicit ``--out results/toy``)
DEFAULT_OUT = {"toy": "runs/toy", "paper-figures": "results/benchmarks/paper-figures"}
#: options of one target only (their default is None, so that giving one is seen):
#: destination -> (flag as written, target)
TARGET_ONLY = {
    "variants": ("--variants/--no-variants", "toy"),
    "threads": ("--threads", "paper-figures"),
    "data_root": ("--data-root", "paper-figures"),
    "no_verify": ("--no-verify", "paper-figures"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="reproduce the paper's experiments (toy: sections 3.2 and 4; paper-figures: "
             "Figs. 9, 10, 19, Table 14 on Fashion-MNIST)",
        description=(
            "toy: the paper's toy experiments, Tables 1 and 5, Figs. 1-7, 11-14, 16, 18, with "
            "every claim about Adam+CM also checked under its variants; the full run uses the "
            "paper's settings (about 10-15 minutes on 2 CPU cores with the variants, 4 without). "
            "paper-figures: the real-data sensitivity figures (Figs. 9, 10, 19, Table 14 / "
            "Fig. 20) at CPU scale on Fashion-MNIST, about 40 CPU minutes on one thread; finished "
            "runs under --out are reused. --quick is a smoke test for either (about a minute). "
            "An option of one target only is refused for the other."
        ),
    )  # fmt: skip
    p.add_argument("target", choices=TARGETS, help="which experiments to run")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default: runs/toy, git-ignored; "
                        "results/benchmarks/paper-figures)")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="fewer seeds, examples and steps: a smoke test (about a minute)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (bars, or one line per phase when not in a terminal)")
    toy = p.add_argument_group("toy only")
    toy.add_argument("--variants", action=argparse.BooleanOptionalAction, default=None,
                     help="also evaluate every claim about Adam+CM under the authors' semantics, "
                          "memory off, v from g and Adam at 3x / 10x lr (default: on)")  # fmt: skip
    pf = p.add_argument_group("paper-figures only")
    pf.add_argument("--threads", type=int, default=None, metavar="N",
                    help="torch intra-op threads (default 1, as for the committed runs)")
    pf.add_argument("--data-root", default=None, help="the dataset's directory (overrides default)")
    pf.add_argument("--no-verify", action="store_true", default=None,
                    help="skip the dataset checksum check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options against the target, then run it; returns the exit status."""
    for dest, (flag, target) in TARGET_ONLY.items():
        if args.target != target and getattr(args, dest) is not None:  # None: not given
            print(f"memoptim reproduce {args.target}: error: {flag} applies to "
                  f"`memoptim reproduce {target}` only", file=sys.stderr)  # fmt: skip
            return 2
    if args.out is None:
        args.out = DEFAULT_OUT[args.target]
    if args.target == "toy":
        return _run_toy(args)
    return _run_paper_figures(args)


def _missing(modules: tuple[str, ...]) -> bool:
    """Print the install hint and return True if any of ``modules`` is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        fail("reproduce", f"this command needs the optional package(s) {', '.join(missing)}, which "
                          "are not installed: pip install 'memoptim[lab]'")
    return bool(missing)


def _run_toy(args: argparse.Namespace) -> int:
    if _missing(("matplotlib", "scipy")):
        return 2
    from memoptim.lab.reproduce import reproduce_toy

    variants = args.variants is not False
    command = "memoptim reproduce toy --out " + shlex.quote(str(args.out))
    if args.quick:
        command += " --quick"
    if not variants:
        command += " --no-variants"
    res = reproduce_toy(args.out, quick=args.quick, variants=variants,
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


def _run_paper_figures(args: argparse.Namespace) -> int:
    if _missing(("matplotlib",)):
        return 2
    if args.threads is not None and args.threads < 1:
        print("memoptim reproduce paper-figures: error: --threads must be >= 1", file=sys.stderr)
        return 2
    import json

    import torch

    from memoptim.data.paths import DatasetChecksumError, DatasetNotFoundError
    from memoptim.experiments.paper_figures import run_all

    torch.set_num_threads(args.threads or 1)
    try:
        run_all(args.out, quick=args.quick, progress=not args.no_progress,
                data_root=args.data_root, verify_data=not args.no_verify)  # fmt: skip
    except (DatasetNotFoundError, DatasetChecksumError) as exc:
        print(f"memoptim reproduce paper-figures: error: {exc}", file=sys.stderr)
        return 2
    results = json.loads((Path(args.out) / "results.json").read_text())
    for artifact, res in results["artifacts"].items():
        for key, verdict in res.items():  # "verdict", or "verdict_<aspect>" for two claims
            if key.startswith("verdict"):
                aspect = key.removeprefix("verdict").replace("_", " ")
                print(f"  {artifact}{aspect}: {verdict}")
    print(f"report: {args.out}/report.md   numbers: {args.out}/results.json")
    return 0
