"""``memoptim train``: one real-data benchmark run (issue 5).

Example::

    memoptim train --task fashion-mnist --optimizer adam+cm --lr 1e-4 --epochs 1 --out runs/fm
    memoptim train --task fashion-mnist --optimizer adam+cm --lr 1e-4 --epochs 1 --out runs/fm --resume

Writes ``metrics.jsonl`` (one JSON line per epoch), ``checkpoint.pt`` (after every epoch),
``config.json`` and ``summary.json`` in ``--out``; see :mod:`memoptim.experiments.train`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

TASK_CHOICES = ("fashion-mnist", "brown-lm", "split-fashion-mnist", "permuted-fashion-mnist")

#: CLI flag -> hyperparameter name (see memoptim.experiments.train.HYPERPARAMETERS)
HP_FLAGS: dict[str, tuple[str, type, str]] = {
    "--lr": ("lr", float, "learning rate (alpha)"),
    "--beta1": ("beta1", float, "Adam beta1"),
    "--beta2": ("beta2", float, "Adam beta2"),
    "--eps": ("eps", float, "Adam epsilon"),
    "--momentum": ("momentum", float, "SGD momentum"),
    "--dampening": ("dampening", float, "SGD dampening"),
    "--weight-decay": ("weight_decay", float, "weight decay"),
    "--buffer-size": ("buffer_size", int, "critical buffer capacity C (CG/CM)"),
    "--decay": ("decay", float, "priority-key decay lambda (CG/CM)"),
    "--rho": ("rho", float, "SAM neighbourhood radius rho"),
}


def add_hyperparameter_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the optimizer hyperparameter flags (unset ones keep the optimizer's defaults)."""
    group = parser.add_argument_group("optimizer hyperparameters (default: the optimizer's)")
    for flag, (dest, typ, text) in HP_FLAGS.items():
        group.add_argument(
            flag, dest=f"hp_{dest}", metavar=dest.upper(), type=typ, default=None, help=text
        )
    group.add_argument(
        "--adaptive", dest="hp_adaptive", action="store_true", default=None,
        help="adaptive SAM (ASAM)",
    )  # fmt: skip


def hyperparameters_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The hyperparameters given on the command line (flat names)."""
    return {
        k[3:]: v for k, v in vars(args).items() if k.startswith("hp_") and v is not None
    }


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on a real-data benchmark (Fashion-MNIST, Brown LM, task streams)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, choices=TASK_CHOICES)
    p.add_argument(
        "--optimizer", required=True,
        help="adam, adamw, sgd, adam+cg, adam+cm, sgd+cg, sgd+cm, adam+sam, adam+sam+cm, adamomentum",
    )  # fmt: skip
    add_hyperparameter_arguments(p)
    p.add_argument("--epochs", type=int, default=1, help="epochs (streams: per task); default 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/<task>/<opt>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 images, 20 sequences for the LM")
    p.add_argument(
        "--schedule", choices=("auto", "step", "constant"), default="auto",
        help="auto: step (LR/10 at mid-training, the paper's) for supervised tasks, "
        "constant for the online streams",
    )  # fmt: skip
    p.add_argument("--subset", type=int, default=None, help="use only N training examples/tokens")
    p.add_argument(
        "--eval-subset", type=int, default=None, help="use only N validation and test examples"
    )
    p.add_argument("--data-root", default=None, help="the dataset's directory (overrides default)")
    p.add_argument("--no-verify", action="store_true", help="skip the dataset checksum check")
    p.add_argument("--diagnostics", action="store_true",
                   help="log sharpness, distance travelled and buffer statistics every epoch")
    p.add_argument("--sharpness-iters", type=int, default=20)
    p.add_argument("--tensorboard", action="store_true",
                   help="also log to <out>/tensorboard (needs the tensorboard package)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from memoptim.data.paths import DatasetChecksumError, DatasetNotFoundError
    from memoptim.experiments.train import train

    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or f"runs/{args.task}/{args.optimizer}-s{args.seed}"
    try:
        summary = train(
            args.task,
            args.optimizer,
            hyperparameters_from_args(args),
            args.epochs,
            args.seed,
            out,
            resume=args.resume,
            batch_size=args.batch_size,
            schedule=args.schedule,
            subset=args.subset,
            eval_subset=args.eval_subset,
            data_root=args.data_root,
            verify_data=not args.no_verify,
            progress=not args.no_progress,
            tensorboard=args.tensorboard,
            diagnostics=args.diagnostics,
            sharpness_iters=args.sharpness_iters,
        )
    except (DatasetNotFoundError, DatasetChecksumError, FileExistsError, ValueError) as exc:
        print(f"memoptim train: error: {exc}", file=sys.stderr)
        return 2
    shown = {k: v for k, v in summary.items() if k not in ("config", "resolved", "accuracy_matrix")}
    print(json.dumps(shown))
    print(f"run directory: {out}")
    return 0
