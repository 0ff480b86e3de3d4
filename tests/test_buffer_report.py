"""The report's buffer-dynamics section reads each run's last metrics line."""

from dataclasses import dataclass, field
from typing import Any

import pytest

from memoptim.experiments.buffer_report import (
    attach_dynamics,
    buffer_dynamics_section,
    dynamics_rows,
    group_dynamics,
    run_dynamics,
)

NORM = {"resolved": {"optimizer_hyperparameters": {"policy": "norm", "decay": 0.7}}}


@dataclass
class _Run:
    history: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=lambda: NORM)


@dataclass
class _Group:
    runs: list[_Run] = field(default_factory=list)


def _dyn(rate: float, oldest: float, age: float) -> dict[str, Any]:
    return {"epoch": 2, "buffer_replacement_rate": rate, "buffer_oldest_share": oldest,
            "buffer_mean_age": age, "buffer_fifo_age": 2.0, "buffer_key_cv": 0.1, "buffer_key_ratio": 1.5}


def test_the_last_metrics_line_is_the_whole_run():
    run = _Run([_dyn(0.5, 0.5, 9.0), _dyn(1.0, 0.84, 2.04)])
    assert run_dynamics(run)["buffer_oldest_share"] == 0.84
    assert run_dynamics(_Run([{"epoch": 1}])) is None
    assert run_dynamics(_Run([])) is None


def test_rows_average_the_seeds_that_recorded_it_and_say_how_many():
    group = _Group([_Run([_dyn(1.0, 0.8, 2.0)]), _Run([_dyn(1.0, 0.9, 2.2)]), _Run([{"epoch": 1}])])
    (row,) = dynamics_rows({"brown-lm": {"adam+cm": group, "adam": _Group([_Run([{"epoch": 1}])])}})
    assert row[:3] == ["brown-lm", "Adam+CM", "2/3"]
    assert row[3:6] == ["1.00", "0.85", "2.10"]


def test_the_section_says_when_nothing_was_recorded():
    text = "\n".join(buffer_dynamics_section({"brown-lm": {"adam": _Group([_Run([{"epoch": 1}])])}}))
    assert "Not recorded yet" in text and "|" not in text


def test_verdict_rows_carry_both_sides_dynamics_with_policy_and_decay():
    cm = _Group([_Run([_dyn(1.0, 0.8, 2.0)]), _Run([_dyn(1.0, 0.9, 2.2)]), _Run([{"epoch": 1}])])
    d = group_dynamics(cm)
    assert d["policy"] == "norm" and d["decay"] == 0.7 and (d["seeds"], d["runs"]) == (2, 3)
    assert d["buffer_oldest_share"] == pytest.approx(0.85) and d["buffer_mean_age"] == pytest.approx(2.1)
    rows = [{"task": "brown-lm", "optimizer": "adam+cm", "baseline": "adam"},
            {"task": "brown-lm", "optimizer": "adam", "baseline": "adam+cm"}]  # either side
    attach_dynamics(rows, {"brown-lm": {"adam+cm": cm, "adam": _Group([_Run([{"epoch": 1}])])}})
    assert rows[0]["buffer"] == d and rows[0]["baseline_buffer"] is None  # adam recorded nothing
    assert rows[1]["buffer"] is None and rows[1]["baseline_buffer"] == d
