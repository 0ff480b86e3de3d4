"""The report's buffer-dynamics section: is the critical buffer a priority queue or a window?

Every memory optimizer's run records the buffer dynamics over the whole run in its last metrics
line (:mod:`memoptim.lab.buffer_dynamics`); this section shows them, per task and optimizer, for
the runs of its best configuration (the one the verdicts compare), averaged over their seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from memoptim.registry import LABELS

#: (metric key, column header, digits) of the table, in order.
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("buffer_replacement_rate", "replaced on full steps", 2),
    ("buffer_oldest_share", "of which the oldest", 2),
    ("buffer_mean_age", "mean entry age", 2),
    ("buffer_fifo_age", "FIFO window's age", 2),
    ("buffer_key_cv", "key CV", 3),
    ("buffer_key_ratio", "key max/min", 2),
)


class _Run(Protocol):
    history: list[dict[str, Any]]
    summary: dict[str, Any]


class _Group(Protocol):
    runs: Sequence[_Run]


def run_dynamics(run: _Run) -> dict[str, float] | None:
    """The buffer dynamics of a whole run (its last metrics line), or ``None`` if not recorded."""
    last = run.history[-1] if run.history else {}
    if "buffer_replacement_rate" not in last:
        return None
    return {key: float(last[key]) for key, _, _ in COLUMNS if last.get(key) is not None}


def group_dynamics(group: _Group) -> dict[str, Any] | None:
    """A configuration's buffer dynamics: each :data:`COLUMNS` key's mean over the seeds that
    recorded it, with ``seeds`` (how many did), ``runs``, and the buffer's ``policy`` and key
    ``decay``; ``None`` when no seed recorded them."""
    recorded = [d for d in map(run_dynamics, group.runs) if d is not None]
    if not recorded:
        return None
    hp = group.runs[0].summary.get("resolved", {}).get("optimizer_hyperparameters", {})
    out: dict[str, Any] = {"policy": hp.get("policy"), "decay": hp.get("decay"), "seeds": len(recorded),
                           "runs": len(group.runs)}
    for key, _, _ in COLUMNS:
        vals = [d[key] for d in recorded if key in d]
        if vals:
            out[key] = statistics.fmean(vals)
    return out


def attach_dynamics(rows: Sequence[dict[str, Any]], best: Mapping[str, Mapping[str, _Group]]) -> None:
    """Give each verdict row the buffer dynamics (:func:`group_dynamics`) of its optimizer's and
    its baseline's best configurations, as ``buffer`` and ``baseline_buffer`` (``None`` where not
    recorded): ``verdicts.json`` then carries what the findings say of the buffer."""
    dynamics = {(task, opt): group_dynamics(g) for task, groups in best.items() for opt, g in groups.items()}
    for row in rows:
        row["buffer"] = dynamics.get((row["task"], row["optimizer"]))
        row["baseline_buffer"] = dynamics.get((row["task"], row["baseline"]))


def dynamics_rows(best: Mapping[str, Mapping[str, _Group]]) -> list[list[str]]:
    """One row per (task, optimizer) whose best configuration has runs with the dynamics."""
    rows = []
    for task in sorted(best):
        for opt, group in best[task].items():
            d = group_dynamics(group)
            if d is None:
                continue
            cells = [f"{d[key]:.{digits}f}" if key in d else "-" for key, _, digits in COLUMNS]
            rows.append([task, LABELS.get(opt, opt), f"{d['seeds']}/{d['runs']}", *cells])
    return rows


def buffer_dynamics_section(best: Mapping[str, Mapping[str, _Group]]) -> list[str]:
    """The Markdown section (a table, or a line saying no run recorded the dynamics yet)."""
    lines = ["## Buffer dynamics", "",
             "Per memory optimizer at its best configuration, the mean over the seeds that recorded "
             "it of the whole run's buffer dynamics (`memoptim.lab.buffer_dynamics`): the share of "
             "steps with a full buffer on which an entry was replaced, the share of those "
             "replacements that evicted the oldest entry, the mean entry age beside a FIFO window's "
             "(C-1)/2, and the spread of the keys as offered. A FIFO-like buffer replaces on every "
             "step, evicts the oldest, and has the window's age.", ""]
    rows = dynamics_rows(best)
    if not rows:
        return [*lines, "Not recorded yet: the runs so far predate the diagnostic.", ""]
    header = ["task", "optimizer", "seeds", *(h for _, h, _ in COLUMNS)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return [*lines, ""]
