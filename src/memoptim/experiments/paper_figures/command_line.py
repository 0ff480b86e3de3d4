"""``python -m memoptim.experiments.paper_figures``: the module's own command line (the same
runs as ``memoptim reproduce paper-figures``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from memoptim.experiments.paper_figures.all_artifacts import run_all

DESCRIPTION = ("The paper's real-data artifacts that fit a CPU (Figs. 9, 10, 19, Table 14 / Fig. 20), "
               "run on Fashion-MNIST beside the paper's statements.")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--out DIR`` (default ``results/benchmarks/paper-figures``), ``--quick``,
    ``--threads N`` (torch intra-op threads, default 1), ``--data-root``, ``--no-verify``."""
    p = argparse.ArgumentParser(prog="python -m memoptim.experiments.paper_figures",
                                description=DESCRIPTION)
    p.add_argument("--out", default="results/benchmarks/paper-figures")
    p.add_argument("--quick", action="store_true", help="tiny smoke-test scale")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--no-verify", action="store_true", help="skip the dataset checksum check")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    run_all(args.out, quick=args.quick, progress=not args.quiet, data_root=args.data_root,
            verify_data=not args.no_verify)  # fmt: skip
    return 0
