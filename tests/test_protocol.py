"""The tuned protocol's decisions: lr selection, edges, widening, Welch intervals, verdict words."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from memoptim.experiments.protocol import (
    Tuning,
    compare,
    tune,
    verdict_word,
    welch_interval,
    widen,
)

scipy_stats = pytest.importorskip("scipy.stats")


def _tuning(name: str, mode: str, grid_means: dict[float, float], best_seeds: list[float]) -> Tuning:
    """A tuning with one tuning seed (0) per lr of ``grid_means`` (``None``: the lr that gets
    ``best_seeds``, seeds 0..)."""
    t = Tuning("task", name, mode)
    for lr, v in grid_means.items():
        t.values[lr] = {0: v} if v is not None else {i: x for i, x in enumerate(best_seeds)}
    return t


GRID = {1e-4: 0.0, 1e-3: None, 1e-2: 1.0}  # the middle lr is the best of any accuracy list


def test_a_fabricated_tie_is_level():
    seeds = [90.0, 91.0, 89.0, 90.5, 89.5]
    row = compare("task", _tuning("b", "max", GRID, seeds), _tuning("a", "max", GRID, seeds))
    assert row["diff"] == 0.0 and row["ci_low"] < 0.0 < row["ci_high"]
    assert row["verdict"] == "level"


def test_an_edge_lr_is_not_tuned_and_gets_no_verdict_word():
    edge = {1e-4: 0.0, 1e-3: 1.0, 1e-2: None}  # best at the largest lr
    far_ahead = [99.0, 99.1, 98.9, 99.2, 98.8]
    row = compare("task", _tuning("b", "max", edge, far_ahead), _tuning("a", "max", GRID, [90.0] * 5))
    assert row["verdict"] == "not tuned"
    assert "b" in row["reason"]
    # the baseline's edge counts as well
    row = compare("task", _tuning("b", "max", GRID, far_ahead), _tuning("a", "max", edge, [90.0] * 5))
    assert row["verdict"] == "not tuned"


def test_a_one_point_grid_is_an_edge():
    t = _tuning("a", "max", {1e-3: None}, [90.0] * 5)
    assert t.at_edge


def test_fewer_than_five_seeds_is_pending_even_when_far_apart():
    row = compare("task", _tuning("b", "max", GRID, [99.0, 99.1, 98.9]),
                  _tuning("a", "max", GRID, [50.0, 50.1, 49.9, 50.0, 50.2]))
    assert row["verdict"] == "pending"
    assert row["ci_low"] > 0  # the interval is still reported


@pytest.mark.parametrize(("mode", "shift", "word"), [("max", 5.0, "ahead"), ("max", -5.0, "behind"),
                                                      ("min", -5.0, "ahead"), ("min", 5.0, "behind")])
def test_the_verdict_follows_the_interval_and_the_metric_direction(mode, shift, word):
    base = [100.0, 101.0, 99.0, 100.5, 99.5]
    grid = {1e-4: 1e9, 1e-3: None, 1e-2: 1e9} if mode == "min" else GRID
    row = compare("task", _tuning("b", mode, grid, [v + shift for v in base]),
                  _tuning("a", mode, grid, base))
    assert row["verdict"] == word
    assert math.isclose(row["diff"], shift)


def test_a_mean_difference_inside_the_noise_is_level_not_ahead():
    a = [90.0, 92.0, 88.0, 91.0, 89.0]
    b = [x + 0.5 for x in a[::-1]]  # better mean, large spread
    row = compare("task", _tuning("b", "max", GRID, b), _tuning("a", "max", GRID, a))
    assert row["diff"] > 0 and row["verdict"] == "level"


def test_welch_interval_matches_scipy():
    a, b = [1.0, 2.5, 3.1, 2.2, 1.9], [0.5, 0.7, 1.9, 0.1, 1.2, 0.4]
    diff, lo, hi = welch_interval(a, b)
    res = scipy_stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert math.isclose(diff, statistics.fmean(a) - statistics.fmean(b))
    assert math.isclose(lo, ci.low, rel_tol=1e-9) and math.isclose(hi, ci.high, rel_tol=1e-9)


def test_verdict_word_on_interval_bounds():
    assert verdict_word(0.1, 2.0, "max") == "ahead"
    assert verdict_word(-2.0, -0.1, "max") == "behind"
    assert verdict_word(-0.1, 2.0, "max") == "level"
    assert verdict_word(-2.0, -0.1, "min") == "ahead"


def test_widen_continues_the_log_grid():
    assert widen([1e-4, 3e-4, 1e-3], "low") == pytest.approx(3.333e-5)
    assert widen([1e-4, 1e-3, 1e-2], "high") == 0.1
    assert widen([1e-3], "high") == 0.01


def test_tune_widens_until_the_best_lr_is_interior_then_confirms():
    calls = []

    def run(lr: float, seed: int) -> float:  # accuracy peaks at lr = 0.1
        calls.append((lr, seed))
        return 100.0 - abs(math.log10(lr) + 1.0) * 10 + 0.01 * seed

    t = tune(run, [1e-4, 1e-3, 1e-2], tune_seeds=[0], confirm_seeds=range(5), mode="max",
             max_widen=2, log=lambda s: None)
    assert t.best_lr == 0.1 and not t.at_edge
    assert t.grid == [1e-4, 1e-3, 1e-2, 0.1, 1.0]
    assert sorted(t.values[0.1]) == [0, 1, 2, 3, 4]
    assert len(calls) == len(set(calls))  # no run twice


def test_tune_stops_widening_at_its_budget_and_stays_at_the_edge():
    t = tune(lambda lr, seed: -lr, [1e-2, 1e-1], tune_seeds=[0], confirm_seeds=[0, 1], mode="max",
             max_widen=1, log=lambda s: None)
    assert t.grid == [1e-3, 1e-2, 1e-1] and t.at_edge


def test_report_writes_verdicts_json_with_the_documented_fields(tmp_path):
    from memoptim.experiments.report import build_report

    def write_run(opt: str, lr: float, seed: int, value: float) -> None:
        d = tmp_path / "runs" / "brown-lm" / opt / f"lr={lr!r}" / f"seed{seed}"
        d.mkdir(parents=True)
        cfg = {"task": "brown-lm", "optimizer": opt, "hyperparameters": {"lr": lr}, "seed": seed,
               "epochs": 1}
        (d / "config.json").write_text(json.dumps(cfg))
        (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_perplexity": value}) + "\n")
        (d / "summary.json").write_text(json.dumps({"metric": "val_perplexity", "mode": "min",
                                                    "best_val_perplexity": value, "status": "complete",
                                                    "elapsed": 1.0, "config": cfg}))

    for opt, offset in (("adam", 0.0), ("adam+cm", -20.0)):
        for lr, v in ((1e-3, 300.0), (3e-3, 250.0), (1e-2, 280.0)):
            write_run(opt, lr, 0, v + offset)
        for seed in range(1, 5):
            write_run(opt, 3e-3, seed, 250.0 + offset + seed)
    build_report(tmp_path / "runs", tmp_path, plots=False)
    rows = json.loads((tmp_path / "verdicts.json").read_text())
    fields = {"task", "optimizer", "baseline", "lr_grid", "best_lr", "baseline_best_lr", "seeds", "diff",
              "ci_low", "ci_high", "verdict"}
    (row,) = [r for r in rows if r["optimizer"] == "adam+cm"]
    assert fields <= set(row)
    assert row["verdict"] == "ahead" and row["best_lr"] == 3e-3 and row["seeds"] == 5
    assert row["lr_grid"] == [1e-3, 3e-3, 1e-2]
    assert "ahead" in (tmp_path / "report.md").read_text()


def test_run_protocol_trains_each_point_once_resumes_and_skips_a_locked_optimizer(tiny_data, monkeypatch):
    from memoptim.experiments import protocol
    from memoptim.experiments import train as train_module

    out = tiny_data / "study"
    calls: list[tuple[str, float, int]] = []
    real_train = train_module.train

    def spy(task, opt, hp, epochs, seed, out_dir, *args, **kwargs):
        if not (out_dir / "summary.json").exists():  # a run that trains (not one that is read)
            calls.append((opt, hp["lr"], seed))
            if len(calls) == 3 and stop["on"]:
                raise KeyboardInterrupt
        return real_train(task, opt, hp, epochs, seed, out_dir, *args, **kwargs)

    stop = {"on": True}
    monkeypatch.setattr(train_module, "train", spy)
    kwargs = dict(out=out, epochs=1, tune_seeds=[0], confirm_seeds=[0, 1], max_widen=0,
                  train_kwargs={"verify_data": False, "subset": 20, "batch_size": 10}, log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        protocol.run_protocol("fashion-mnist", ["adam", "adam+cm"], [1e-3, 1e-2, 1e-1], **kwargs)
    stop["on"] = False
    calls.clear()
    tunings = protocol.run_protocol("fashion-mnist", ["adam", "adam+cm"], [1e-3, 1e-2, 1e-1], **kwargs)
    # two finished points are read, not retrained; the interrupted one runs again
    assert ("adam", 1e-3, 0) not in calls and ("adam", 1e-2, 0) not in calls
    assert len(calls) == len(set(calls))
    for opt in ("adam", "adam+cm"):
        t = tunings[opt]
        assert t.grid == [1e-3, 1e-2, 1e-1] and set(t.values[t.best_lr]) == {0, 1}
    assert len(list(out.glob("fashion-mnist/*/*/seed*/summary.json"))) == 2 * (3 + 1)
    # an optimizer whose lock another worker holds is left to that worker
    calls.clear()
    with protocol._claim(out / "fashion-mnist" / "sgd" / ".protocol.lock") as mine:
        assert mine
        done = protocol.run_protocol("fashion-mnist", ["sgd"], [1e-2, 1e-1], **kwargs)
    assert done == {} and calls == []


def test_verdict_rows_name_each_pair_once_with_what_it_isolates(tmp_path):
    from memoptim.experiments.report import collect_runs
    from memoptim.experiments.verdicts import verdict_rows

    for opt in ("adam", "adam+cm", "adam+cm-vg"):
        for lr in (1e-3, 3e-3, 1e-2):
            for seed in range(2):
                d = tmp_path / opt / f"lr={lr!r}" / f"seed{seed}"
                d.mkdir(parents=True)
                cfg = {"task": "t", "optimizer": opt, "hyperparameters": {"lr": lr}, "seed": seed}
                (d / "config.json").write_text(json.dumps(cfg))
                (d / "metrics.jsonl").write_text("")
                (d / "summary.json").write_text(json.dumps({"metric": "val_accuracy", "mode": "max",
                                                            "best_val_accuracy": 90.0 + seed, "config": cfg}))
    runs, _ = collect_runs(tmp_path)
    rows = verdict_rows(runs)
    pairs = [(r["optimizer"], r["baseline"]) for r in rows]
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == {("adam+cm", "adam"), ("adam+cm-vg", "adam"), ("adam+cm", "adam+cm-vg")}
    contrast = {(r["optimizer"], r["baseline"]): r["contrast"] for r in rows}
    assert contrast[("adam+cm-vg", "adam")] == "the buffer alone (v from g, as Adam)"
    assert contrast[("adam+cm", "adam")] == "critical momenta on top of Adam"
