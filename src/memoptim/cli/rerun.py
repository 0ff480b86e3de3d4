"""``memoptim rerun RUN_DIR``: train a finished run again from its ``config.json`` and compare.

Example::

    memoptim rerun "results/benchmarks/study/split-fashion-mnist/adam/lr=0.0003/seed0"

The run is trained again into ``--out`` (default: a fresh directory under ``runs/rerun/``, which
git ignores) with one torch thread and the multi-tensor path, as the study's runs were; then
every per-epoch metric and every summary value is compared with the original's, timings aside
(:mod:`memoptim.experiments.rerun`).  Exit status 0 when the two are identical, 1 when they
differ (the differences are listed), 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "rerun",
        help="train a finished run again from its config.json and compare the metrics bit for bit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", help="a finished run directory (config.json, summary.json, metrics.jsonl)")
    p.add_argument("--out", default=None, help="where to train the copy (default: a fresh runs/rerun/...)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1, the study's)")
    p.add_argument("--native", action="store_true",
                   help="allow the native CPU kernel (the study's runs took the multi-tensor path)")
    p.add_argument("--sharpness-iters", type=int, default=20,
                   help="the sharpness diagnostic's budget, for runs with diagnostics (the study's "
                        "Fashion-MNIST runs used 10)")
    p.add_argument("--data-root", default=None, help="dataset directory override")
    p.add_argument("--no-verify", action="store_true", help="skip the dataset checksums")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memoptim.experiments.rerun import rerun

    if args.out is None:
        Path("runs/rerun").mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix=Path(args.run_dir).name + "-", dir="runs/rerun"))
    else:
        out = Path(args.out)
    try:
        diffs = rerun(args.run_dir, out, threads=args.threads, native=args.native,
                      data_root=args.data_root, sharpness_iters=args.sharpness_iters,
                      verify_data=not args.no_verify)
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"memoptim rerun: error: {exc}", file=sys.stderr)
        return 2
    if diffs:
        print(f"rerun in {out} DIFFERS from {args.run_dir} ({len(diffs)} differences):")
        for d in diffs:
            print(f"  {d}")
        return 1
    epochs = sum(1 for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip())
    print(f"rerun in {out} is identical to {args.run_dir}: {epochs} epochs of metrics and the summary, "
          "bit for bit (timings aside)")
    return 0
