"""``memoptim build-kernels``: compile the native CPU kernel ahead of time.

Once it is built (about a minute, once per machine and torch version), the optimizers' default
path (``fused=None``) runs it on CPU; nothing is ever compiled inside ``step()`` unless
``fused=True`` is asked for.  ``--check`` only reports whether it is built.
"""

from __future__ import annotations

import argparse
import sys
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build-kernels", help="compile the native CPU kernel now, so that the "
                              "default path uses it (about a minute, once per machine)")
    p.add_argument("--check", action="store_true", help="only report whether it is built (status 1 if not)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from memoptim.optim.native import build, is_built

    where = build.build_directory()
    if args.check:
        built = is_built()
        print(f"native kernel {'built' if built else 'not built'} ({where})")
        return 0 if built else 1
    if is_built():
        print(f"native kernel already built ({where})")
        return 0
    print(f"building the native kernel into {where} (about a minute) ...", flush=True)
    start = time.perf_counter()
    try:
        build.load()
    except Exception as exc:  # no compiler, no ninja, read-only cache: one line, not a traceback
        first = f"{type(exc).__name__}: {exc}".splitlines()[0]
        print(f"memoptim build-kernels: error: the native kernel could not be built ({first})",
              file=sys.stderr)
        return 1
    print(f"built in {time.perf_counter() - start:.0f} s; the default path (fused=None) now uses it on CPU")
    return 0
