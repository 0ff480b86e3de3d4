"""``memoptim sweep``: grid search over optimizers x hyperparameters x seeds (Optuna GridSampler).

Example (a grid of two learning rates and three seeds)::

    memoptim sweep --task fashion-mnist --optimizers adam,adam+cm --seeds 0,1,2 --epochs 4 \\
        --subset 10000 --eval-subset 5000 --out runs/sweep

Interrupted?  Run the same command again: finished trials are skipped and the interrupted run
resumes from its last epoch.  Storage (``--storage``, any Optuna RDB / SQLAlchemy URL):

* default: SQLite in ``<out>/optuna.db`` (``sqlite:///<out>/optuna.db``), one machine;
* ``postgresql://user:pw@host:port/db`` or, naming the driver,
  ``postgresql+psycopg2://user:pw@host:port/db`` shares one sweep between workers on several
  machines (each running the same command; ``--out`` should be a shared directory so resumed
  runs find their checkpoints).
  PostgreSQL needs the driver psycopg2: ``pip install 'memoptim[postgres]'`` (a bare
  ``postgresql://`` always means psycopg2 here; ``postgresql+psycopg://`` selects psycopg 3).

Grids: ``cpu`` (learning rate only, other
hyperparameters at the paper's defaults) or ``paper`` (Table 8); ``--param lr=0.01,0.001``
overrides one hyperparameter's values.

The tuned protocol (``--tune-lr``; :mod:`memoptim.experiments.protocol`) gives every optimizer
the same learning-rate budget instead: the log grid on the ``--tune-seeds``, widened while the
best lr sits at an edge (at most ``--max-widen`` points per side), then ``--seeds`` (at least
five) at each optimizer's own best lr; ``memoptim report`` turns the runs into verdicts with
confidence intervals::

    memoptim sweep --task brown-lm --optimizers adam,adam+cm --tune-lr 3e-4,1e-3,3e-3,1e-2 \
        --tune-seeds 0 --seeds 0,1,2,3,4 --epochs 4 --out results/benchmarks/study
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from memoptim.cli.common import (
    HelpFormatter,
    fail,
    new_directories,
    non_negative_int,
    optimizer_list,
    optimizer_names,
    positive_int,
    remove_if_empty,
)
from memoptim.cli.train import M_SHARPNESS_HELP, TASK_CHOICES


def _default_optimizers() -> str:
    """The paper's optimizers, in the registry's order."""
    from memoptim.registry import REGISTRY

    return ",".join(name for name, entry in REGISTRY.items() if entry.paper)


def _seeds(text: str) -> list[int]:
    """An argparse type: comma-separated integer seeds."""
    try:
        seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return seeds


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
        formatter_class=HelpFormatter,
    )
    p.add_argument("--task", required=True, choices=TASK_CHOICES)
    p.add_argument("--optimizers", type=optimizer_list, default=_default_optimizers(), metavar="NAMES",
                   help=f"comma-separated names among: {', '.join(optimizer_names())} "
                        "(default: the paper's, %(default)s)")
    p.add_argument("--grid", choices=("cpu", "paper"), default="cpu")
    p.add_argument("--param", action="append", type=parse_param, default=[],
                   metavar="NAME=V1,V2", help="override one hyperparameter's grid values")
    p.add_argument("--seeds", type=_seeds, default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--epochs", type=positive_int, required=True)
    p.add_argument("--out", default="runs/sweep", help="root of the run directories")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="Optuna storage URL, e.g. postgresql://user:pw@host:port/db or "
                        "postgresql+psycopg2://... (needs memoptim[postgres]); "
                        "default sqlite:///<out>/optuna.db")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--schedule", choices=("auto", "step", "constant", "warmup-cosine"), default="auto")
    p.add_argument("--subset", type=positive_int, default=None, metavar="N")
    p.add_argument("--eval-subset", type=positive_int, default=None, metavar="N")
    p.add_argument("--diagnostics", action="store_true")
    p.add_argument("--sharpness-iters", type=non_negative_int, default=20)
    p.add_argument("--m-sharpness-batches", type=non_negative_int, default=0, metavar="N",
                   help=M_SHARPNESS_HELP)
    p.add_argument("--data-root", default=None)
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep checkpoint.pt of finished runs (default: deleted to save space)")
    tuned = p.add_argument_group("tuned protocol (instead of a grid)")
    tuned.add_argument("--tune-lr", default=None, metavar="LR1,LR2,...",
                       help="log-spaced initial lr grid; switches to the tuned protocol")
    tuned.add_argument("--tune-seeds", type=_seeds, default="0",
                       help="seeds the lr is selected on (default 0)")
    tuned.add_argument("--max-widen", type=non_negative_int, default=2,
                       help="grid points added per side while the best lr is at an edge (default 2)")
    p.set_defaults(func=run)


#: The optional extra that provides each database driver module a ``--storage`` URL may need.
STORAGE_EXTRAS: dict[str, str] = {"psycopg2": "postgres"}


def storage_error(url: str) -> tuple[str, int] | None:
    """One line saying why ``--storage url`` cannot be used, with the exit status: an unparseable
    URL (2; the line names the host as written), a database driver not installed (1); or None.
    Checked before the data are loaded; the password is never echoed.  A server that cannot be
    reached is found when the sweep connects (:class:`memoptim.experiments.sweep.StorageError`)."""
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    except ImportError:
        return None  # no optuna/SQLAlchemy: reported (with its extra) when the sweep imports it
    from memoptim.experiments.sweep import storage_host

    scheme = url.partition("://")[0] if "://" in url else url[:0]
    shown = f"{scheme}://..." if scheme else "(the URL)"
    if url.startswith("postgresql://"):  # as the sweep does: psycopg2, not SQLAlchemy's default
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        detail = "expected scheme://user:password@host:port/database" \
            if isinstance(exc, ArgumentError) else exc  # ArgumentError's text may echo the URL
        where = f" at {storage_host(url)}" if scheme else ""
        return f"--storage {shown}{where}: not a usable database URL ({detail})", 2
    try:
        load = getattr(dialect, "import_dbapi", None) or dialect.dbapi  # SQLAlchemy 2 / 1.4
        load()
    except ImportError as exc:
        module = (exc.name or "").split(".")[0] or dialect.driver
        extra = STORAGE_EXTRAS.get(module)
        hint = f"pip install 'memoptim[{extra}]'" if extra else "install the package providing it"
        return f"--storage {shown} needs the database driver {module!r}, which cannot be " \
               f"imported: {hint}", 1
    return None


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"{what}: expected positive numbers, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    """Check the arguments, then run the sweep (or the tuned protocol); returns the exit status.
    A sweep that fails before its first run leaves no new output directory behind."""
    created = new_directories(args.out)
    finished = False
    try:
        status = _run(args)
        finished = status == 0
        return status
    finally:
        if not finished:
            remove_if_empty(created, disposable=(".storage.lock",))


def _run(args: argparse.Namespace) -> int:
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
        "diagnostics": args.diagnostics or args.m_sharpness_batches > 0,
    }
    if train_kwargs["diagnostics"]:
        train_kwargs["sharpness_iters"] = args.sharpness_iters
    if args.m_sharpness_batches:  # only when on: the keywords name the studies (resume unchanged)
        train_kwargs["m_sharpness_batches"] = args.m_sharpness_batches
    if args.data_root:
        train_kwargs["data_root"] = args.data_root
    if args.no_verify:
        train_kwargs["verify_data"] = False
    optimizers = args.optimizers
    try:
        if args.tune_lr:
            return _run_protocol(args, optimizers, train_kwargs)
        problem = storage_error(args.storage) if args.storage else None
        if problem:
            return fail("sweep", *problem)
        _check_grid(optimizers, args.grid, dict(args.param))
        results = sweep(
            args.task,
            optimizers,
            out=args.out,
            epochs=args.epochs,
            seeds=args.seeds,
            grid=args.grid,
            overrides=dict(args.param),
            storage=args.storage,
            train_kwargs=train_kwargs,
            keep_checkpoints=args.keep_checkpoints,
        )
    except (DatasetNotFoundError, DatasetChecksumError, ValueError) as exc:
        return fail("sweep", exc)
    print(json.dumps(results, indent=2))
    return 0


def _check_grid(optimizers: list[str], grid: str, params: dict[str, list[Any]]) -> None:
    """``ValueError`` if an optimizer has no ``grid``, or a ``--param`` is in none of their grids
    (it would be ignored)."""
    from memoptim.experiments.sweep import grid_for

    spaces = [grid_for(o, grid) for o in optimizers]
    for name in params:
        if not any(name in space for space in spaces):
            raise ValueError(f"--param {name}: no optimizer in --optimizers has {name!r} in its "
                             f"{grid} grid")


def _run_protocol(args: argparse.Namespace, optimizers: list[str], train_kwargs: dict[str, Any]) -> int:
    from memoptim.experiments.protocol import MIN_SEEDS, run_protocol

    grid = _floats(args.tune_lr, "--tune-lr")
    confirm = args.seeds
    if len(confirm) < MIN_SEEDS:
        print(f"memoptim sweep: note: {len(confirm)} confirmation seeds; verdicts need {MIN_SEEDS}",
              file=sys.stderr)
    fixed = {o: _fixed(o, dict(args.param)) for o in optimizers}
    for name, _ in args.param:
        if not any(name in f for f in fixed.values()):
            raise ValueError(f"--param {name}: no optimizer in --optimizers has {name!r} in its grid")
    tunings = run_protocol(args.task, optimizers, grid, out=args.out, epochs=args.epochs,
                           tune_seeds=args.tune_seeds,
                           confirm_seeds=confirm, fixed=fixed, max_widen=args.max_widen,
                           train_kwargs=train_kwargs)
    print(json.dumps({o: {"grid": t.grid, "best_lr": t.best_lr, "at_edge": t.at_edge,
                          "seeds_at_best": len(t.seeds_at_best())} for o, t in tunings.items()}, indent=2))
    return 0


def _fixed(optimizer: str, params: dict[str, list[Any]]) -> dict[str, Any]:
    """The non-lr hyperparameters of ``optimizer`` in the tuned protocol: the CPU grid's fixed
    values, overridden by single-valued ``--param`` settings for the hyperparameters that grid has
    (as in grid mode; a protocol tunes the lr only)."""
    from memoptim.experiments.sweep import grid_for

    out = {k: v[0] for k, v in grid_for(optimizer, "cpu").items() if k != "lr"}
    for k, values in params.items():
        if k == "lr":
            raise ValueError("--param lr=... and --tune-lr cannot be combined")
        if len(values) != 1:
            raise ValueError(f"--param {k}: the tuned protocol takes one value per hyperparameter")
        if k in out:
            out[k] = values[0]
    return out
