"""``memoptim train``: one real-data benchmark run.

Example::

    memoptim train --task fashion-mnist --optimizer adam+cm --lr 1e-4 --epochs 1 --out runs/fm
    memoptim train --task fashion-mnist --optimizer adam+cm --lr 1e-4 --epochs 1 --out runs/fm --resume

Writes ``metrics.jsonl`` (one JSON line per epoch), ``checkpoint.pt`` (after every epoch),
``config.json`` and ``summary.json`` in ``--out``; see :mod:`memoptim.experiments.train`.

Data-parallel (DDP, gloo on CPU; ``--nproc N`` re-runs the command under ``torchrun
--standalone --nproc_per_node N``, each rank training on its share of every global batch)::

    memoptim train --task fashion-mnist --optimizer adam+cm --lr 1e-4 --out runs/fm2 --nproc 2
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from memoptim.cli.common import (
    HelpFormatter,
    fail,
    new_directories,
    non_negative_int,
    optimizer_name,
    optimizer_names,
    positive_int,
    remove_if_empty,
)

TASK_CHOICES = ("fashion-mnist", "brown-lm", "gpt-brown", "split-fashion-mnist", "permuted-fashion-mnist")

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


@functools.cache
def takes(optimizer: str) -> frozenset[str]:
    """The flat hyperparameters (``HYPERPARAMETERS``) that the registry's ``optimizer`` accepts:
    those whose keyword its ``defaults`` hold (``beta1`` / ``beta2``: ``betas``)."""
    import torch

    from memoptim.experiments.train import HYPERPARAMETERS
    from memoptim.registry import create_optimizer

    defaults = create_optimizer(optimizer, [torch.zeros(1, requires_grad=True)]).defaults
    return frozenset(h for h in HYPERPARAMETERS if ("betas" if h in ("beta1", "beta2") else h) in defaults)


def hyperparameter_error(optimizer: str, hyperparameters: Mapping[str, Any]) -> str | None:
    """One line saying why ``hyperparameters`` cannot go to ``optimizer`` (one it does not take, a
    learning rate <= 0, a value its constructor refuses), or None."""
    import torch

    from memoptim.experiments.train import build_optimizer

    for name in hyperparameters:
        if name not in takes(optimizer):
            users = [o for o in optimizer_names() if name in takes(o)]
            return f"{optimizer} takes no {name} (it applies to: {', '.join(users)})"
    lr = hyperparameters.get("lr")
    if lr is not None and not lr > 0:
        return f"lr must be > 0, got {lr:g}"
    try:
        build_optimizer(optimizer, [torch.zeros(1, requires_grad=True)], hyperparameters)
    except (ValueError, TypeError) as exc:
        return f"{optimizer}: {exc}"
    return None


#: help of ``--m-sharpness-batches`` (train and sweep)
M_SHARPNESS_HELP = (
    "also log the m-sharpness (paper eq. 15, radius 0.05, m = the batch size) averaged over N "
    "fixed training mini-batches every epoch; N > 0 turns --diagnostics on (default 0: off)"
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model on a real-data benchmark (Fashion-MNIST, Brown LM, GPT on Brown, task streams)",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--task", required=True, choices=TASK_CHOICES)
    p.add_argument(
        "--optimizer", required=True, type=optimizer_name, metavar="NAME",
        help=f"one of: {', '.join(optimizer_names())}",
    )  # fmt: skip
    add_hyperparameter_arguments(p)
    p.add_argument("--epochs", type=positive_int, default=1, help="epochs (streams: per task); default 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/<task>/<opt>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="default: 32 images, 20 sequences for the LM, 16 for gpt-brown")
    p.add_argument(
        "--schedule", choices=("auto", "step", "constant", "warmup-cosine"), default="auto",
        help="auto: step (LR/10 at mid-training, the paper's) for supervised tasks, "
        "constant for the online streams, warmup-cosine (per step: 5%% warm-up, cosine to 10%%) "
        "for gpt-brown",
    )  # fmt: skip
    p.add_argument("--subset", type=positive_int, default=None, metavar="N",
                   help="use only N training examples/tokens")
    p.add_argument("--eval-subset", type=positive_int, default=None, metavar="N",
                   help="use only N validation and test examples")
    p.add_argument("--data-root", default=None, help="the dataset's directory (overrides default)")
    p.add_argument("--no-verify", action="store_true", help="skip the dataset checksum check")
    p.add_argument("--diagnostics", action="store_true",
                   help="log sharpness, distance travelled and buffer statistics every epoch")
    p.add_argument("--sharpness-iters", type=non_negative_int, default=20)
    p.add_argument("--m-sharpness-batches", type=non_negative_int, default=0, metavar="N",
                   help=M_SHARPNESS_HELP)
    p.add_argument("--tensorboard", action="store_true",
                   help="also log to <out>/tensorboard (needs the tensorboard package)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (a bar in a terminal, one line per epoch otherwise)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch intra-op threads (default with --nproc > 1: 1 per rank)")
    p.add_argument("--nproc", type=positive_int, default=1,
                   help="data-parallel processes (DDP over gloo, launched with torchrun); default 1")
    p.set_defaults(func=run)


def _torchrun(nproc: int) -> int:
    """Re-run this command under ``torch.distributed.run`` with ``nproc`` local ranks."""
    argv = sys.argv[1:]
    if "train" not in argv:
        return fail("train", "--nproc > 1 needs the command line (sys.argv) of `memoptim train ...`")
    # drop --nproc: torch.distributed.run's parser would take it for its --nproc-per-node
    # (the ranks know the world size from WORLD_SIZE)
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    argv = kept
    env = dict(os.environ)
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), "-m", "memoptim", *argv]  # fmt: skip
    return subprocess.run(cmd, env=env, check=False).returncode


def run(args: argparse.Namespace) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    problem = hyperparameter_error(args.optimizer, hyperparameters_from_args(args))
    if problem:
        return fail("train", problem)
    if args.nproc > 1 and world == 1:
        return _torchrun(args.nproc)
    if world > 1 and args.nproc not in (1, world):
        return fail("train", f"--nproc {args.nproc} but WORLD_SIZE={world}")

    import torch

    if args.threads or world > 1:
        torch.set_num_threads(args.threads or 1)
    if world > 1:
        import torch.distributed as dist

        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group("gloo")
        try:
            code = _run(args)
            dist.barrier()  # gloo can abort if a rank tears down while another still talks
        finally:
            dist.destroy_process_group()
        return code
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from memoptim.data.paths import DatasetChecksumError, DatasetNotFoundError
    from memoptim.experiments.train import train
    from memoptim.progress import labelled

    rank = int(os.environ.get("RANK", "0"))
    out = args.out or f"runs/{args.task}/{args.optimizer}-s{args.seed}"
    created = new_directories(out) if rank == 0 else []  # removed again if the run fails
    finished = False
    try:
        with labelled(args.optimizer):
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
                progress=not args.no_progress and rank == 0,
                tensorboard=args.tensorboard,
                diagnostics=args.diagnostics or args.m_sharpness_batches > 0,
                sharpness_iters=args.sharpness_iters,
                m_sharpness_batches=args.m_sharpness_batches,
            )
        finished = True
    except (DatasetNotFoundError, DatasetChecksumError, FileExistsError, ValueError) as exc:
        return fail("train", exc)
    finally:
        if not finished:
            remove_if_empty(created)
    if rank != 0:
        return 0
    shown = {k: v for k, v in summary.items() if k not in ("config", "resolved", "accuracy_matrix")}
    print(json.dumps(shown))
    print(f"run directory: {out}")
    return 0
