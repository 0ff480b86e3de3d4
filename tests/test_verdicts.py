"""Which comparisons the verdicts make (from the registry), their baselines, and how they print."""

from __future__ import annotations

import json

import pytest

from memoptim.experiments import verdicts as V
from memoptim.experiments.protocol import format_lr
from memoptim.registry import REGISTRY

pytest.importorskip("scipy.stats")


@pytest.mark.parametrize(("lr", "text"), [(0.03333, "3.3e-2"), (1e-3, "1e-3"), (3e-4, "3e-4"), (0.01, "1e-2"),
                                          (3.333e-5, "3.3e-5"), (1.0, "1e0"), (None, "n/a")])
def test_learning_rates_print_compactly(lr, text):
    assert format_lr(lr) == text


def test_the_contrasts_come_from_the_registry_names():
    pairs = {(o, b): what for o, b, what in V.CONTRASTS}
    assert ("adam+sam+cm", "adam+sam") in pairs and ("adam+sam", "adam") in pairs
    assert ("adam+cg", "adam") in pairs
    assert pairs[("adam+cm", "adam+cm-random")] == "the gradient-norm key against random replacement"
    assert pairs[("adam+cm-authors", "adam+cm")] == "the authors' semantics against ours"
    assert ("lion+cm", "lion") in pairs and ("sgd+cm", "sgd") in pairs
    for opt, base, _ in V.CONTRASTS:
        assert opt in REGISTRY and base in REGISTRY
    assert V.parent_of("adam+cm-decay0.99") == ("adam+cm", "-decay0.99")
    assert V.parent_of("adam+sam+cm") == ("adam+sam", "+cm")
    assert V.parent_of("adamomentum") is None and V.parent_of("adamw") is None


@pytest.mark.skipif("adam+cm-fifo" not in REGISTRY, reason="no FIFO policy in the registry")
def test_the_recency_and_decay_ablations_are_contrasted_with_adam_cm():
    pairs = {(o, b) for o, b, _ in V.CONTRASTS}
    assert ("adam+cm", "adam+cm-fifo") in pairs and ("adam+cm-decay0.99", "adam+cm") in pairs


def test_the_transformer_baseline_is_adamw():
    assert V.baseline_of("adam+cm", "gpt-brown") == "adamw"
    assert V.baseline_of("adam+cm", "brown-lm") == "adam"
    assert V.baseline_of("lion+cm", "gpt-brown") == "lion"


class _Run:
    def __init__(self, task: str, opt: str, lr: float, seed: int, value: float) -> None:
        self.task, self.optimizer, self.value = task, opt, value
        self.config = {"hyperparameters": {"lr": lr}, "seed": seed}
        self.summary = {"metric": "val_perplexity", "mode": "min"}


def _runs(task: str, values: dict[str, float]) -> list[_Run]:
    out = []
    for opt, v in values.items():
        for lr, extra in ((1e-3, 20.0), (3e-3, 0.0), (1e-2, 30.0)):
            out.append(_Run(task, opt, lr, 0, v + extra))
        out += [_Run(task, opt, 3e-3, s, v + 0.1 * s) for s in range(1, 5)]
    return out


def test_verdict_rows_use_the_tasks_baseline_and_registry_contrasts():
    runs = _runs("gpt-brown", {"adamw": 200.0, "adam+cm": 210.0, "adam+sam+cm": 209.0, "lion": 205.0,
                               "lion+cm": 204.0})
    rows = V.verdict_rows(runs)
    pairs = {(r["optimizer"], r["baseline"]): r for r in rows}
    assert set(pairs) == {("adam+cm", "adamw"), ("adam+sam+cm", "adamw"), ("lion+cm", "lion"),
                          ("lion", "adamw"), ("lion+cm", "adamw")}  # Lion against the transformer's baseline
    assert pairs[("adam+cm", "adamw")]["verdict"] == "behind"
    assert pairs[("adam+cm", "adamw")]["metric"] == "val_perplexity"
    assert pairs[("lion+cm", "lion")]["contrast"] == "critical momenta on top of Lion"
    assert pairs[("lion", "adamw")]["contrast"] == "Lion against AdamW"


def test_summary_tables_open_with_every_task_and_print_lrs_compactly():
    runs = (_runs("brown-lm", {"adam": 180.0, "adam+cm": 185.0, "adam+cm-random": 186.0})
            + _runs("fashion-mnist", {"adam": 91.0, "adam+cm": 90.0}))
    for r in runs:
        if r.task == "fashion-mnist":
            r.summary = {"metric": "val_accuracy", "mode": "max"}
    rows = V.verdict_rows(runs)
    md = "\n".join(V.summary_tables(rows))
    assert "| | Brown LM (val perplexity ↓) | Fashion-MNIST (val accuracy ↑) |" in md
    assert "| **tuned baseline** | Adam 180.20 (lr 3e-3, 5 seeds) |" in md
    assert "| Adam+CM | +5.00 [" in md and "**behind**" in md
    assert "Adam+CM - Adam+CM, random replacement: the gradient-norm key" in md
    assert "0.003" not in md
    json.dumps(rows)  # JSON-safe


def test_summary_table_has_one_row_per_optimizer_whatever_each_task_s_baseline():
    runs = (_runs("brown-lm", {"adam": 180.0, "adam+cm": 185.0, "adam+cm-nomem": 178.0})
            + _runs("gpt-brown", {"adamw": 200.0, "adam+cm": 210.0, "adam+cm-nomem": 199.0}))
    md = V.summary_tables(V.verdict_rows(runs))
    for label in ("Adam+CM", "Adam+CM, no buffer"):
        (line,) = [m for m in md if m.startswith(f"| {label} |")]
        assert line.count("**") == 4, line  # a verdict under each task: against Adam, against AdamW
    assert "| **tuned baseline** | Adam 180.20 (lr 3e-3, 5 seeds) | AdamW 200.20 (lr 3e-3, 5 seeds) |" in md
