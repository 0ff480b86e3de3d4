"""What the sub-commands share: the parser class, one-line errors, argument types, clean-up.

Every expected failure of a command ends in one line on stderr,
``memoptim <command>: error: <what is wrong>``, and status 2 (bad input) -- argparse's own errors
included (:class:`Parser`), with no usage block and no traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import IO, NoReturn

#: A negative number as a value, exponents included: argparse's own pattern takes ``-1e-4`` for
#: an option and then says "expected one argument".
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``<prog>: error: <message>``, status 2)
    and that reads ``-1e-4`` as a value; its sub-parsers are of this class too."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; option help wrapped without breaking names at hyphens
    (``adam+cm-nomem`` stays whole)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def one_line(message: object) -> str:
    """``message`` on one line (its lines joined with "; ")."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def fail(command: str, message: object, status: int = 2, stream: IO[str] | None = None) -> int:
    """Print ``memoptim <command>: error: <message>`` (one line) on stderr; return ``status``."""
    print(f"memoptim {command}: error: {one_line(message)}", file=stream or sys.stderr)
    return status


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`(~?)([^`]+)`")


def plain_text(text: str | None) -> str | None:
    """A help text or docstring without reST markup: ``:mod:`a.b``` -> ``a.b`` (``~a.b`` ->
    ``b``), double backticks dropped, a paragraph's closing ``::`` -> ``:``."""
    if not text:
        return text
    text = _ROLE.sub(lambda m: m[2].rsplit(".", 1)[-1] if m[1] else m[2], text)
    text = text.replace("``", "")
    return re.sub(r"::$", ":", text, flags=re.MULTILINE)


def plain_help(parser: argparse.ArgumentParser) -> None:
    """Make the descriptions and help texts of ``parser`` and its sub-parsers plain text."""
    parser.description = plain_text(parser.description)
    parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = plain_text(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain_text(choice.help)
            for sub in action.choices.values():
                plain_help(sub)


def _integer(text: str, minimum: int) -> int:
    """``text`` as an integer, or argparse's error naming the bound."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = _integer(text, 1)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = _integer(text, 0)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def optimizer_names() -> list[str]:
    """The registry's optimizer names, in its order."""
    from memoptim.registry import OPTIMIZERS

    return list(OPTIMIZERS)


def optimizer_name(text: str) -> str:
    """An argparse type: a registry name (case and surrounding spaces ignored)."""
    name = text.strip().lower()
    if name not in optimizer_names():
        raise argparse.ArgumentTypeError(
            f"unknown optimizer {text!r}; valid names: {', '.join(optimizer_names())}"
        )
    return name


def optimizer_list(text: str) -> list[str]:
    """An argparse type: comma-separated registry names (at least one)."""
    names = [n for n in (part.strip() for part in text.split(",")) if n]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated optimizer names, got none")
    return [optimizer_name(n) for n in names]


def new_directories(path: str | Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first (what a run would create)."""
    out = []
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def remove_if_empty(directories: Iterable[Path], disposable: tuple[str, ...] = ()) -> None:
    """Remove each of ``directories`` (deepest first) that holds nothing, or only files named in
    ``disposable``; a failed run leaves no empty directory behind."""
    for d in directories:
        if not d.is_dir():
            continue
        entries = list(d.iterdir())
        if any(e.name not in disposable or not e.is_file() for e in entries):
            return
        for e in entries:
            e.unlink()
        d.rmdir()
