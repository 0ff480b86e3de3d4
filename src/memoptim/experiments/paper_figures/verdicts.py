"""Seed-paired comparisons and the verdict sentences of the report.

A difference counts only if every seed shows it and the mean difference exceeds the seed-to-seed
standard deviation (pooled over the two configurations); with one seed every verdict is
"inconclusive"."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any


def mean(values: Sequence[float]) -> float:
    """Mean of the finite values (NaN if none)."""
    v = [x for x in values if math.isfinite(x)]
    return statistics.fmean(v) if v else math.nan


def _std(values: Sequence[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return statistics.stdev(v) if len(v) >= 2 else math.nan


def compare(a: Sequence[float], b: Sequence[float]) -> tuple[str, str]:
    """Seed-paired comparison of ``a`` with ``b``: (``"lower"`` | ``"higher"`` | ``"unclear"``,
    the reason).  ``lower`` / ``higher`` need every seed's difference to have that sign and the
    mean difference to exceed the seed-to-seed standard deviation pooled over ``a`` and ``b``."""
    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    if len(pairs) < 2:
        return "unclear", "fewer than 2 seeds"
    diffs = [x - y for x, y in pairs]
    d = statistics.fmean(diffs)
    noise = math.sqrt((_std([x for x, _ in pairs]) ** 2 + _std([y for _, y in pairs]) ** 2) / 2)
    if not (all(x < 0 for x in diffs) or all(x > 0 for x in diffs)):
        return "unclear", "the seeds disagree on the sign of the difference"
    if abs(d) <= noise:
        return "unclear", f"mean difference {d:+.3g} within the seed spread (sd {noise:.2g})"
    return ("lower" if d < 0 else "higher"), f"mean difference {d:+.3g} (seed sd {noise:.2g})"


def verdict_order(claimed_low: Sequence[float], claimed_high: Sequence[float]) -> str:
    """Verdict on a claim "``claimed_low`` < ``claimed_high``" (values per seed)."""
    result, reason = compare(claimed_low, claimed_high)
    if result == "lower":
        return f"agrees ({reason})"
    if result == "higher":
        return f"does not agree (the opposite holds: {reason})"
    return f"inconclusive ({reason})"


def verdict_best(points: Mapping[Any, Sequence[float]], claimed: Any, what: str) -> str:
    """Verdict on a claim "``claimed`` has the highest value" (``points``: key -> per-seed values)."""
    means = {k: mean(v) for k, v in points.items()}
    best = max(means, key=lambda k: -math.inf if math.isnan(means[k]) else means[k])
    if best == claimed:
        others = [k for k in points if k != claimed]
        runner = max(others, key=lambda k: -math.inf if math.isnan(means[k]) else means[k])
        result, reason = compare(points[runner], points[claimed])
        if result == "lower":
            return f"agrees ({what} {claimed} is best; vs runner-up {runner}: {reason})"
        return f"inconclusive ({what} {claimed} is best by mean, but vs runner-up {runner}: {reason})"
    result, reason = compare(points[claimed], points[best])
    if result == "lower":
        return f"does not agree ({what} {best} is best; {claimed} vs {best}: {reason})"
    return f"inconclusive ({what} {best} is best by mean; {claimed} vs {best}: {reason})"
