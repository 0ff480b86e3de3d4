"""The train / sweep / report command-line modules (through their own argparse registration)."""

from __future__ import annotations

import argparse
import json

import pytest

from memoptim.cli import report as report_cli
from memoptim.cli import sweep as sweep_cli
from memoptim.cli import train as train_cli


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="memoptim")
    sub = parser.add_subparsers()
    for mod in (train_cli, sweep_cli, report_cli):
        mod.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_train_cli_writes_metrics_and_resumes(tiny_data, capsys):
    out = tiny_data / "run"
    argv = ["train", "--task", "fashion-mnist", "--optimizer", "adam+cm", "--lr", "1e-3",
            "--buffer-size", "3", "--beta2", "0.99", "--epochs", "2", "--seed", "1",
            "--out", str(out), "--no-verify", "--no-progress", "--batch-size", "25"]  # fmt: skip
    assert run_cli(*argv) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [d["epoch"] for d in lines] == [1, 2]
    assert {"train_loss", "val_accuracy", "lr", "time"} <= set(lines[0])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hyperparameters"] == {"lr": 1e-3, "buffer_size": 3, "beta2": 0.99}
    assert cfg["seed"] == 1 and cfg["optimizer"] == "adam+cm"
    assert run_cli(*argv) == 2  # refuses to overwrite
    assert "--resume" in capsys.readouterr().err
    assert run_cli(*argv, "--resume") == 0  # finished: nothing to redo
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_train_cli_missing_data_prints_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEMOPTIM_DATA", str(tmp_path / "none"))
    code = run_cli("train", "--task", "brown-lm", "--optimizer", "adam", "--out", str(tmp_path / "r"))
    assert code == 2
    assert "bash scripts/get_data.sh brown" in capsys.readouterr().err


def test_sweep_param_parsing():
    assert sweep_cli.parse_param("lr=0.1,1e-3") == ("lr", [0.1, 0.001])
    assert sweep_cli.parse_param("buffer-size=5,20") == ("buffer_size", [5, 20])
    with pytest.raises(argparse.ArgumentTypeError):
        sweep_cli.parse_param("lr")


def test_train_cli_m_sharpness_batches_logs_the_m_sharpness(tiny_data, capsys):
    out = tiny_data / "msharp"
    assert run_cli("train", "--task", "fashion-mnist", "--optimizer", "sgd", "--lr", "0.01",
                   "--epochs", "1", "--subset", "40", "--eval-subset", "10", "--batch-size", "20",
                   "--sharpness-iters", "1", "--m-sharpness-batches", "2", "--out", str(out),
                   "--no-verify", "--no-progress") == 0  # fmt: skip
    (line,) = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert line["m_sharpness"] > 0 and "sharpness" in line  # N > 0 turns the diagnostics on
    assert json.loads((out / "config.json").read_text())["diagnostics"] is True
    with pytest.raises(SystemExit):
        run_cli("train", "--task", "fashion-mnist", "--optimizer", "sgd", "--m-sharpness-batches", "-1")
    capsys.readouterr()


def test_sweep_cli_passes_m_sharpness_batches_only_when_on(monkeypatch):
    import memoptim.experiments.sweep as sweep_module

    seen = []
    monkeypatch.setattr(sweep_module, "sweep", lambda *a, train_kwargs, **k: seen.append(train_kwargs) or {})
    argv = ("sweep", "--task", "fashion-mnist", "--optimizers", "sgd", "--epochs", "1")
    assert run_cli(*argv) == 0
    assert run_cli(*argv, "--m-sharpness-batches", "3") == 0
    # off: the keywords (which name the sweep's studies) are those of before the flag existed
    assert seen[0] == {"batch_size": None, "schedule": "auto", "subset": None, "eval_subset": None,
                       "diagnostics": False}  # fmt: skip
    assert seen[1]["diagnostics"] is True and seen[1]["m_sharpness_batches"] == 3
    assert seen[1]["sharpness_iters"] == 20


def test_sweep_then_report_cli(tiny_data, capsys):
    out = tiny_data / "sweep"
    assert run_cli("sweep", "--task", "fashion-mnist", "--optimizers", "sgd,sgd+cm",
                   "--param", "lr=0.01", "--seeds", "0,1", "--epochs", "1", "--subset", "20",
                   "--batch-size", "10", "--no-verify", "--out", str(out)) == 0  # fmt: skip
    text = capsys.readouterr().out
    res = json.loads(text[text.index("\n{") + 1 :])  # the results JSON after the log lines
    assert res["sgd"]["complete"] == res["sgd+cm"]["complete"] == 2
    assert (out / "optuna.db").exists()
    assert len(list(out.glob("fashion-mnist/*/*/seed*/summary.json"))) == 4
    assert run_cli("report", "--runs", str(out), "--out", str(tiny_data / "rep"), "--no-plots") == 0
    md = (tiny_data / "rep" / "report.md").read_text()
    assert "## Table 3 analogue" in md and "SGD+CM" in md



def test_an_output_directory_that_cannot_be_created_is_one_line_and_status_1(tmp_path, capsys):
    from memoptim.cli.main import main

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["reproduce", "toy", "--quick", "--out", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("memoptim reproduce: error:") and "Traceback" not in err
    assert len(err.splitlines()) == 1 and str(blocker) in err


def test_a_missing_optional_dependency_names_the_extra(tiny_data, monkeypatch, capsys):
    import sys

    from memoptim.cli.main import main

    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now fails
    code = main(["sweep", "--task", "fashion-mnist", "--optimizers", "adam", "--epochs", "1",
                 "--out", str(tiny_data / "sw"), "--no-verify"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "'optuna'" in err and "pip install 'memoptim[bench]'" in err


def test_resuming_from_a_truncated_checkpoint_is_one_line_naming_the_file(tiny_data, capsys):
    from memoptim.cli.main import main

    out = tiny_data / "run"
    argv = ["train", "--task", "fashion-mnist", "--optimizer", "adam", "--epochs", "2", "--out", str(out),
            "--no-verify", "--no-progress", "--batch-size", "30"]
    ckpt = out / "checkpoint.pt"
    assert main(argv) == 0  # the command keeps the finished run's checkpoint
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    (out / "summary.json").unlink()  # an unfinished run, so resuming reads the checkpoint
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(ckpt) in err and "delete it to start this run over" in err


@pytest.mark.parametrize(("param", "message"), [
    ("lr=0.1", "cannot be combined"),
    ("weight_decay=0.1", "no optimizer in --optimizers has 'weight_decay'"),
    ("buffer_size=5,20", "one value per hyperparameter"),
])
def test_tuned_protocol_rejects_params_it_cannot_honour(tiny_data, capsys, param, message):
    code = run_cli("sweep", "--task", "fashion-mnist", "--optimizers", "adam,adam+cm", "--tune-lr",
                   "1e-3,1e-2", "--param", param, "--epochs", "1", "--out", str(tiny_data / "p"),
                   "--no-verify")
    assert code == 2 and message in capsys.readouterr().err
    assert not (tiny_data / "p" / "fashion-mnist").exists()  # nothing trained


def test_a_run_killed_while_writing_its_checkpoint_keeps_the_last_good_one(tiny_data, monkeypatch):
    # Checkpoints are written to a temporary file and renamed: a kill in the middle of the write
    # (simulated by a crash of torch.save after half the bytes) leaves the previous one intact.
    import torch

    from memoptim.experiments import train as train_module

    out = tiny_data / "run"
    argv = ["train", "--task", "fashion-mnist", "--optimizer", "adam+cm", "--epochs", "2", "--out", str(out),
            "--no-verify", "--no-progress", "--batch-size", "30"]
    assert run_cli(*argv) == 0
    good = (out / "checkpoint.pt").read_bytes()
    (out / "summary.json").unlink()  # pretend the second epoch is being rewritten
    real_save = torch.save

    def killed(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(len(good) // 2)
        raise KeyboardInterrupt  # the process dies before the rename

    monkeypatch.setattr(train_module.torch, "save", killed)
    with open(out / "metrics.jsonl") as f:
        lines = f.readlines()
    (out / "metrics.jsonl").write_text("".join(lines[:1]))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["unit"], ckpt["finished"] = 1, False  # resume at the second epoch
    ckpt["history"] = ckpt["history"][:1]
    real_save(ckpt, out / "checkpoint.pt")
    good = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(KeyboardInterrupt):
        run_cli(*argv, "--resume")
    assert (out / "checkpoint.pt").read_bytes() == good  # the last good checkpoint survived
    monkeypatch.setattr(train_module.torch, "save", real_save)
    assert run_cli(*argv, "--resume") == 0  # and the run completes from it
