"""The Markdown of the report: number formats, tables, the layout of an artifact's section and
its setup line."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from memoptim.experiments.paper_figures.scale import TASK, Scale, fmt

if TYPE_CHECKING:
    from memoptim.experiments.paper_figures.runs import Runner

__all__ = ["fmt", "markdown_table", "num"]


def num(x: float, digits: int = 3) -> str:
    """A table number: ``digits`` decimals, or significant digits when tiny or huge; "n/a" if
    missing or not finite."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 1e-2 or abs(x) >= 1e3 else f"{x:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (cells as given; floats formatted with 3 decimals / significant digits)."""

    def cell(v: Any) -> str:
        return num(v) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def seed_header(seeds: Sequence[int], what: str) -> list[str]:
    """Column headers ``"<what> seed <k>"`` for every seed, then ``"<what> mean"``."""
    return [f"{what} seed {s}" for s in seeds] + [f"{what} mean"]


def render_section(title: str, setup: str, tables: Sequence[str], quotes: Sequence[str],
                   ours: str, verdict: str, figure: str, note: str = "") -> str:  # fmt: skip
    """An artifact's Markdown section: title, setup line, tables, the paper's statements quoted,
    our result, the verdict in bold, an optional note and the figure."""
    parts = [f"## {title}", "", setup, ""]
    for t in tables:
        parts += [t, ""]
    parts += [f"> Paper: {q}" for q in quotes]
    parts += ["", f"Ours: {ours}", "", f"**Verdict: {verdict}**", ""]
    if note:
        parts += [f"Note: {note}", ""]
    parts += [f"![{title}]({figure})", ""]
    return "\n".join(parts)


def setup_line(scale: Scale, runner: Runner, extra: str, artifact: str) -> str:
    """The "Setup:" sentence of an artifact: data sizes, epochs and lr schedule, seeds, then
    ``extra`` (the artifact's own settings)."""
    bs = runner.task().default_batch_size
    decay = (f"step schedule: lr/10 from epoch {scale.epochs // 2 + 1}" if scale.epochs > 1
             else "no lr decay in a 1-epoch run")  # fmt: skip
    return (f"Setup: {TASK} (SmallResNet), {scale.subset} training / {scale.eval_subset} "
            f"validation examples, {scale.epochs} epoch(s) ({decay}), seeds "
            f"{list(scale.seeds_of(artifact))}; {extra} (task default batch {bs}).")  # fmt: skip
