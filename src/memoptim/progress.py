"""Progress of a long loop ("phase"), shown in a way that suits where stderr goes.

* stderr is a terminal and tqdm is installed: a live tqdm bar, as before;
* otherwise (a log file, CI, a pipe, or no tqdm): no redraws at all -- one line when the phase
  closes, ``"<desc>: <n>/<total> <unit>s in <seconds> s"`` (plus the last postfix values, e.g. the
  loss), so that a log holds one line per phase instead of thousands of carriage returns;
* ``enabled=False`` (the ``progress=False`` / ``--no-progress`` switches), or an empty phase
  (``total == 0``): nothing at all.

tqdm is imported only when a bar is actually drawn, so importing this module (and the training
code that uses it) never needs tqdm.

Inside ``with labelled("adam+cm"):`` every phase says what it belongs to: ``"[adam+cm] epoch 1/4"``
(labels nest: ``"[variant authors, adam+cm] ..."``), so that the lines of a sweep or of the
variants of a reproduction can be told apart.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, TextIO

__all__ = ["Progress", "labelled"]

_LABELS: ContextVar[tuple[str, ...]] = ContextVar("memoptim_progress_labels", default=())


@contextlib.contextmanager
def labelled(label: str) -> Iterator[None]:
    """Prefix the description of every :class:`Progress` created in the block with ``[label]``."""
    token = _LABELS.set((*_LABELS.get(), label))
    try:
        yield
    finally:
        _LABELS.reset(token)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _formatted(postfix: dict[str, Any]) -> dict[str, Any]:
    # formatted only when shown, so that a disabled or unattended phase costs nothing per step
    return {k: f"{v:.4f}" if isinstance(v, float) else v for k, v in postfix.items()}


class Progress:
    """Progress of one phase of ``total`` units (``None``: unknown), advanced with :meth:`update`
    and ended with :meth:`close` (or by leaving a ``with`` block).

    Args:
        total: units the phase will take (``None`` if unknown).
        desc: the phase's name, shown before the counts.
        enabled: ``False``: write nothing at all.
        unit: the name of one unit (default ``"step"``).
        leave: keep the finished tqdm bar on the terminal (tqdm's ``leave``).
        stream: where to write (default: ``sys.stderr`` at construction time).
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        enabled: bool = True,
        unit: str = "step",
        leave: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        labels = _LABELS.get()
        if labels:
            desc = f"[{', '.join(labels)}] {desc}"
        self.total, self.desc, self.unit = total, desc, unit
        # an empty phase has nothing to show (tqdm would draw an empty bar)
        enabled = enabled and total != 0
        self.enabled = enabled
        self.stream: TextIO = sys.stderr if stream is None else stream
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.bar: Any = None  # the tqdm bar, in a terminal
        self._start = time.perf_counter()
        self._closed = not enabled
        if enabled and _is_terminal(self.stream):
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is optional: fall back to the one-line summary
                return
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                            file=self.stream)  # fmt: skip

    def update(self, n: int = 1, **postfix: Any) -> None:
        """Advance by ``n`` units; ``postfix`` values (e.g. ``loss=0.1234``; floats shown with 4
        decimals) are shown beside the bar, or after the summary line."""
        if self._closed:
            return
        self.n += n
        if postfix:
            self.postfix = postfix
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix(_formatted(postfix), refresh=False)

    def close(self) -> None:
        """End the phase: close the bar, or write the summary line (once; later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
            return
        counts = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        seconds = time.perf_counter() - self._start
        line = f"{self.desc}: {counts} {self.unit}s in {seconds:.1f} s"
        if self.postfix:
            line += " (" + ", ".join(f"{k}={v}" for k, v in _formatted(self.postfix).items()) + ")"
        self.stream.write(line + "\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
