"""Report: aggregation over seeds, best configuration, speed-up, verdicts, files."""

from __future__ import annotations

import json
import statistics

import pytest

from memoptim.experiments import report as R
from memoptim.experiments.sweep import hp_slug


def fake_run(root, task, opt, hp, seed, curve, key="val_accuracy", mode="max", status="complete"):
    d = root / task / opt / hp_slug(hp) / f"seed{seed}"
    d.mkdir(parents=True)
    config = {"task": task, "optimizer": opt, "hyperparameters": hp, "seed": seed, "epochs": len(curve),
              "subset": None, "eval_subset": None, "batch_size": None, "schedule": "auto"}  # fmt: skip
    history = [{"epoch": i + 1, key: v, "train_loss": 1.0, "elapsed": 10.0 * (i + 1)}
               for i, v in enumerate(curve)]  # fmt: skip
    finite = [v for v in curve if v is not None]
    best = (max if mode == "max" else min)(finite) if finite else None
    metric = {"val_accuracy": "val_accuracy", "val_perplexity": "val_perplexity"}.get(key, key)
    summary = {"config": config, "metric": metric, "mode": mode, "status": status,
               f"best_{metric}": best, "elapsed": 10.0 * len(curve),
               "test_accuracy_at_best": best}  # fmt: skip
    (d / "config.json").write_text(json.dumps(config))
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    fm = "fashion-mnist"
    # adam: two learning rates; lr=1e-3 is better on average
    for s, c in enumerate([[80, 85, 86], [81, 84, 87], [79, 86, 85]]):
        fake_run(root, fm, "adam", {"lr": 0.001}, s, c)
    for s, c in enumerate([[70, 75, 80], [71, 76, 79], [72, 77, 81]]):
        fake_run(root, fm, "adam", {"lr": 0.0001}, s, c)
    # adam+cm: slightly lower than adam -> "does not beat"
    for s, c in enumerate([[80, 84, 85], [80, 83, 86], [79, 84, 85]]):
        fake_run(root, fm, "adam+cm", {"lr": 0.001, "buffer_size": 5}, s, c)
    # SGD family for the speed-up: target = min best of sgd = 84
    for s, c in enumerate([[70, 80, 84, 85], [70, 81, 85, 86], [72, 82, 84, 84]]):
        fake_run(root, fm, "sgd", {"lr": 0.1}, s, c)
    for s, c in enumerate([[75, 84, 85, 86], [76, 85, 85, 85], [74, 84, 86, 86]]):
        fake_run(root, fm, "sgd+cm", {"lr": 0.1}, s, c)
    for s, c in enumerate([[70, 80, 83, 83], [70, 81, 85, 86], [72, 82, 84, 84]]):
        fake_run(root, fm, "sgd+cg", {"lr": 0.1}, s, c)
    # LM (lower is better) with a diverged seed that still had finite epochs
    for s, c in enumerate([[300, 250], [310, 240], [305, 260]]):
        fake_run(root, "brown-lm", "adam", {"lr": 0.001}, s, c, "val_perplexity", "min")
    for s, c in enumerate([[290, 230], [295, 235], [240, None]]):
        fake_run(root, "brown-lm", "adam+cm", {"lr": 0.001}, s, c, "val_perplexity", "min",
                 status="diverged" if s == 2 else "complete")  # fmt: skip
    # an unfinished run (no summary)
    (root / "fashion-mnist" / "adam" / "lr=0.01" / "seed0").mkdir(parents=True)
    (root / "fashion-mnist" / "adam" / "lr=0.01" / "seed0" / "config.json").write_text("{}")
    return root


def test_grouping_and_best_configuration(runs):
    found, unfinished = R.collect_runs(runs)
    assert len(found) == 3 * 8 and len(unfinished) == 1
    groups = R.group_runs(found)
    best = R.best_group(groups[("fashion-mnist", "adam")])
    assert best.hp == "lr=0.001"
    assert best.mean == pytest.approx(statistics.fmean([86, 87, 86]))
    assert best.std == pytest.approx(statistics.stdev([86, 87, 86]))
    lm = R.best_group(groups[("brown-lm", "adam+cm")])
    assert lm.values == [230, 235, 240]  # the diverged seed counts with its best finite value


def test_speedup_and_epochs_to_target(runs):
    found, _ = R.collect_runs(runs)
    groups = R.group_runs(found)
    best = {o: R.best_group(groups[("fashion-mnist", o)]) for o in ("sgd", "sgd+cg", "sgd+cm")}
    sp = R.speedups(best)
    assert sp["target"] == 84
    assert sp["sgd"]["epochs"] == [3, 3, 3] and sp["sgd"]["speedup"] == pytest.approx(1.0)
    assert sp["sgd+cm"]["epochs"] == [2, 2, 2] and sp["sgd+cm"]["speedup"] == pytest.approx(1.5)
    assert sp["sgd+cg"]["epochs"] == [None, 3, 3] and sp["sgd+cg"]["speedup"] is None
    assert R.epochs_to_target([{"epoch": 1, "val_accuracy": None}, {"epoch": 2, "val_accuracy": 9}],
                              "val_accuracy", 9) == 2  # fmt: skip


def test_report_markdown_and_figures(runs, tmp_path):
    path = R.build_report(runs, tmp_path / "out")
    md = path.read_text()
    assert "## Table 2 analogue" in md and "## Table 3 analogue" in md
    assert "Table 4 analogue" not in md  # no stream runs
    adam_mean, adam_std = statistics.fmean([86, 87, 86]), statistics.stdev([86, 87, 86])
    assert f"{adam_mean:.1f} ± {adam_std:.1f} (n=3)" in md
    assert "179.4 ± 2.8" in md and "94.0 ± 0.3" in md  # the paper's numbers beside ours
    # no verdict word from grids of one or two learning rates: every best lr is at an edge
    verdicts = json.loads((tmp_path / "out" / "verdicts.json").read_text())
    pairs = {(v["task"], v["optimizer"], v["baseline"]): v["verdict"] for v in verdicts}
    assert pairs[("fashion-mnist", "adam+cm", "adam")] == "not tuned"
    assert pairs[("brown-lm", "adam+cm", "adam")] == "not tuned"
    assert pairs[("fashion-mnist", "sgd+cm", "sgd")] == "not tuned"
    assert "**not tuned** (best lr at the edge of its grid" in md
    assert "1.50x [2, 2, 2]" in md and "not reached (2/3)" in md
    assert "1 unfinished" in md and "(1 diverged)" in md
    assert (tmp_path / "out" / "curves_fashion-mnist.png").stat().st_size > 1000
    assert "run with `--diagnostics`" in md


def test_report_streams_and_diagnostics_curves(tmp_path):
    root = tmp_path / "runs"
    for s in range(2):
        for opt, la in (("adam", 60.0 + s), ("adam+cm", 70.0 + s)):
            fake_run(root, "split-fashion-mnist", opt, {"lr": 0.001}, s, [la], key="learning_accuracy")
    d = root / "fashion-mnist" / "adam+cm" / "lr=0.001" / "seed0"
    fake_run(root, "fashion-mnist", "adam+cm", {"lr": 0.001}, 0, [50, 60])
    lines = [{"epoch": 1, "val_accuracy": 50, "sharpness": 3.0, "distance": 1.0},
             {"epoch": 2, "val_accuracy": 60, "sharpness": 2.0, "distance": 1.5}]  # fmt: skip
    (d / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in lines))
    md = R.build_report(root, tmp_path / "out").read_text()
    assert "## Table 4 analogue" in md
    assert "70.5 ± 0.7 (n=2)" in md and "62.9 ± 0.4" in md
    # 10 points apart, but one learning rate and two seeds: no verdict word
    assert "| Adam+CM (lr 1e-3) | Adam (lr 1e-3) | critical momenta on top of Adam | 70.50 (2)" in md
    assert "**not tuned**" in md
    assert (tmp_path / "out" / "sharpness_fashion-mnist.png").exists()
    assert (tmp_path / "out" / "distance_fashion-mnist.png").exists()


def test_report_refuses_to_pool_runs_of_different_setups_in_one_line(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "runs"
    fake_run(root / "a", "fashion-mnist", "adam", {"lr": 0.001}, 0, [80, 85, 86])
    fake_run(root / "b", "fashion-mnist", "adam+cm", {"lr": 0.001}, 0, [80, 84])  # 2 epochs, not 3
    proc = subprocess.run([sys.executable, "-m", "memoptim", "report", "--runs", str(root), "--out",
                           str(tmp_path / "out"), "--no-plots"], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("memoptim report: error: the fashion-mnist runs under")
    assert "epochs=3" in lines[0] and "epochs=2" in lines[0] and "cannot be pooled" in lines[0]
    assert not (tmp_path / "out" / "report.md").exists()
    empty = subprocess.run([sys.executable, "-m", "memoptim", "report", "--runs", str(tmp_path / "none")],
                           capture_output=True, text=True)
    assert empty.returncode == 2 and len(empty.stderr.strip().splitlines()) == 1
    assert "no finished run under" in empty.stderr


def test_a_report_of_one_run_has_no_empty_table_and_no_broken_link(tmp_path):
    import re

    root = tmp_path / "runs"
    fake_run(root, "fashion-mnist", "adam", {"lr": 0.001}, 0, [80, 85, 86])
    out = tmp_path / "out"
    md = R.build_report(root, out).read_text()
    assert "No comparison yet" in md and "adam on fashion-mnist" in md
    lines = md.splitlines()
    for i, line in enumerate(lines):  # every table header is followed by its separator and a row
        if line.startswith("|---"):
            assert i + 1 < len(lines) and lines[i + 1].startswith("| "), f"empty table at line {i}"
    for target in re.findall(r"\]\(([^)#]+)\)", md):
        assert (out / target).exists(), f"broken link {target}"
    assert "lr 1e-3" in md and "0.001 " not in md
