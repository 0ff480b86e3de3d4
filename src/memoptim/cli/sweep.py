"""``memoptim sweep``: grid search over optimizers x hyperparameters x seeds (Optuna GridSampler).

Example (the Fashion-MNIST part of ``scripts/run_study.sh``)::

    memoptim sweep --task fashion-mnist --optimizers adam,adam+cm --seeds 0,1,2 --epochs 4 \\
        --subset 10000 --eval-subset 5000 --out results/benchmarks/runs

Interrupted?  Run the same command again: finished trials are skipped and the interrupted run
resumes from its last epoch.  ``--storage postgresql://...`` shares one sweep between machines
(default: SQLite in ``<out>/optuna.db``).  Grids: ``cpu`` (learning rate only, other
hyperparameters at the paper's defaults) or ``paper`` (Table 8); ``--param lr=0.01,0.001``
overrides one hyperparameter's values.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from memoptim.cli.train import TASK_CHOICES

DEFAULT_OPTIMIZERS = (
    "adam,adam+cg,adam+sam,adam+cm,adam+sam+cm,adamomentum,sgd,sgd+cg,sgd+cm"
)


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_param(text: str) -> tuple[str, list[Any]]:
    """``"lr=0.01,0.001"`` -> ``("lr", [0.01, 0.001])``."""
    name, sep, values = text.partition("=")
    if not sep or not name or not values:
        raise argparse.ArgumentTypeError(f"expected NAME=V1,V2,... got {text!r}")
    return name.strip().replace("-", "_"), [_value(v.strip()) for v in values.split(",")]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="grid sweep over optimizers, hyperparameters and seeds (Optuna, resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=TASK_CHOICES)
    p.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS, help="comma-separated names")
    p.add_argument("--grid", choices=("cpu", "paper"), default="cpu")
    p.add_argument("--param", action="append", type=parse_param, default=[],
                   metavar="NAME=V1,V2", help="override one hyperparameter's grid values")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--out", default="runs/sweep", help="root of the run directories")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default sqlite:///<out>/optuna.db)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--schedule", choices=("auto", "step", "constant"), default="auto")
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--eval-subset", type=int, default=None)
    p.add_argument("--diagnostics", action="store_true")
    p.add_argument("--sharpness-iters", type=int, default=20)
    p.add_argument("--data-root", default=None)
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep checkpoint.pt of finished runs (default: deleted to save space)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from memoptim.data.paths import DatasetChecksumError, DatasetNotFoundError
    from memoptim.experiments.sweep import sweep

    if args.threads:
        torch.set_num_threads(args.threads)
    train_kwargs: dict[str, Any] = {
        "batch_size": args.batch_size,
        "schedule": args.schedule,
        "subset": args.subset,
        "eval_subset": args.eval_subset,
        "diagnostics": args.diagnostics,
    }
    if args.diagnostics:
        train_kwargs["sharpness_iters"] = args.sharpness_iters
    if args.data_root:
        train_kwargs["data_root"] = args.data_root
    if args.no_verify:
        train_kwargs["verify_data"] = False
    try:
        results = sweep(
            args.task,
            [o.strip() for o in args.optimizers.split(",") if o.strip()],
            out=args.out,
            epochs=args.epochs,
            seeds=[int(s) for s in args.seeds.split(",")],
            grid=args.grid,
            overrides=dict(args.param),
            storage=args.storage,
            train_kwargs=train_kwargs,
            keep_checkpoints=args.keep_checkpoints,
        )
    except (DatasetNotFoundError, DatasetChecksumError, ValueError) as exc:
        print(f"memoptim sweep: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2))
    return 0
