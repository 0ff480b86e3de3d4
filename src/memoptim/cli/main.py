"""Entry point of the ``memoptim`` command.

Each sub-command lives in its own module under :mod:`memoptim.cli` and exposes
``register(subparsers) -> None``; the module adds its parser and sets
``func=<callable(args) -> int>`` as the parser default.  Heavy imports
(matplotlib, optuna, ...) happen inside ``func`` so that ``memoptim --help``
stays fast and the optimizer core keeps its light dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from memoptim.cli.common import Parser, fail, plain_help

# Sub-command modules, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "memoptim.cli.reproduce",
    "memoptim.cli.plot",
    "memoptim.cli.train",
    "memoptim.cli.sweep",
    "memoptim.cli.report",
    "memoptim.cli.rerun",
    "memoptim.cli.demo",
    "memoptim.cli.build_kernels",
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="memoptim",
        description="Memory-augmented optimizers for PyTorch and the tools to study them.",
    )
    from memoptim import __version__

    parser.add_argument("--version", action="version", version=f"memoptim {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    plain_help(parser)  # the docstrings that serve as descriptions are reST
    return parser


#: The optional extra that provides each optional third-party module.
EXTRAS: dict[str, str] = {
    "optuna": "bench", "matplotlib": "lab", "scipy": "lab", "tqdm": "lab", "ninja": "native",
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command.  Expected failures (a missing optional dependency, a file or directory
    that cannot be read or created) end in one line on stderr and a nonzero status; set
    ``MEMOPTIM_DEBUG=1`` for the traceback instead."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ModuleNotFoundError, OSError) as exc:
        if os.environ.get("MEMOPTIM_DEBUG"):
            raise
        return fail(args.command, _explain(exc), status=1)


def _explain(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError):
        root = (exc.name or "").split(".")[0]
        extra = EXTRAS.get(root)
        hint = f": pip install 'memoptim[{extra}]'" if extra else ""
        return f"this command needs the optional package {root!r}, which is not installed{hint}"
    return str(exc)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
