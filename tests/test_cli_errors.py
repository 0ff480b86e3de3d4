"""Bad input to a command: one line on stderr, status 2, no traceback, nothing left behind.

Each case runs ``python -m memoptim`` in a subprocess, as a user would; the help texts and the
progress labels are checked in process.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from memoptim.registry import OPTIMIZERS, REGISTRY


def _fails(command: str, *argv: str, cwd: Path, prog: str = "") -> str:
    """Run ``memoptim <command> argv...``; assert status 2 and one line on stderr,
    ``memoptim <command>: error: ...`` (``prog``: another name than ``memoptim <command>``)."""
    proc = subprocess.run([sys.executable, "-m", "memoptim", command, *argv], capture_output=True,
                          text=True, timeout=300, cwd=cwd)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{prog or 'memoptim ' + command}: error: "), lines[0]
    assert proc.stdout == ""
    return lines[0]


def _train(*argv: str) -> tuple[str, ...]:
    return ("--task", "fashion-mnist", *argv)


def test_a_hyperparameter_the_optimizer_does_not_take_names_those_that_do(tmp_path):
    err = _fails("train", *_train("--optimizer", "adam", "--buffer-size", "7"), cwd=tmp_path)
    users = err.split("(it applies to: ", 1)[1].rstrip(")").split(", ")
    assert "adam takes no buffer_size" in err
    assert users == [name for name, entry in REGISTRY.items() if entry.memory]
    err = _fails("train", *_train("--optimizer", "sgd", "--beta1", "0.9"), cwd=tmp_path)
    assert "sgd takes no beta1 (it applies to: adam, " in err and "sgd+cm" not in err
    err = _fails("train", *_train("--optimizer", "adam+cm", "--beta2", "1.5"), cwd=tmp_path)
    assert "adam+cm" in err and "1.5" in err  # the constructor's check, before any data is read
    assert list(tmp_path.iterdir()) == []


def test_a_negative_learning_rate_is_read_as_a_value_then_refused(tmp_path):
    err = _fails("train", *_train("--optimizer", "adam", "--lr", "-1e-4"), cwd=tmp_path)
    assert "lr must be > 0" in err and "expected one argument" not in err


def test_a_negative_subset_is_refused(tmp_path):
    err = _fails("train", *_train("--optimizer", "adam", "--subset", "-5"), cwd=tmp_path)
    assert "argument --subset: must be >= 1, got -5" in err


def test_an_unknown_optimizer_lists_the_registry(tmp_path):
    err = _fails("train", *_train("--optimizer", "adamx"), cwd=tmp_path)
    assert "unknown optimizer 'adamx'" in err and ", ".join(OPTIMIZERS) in err
    err = _fails("sweep", *_train("--optimizers", "adam,adamx", "--epochs", "1"), cwd=tmp_path)
    assert ", ".join(OPTIMIZERS) in err


@pytest.mark.parametrize("task, dataset", [("fashion-mnist", "fashion-mnist"), ("brown-lm", "brown")])
def test_a_wrong_data_root_is_named_with_the_command_that_fetches_into_it(tmp_path, task, dataset):
    given = tmp_path / "mine" / dataset
    out = tmp_path / "runs" / "r1"
    err = _fails("train", "--task", task, "--optimizer", "adam", "--data-root", str(given),
                 "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert f"not found in {given}" in err
    assert f"MEMOPTIM_DATA={given.parent} bash scripts/get_data.sh {dataset}" in err
    # a directory not named after the dataset: the command, then the directory to give
    other = tmp_path / "elsewhere"
    err = _fails("train", "--task", task, "--optimizer", "adam", "--data-root", str(other),
                 "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert f"MEMOPTIM_DATA={other} bash scripts/get_data.sh {dataset}" in err
    assert str(other / dataset) in err
    assert not (tmp_path / "runs").exists()  # the failed run left no directory behind


def test_a_failed_sweep_leaves_no_directory_behind(tmp_path):
    err = _fails("sweep", "--task", "fashion-mnist", "--optimizers", "adam", "--epochs", "1",
                 "--data-root", str(tmp_path / "none"), "--out", str(tmp_path / "sw"), cwd=tmp_path)
    assert "get_data.sh fashion-mnist" in err
    assert not (tmp_path / "sw").exists()


def test_a_sweep_parameter_no_grid_has_is_refused(tmp_path):
    err = _fails("sweep", *_train("--optimizers", "adam", "--epochs", "1", "--param", "buffer_size=3"),
                 cwd=tmp_path)  # fmt: skip
    assert "--param buffer_size" in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_unreachable_storage_names_the_host_and_the_cause(tiny_data):
    pytest.importorskip("psycopg2", reason="needs the PostgreSQL driver: memoptim[postgres]")
    port = _closed_port()
    url = f"postgresql://someone:secret@127.0.0.1:{port}/sweeps"
    err = _fails("sweep", *_train("--optimizers", "sgd", "--epochs", "1", "--no-verify",
                                  "--storage", url, "--out", str(tiny_data / "sw")), cwd=tiny_data)
    assert f"127.0.0.1:{port}" in err and "refused" in err.lower()
    assert "secret" not in err
    assert not (tiny_data / "sw").exists()


@pytest.mark.parametrize("url, host", [
    ("postgresql://someone:secret@db.example:port/sweeps", "db.example:port"),  # port not a number
    ("postgresql//someone:secret@db.example/sweeps", None),  # no scheme
])
def test_a_malformed_storage_url_is_one_line(tmp_path, url, host):
    pytest.importorskip("sqlalchemy")
    err = _fails("sweep", *_train("--optimizers", "sgd", "--epochs", "1", "--storage", url), cwd=tmp_path)
    assert "not a usable database URL" in err and "secret" not in err
    if host:
        assert f"at {host}" in err


def test_plot_errors_have_the_common_format(tmp_path):
    pytest.importorskip("matplotlib")
    err = _fails("plot", "trajectories", "--optimizers", "nope", cwd=tmp_path)
    assert "unknown optimizer(s) 'nope'" in err and ", ".join(OPTIMIZERS) in err
    err = _fails("plot", "trajectories", "--steps", "0", cwd=tmp_path)
    assert "--steps" in err
    err = _fails("plot", "trajectories", "--start", "1", cwd=tmp_path,
                 prog="memoptim plot trajectories")  # argparse's own error, one line too
    assert "argument --start: expected x,y" in err


def test_help_is_plain_text_and_lists_every_registry_name():
    from memoptim.cli.main import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    texts = [parser.format_help()]
    for name, sub in commands.items():
        texts.append(sub.format_help())
        if name == "plot":
            texts.append(sub._subparsers._group_actions[0].choices["trajectories"].format_help())
    for text in texts:
        assert "``" not in text and not re.search(r":[a-z]+:`", text), text
    train_help = " ".join(commands["train"].format_help().split())
    sweep_help = " ".join(commands["sweep"].format_help().split())
    for name in OPTIMIZERS:  # whole, not broken at a hyphen
        assert re.search(rf"[ :]{re.escape(name)}[, ]", train_help), name
        assert re.search(rf"[ :]{re.escape(name)}[, ]", sweep_help), name


def test_progress_lines_of_sweep_trials_name_the_optimizer(tiny_data, monkeypatch):
    from memoptim.experiments import sweep as S
    from memoptim.experiments import train as train_module
    from memoptim.progress import Progress

    seen = []
    real_train = train_module.train

    def spy(*args, **kwargs):
        seen.append(Progress(1, "epoch 1/1", enabled=False).desc)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(train_module, "train", spy)
    S.sweep("fashion-mnist", ["sgd"], out=tiny_data / "sw", epochs=1, seeds=[0], overrides={"lr": [0.01]},
            train_kwargs={"verify_data": False, "subset": 20, "batch_size": 10}, log=lambda m: None)
    assert seen == ["[sgd lr=0.01,momentum=0.9 seed 0] epoch 1/1"]


def test_the_tuned_protocol_names_the_optimizer_when_it_widens(tiny_data, monkeypatch):
    from memoptim.experiments import protocol
    from memoptim.experiments import train as train_module

    def fake(task, opt, hp, epochs, seed, out_dir, *args, **kwargs):
        return {"best_val_accuracy": hp["lr"], "status": "complete", "elapsed": 0.0}

    monkeypatch.setattr(train_module, "train", fake)
    lines: list[str] = []
    protocol.run_protocol("fashion-mnist", ["adam"], [1e-3, 1e-2], out=tiny_data / "st", epochs=1,
                          tune_seeds=[0], confirm_seeds=[0], max_widen=1, log=lines.append,
                          train_kwargs={"verify_data": False, "subset": 20})  # fmt: skip
    widening = [line for line in lines if "widening" in line]
    assert widening and all(line.startswith("[tune] fashion-mnist adam: best lr") for line in widening)


def test_the_bars_of_a_reproduction_variant_name_the_variant(monkeypatch):
    from memoptim.lab.reproduce import variants as V
    from memoptim.progress import Progress

    stream = io.StringIO()

    def runner(jobs):
        with Progress(1, "Table 1", stream=stream) as bar:
            bar.update(1)
        return {"table1": {}}

    base = {"cm": ("adam+cm", {"lr": 0.1}), "adam": ("adam", {"lr": 0.1})}
    monkeypatch.setattr(V, "_experiments", lambda s, progress: [("table1", base, {}, runner)])
    V.run_variant(V.VARIANTS["authors"], None, progress=True)  # type: ignore[arg-type]
    assert stream.getvalue().startswith("[variant authors: adam+cm-authors] Table 1: 1/1 steps")
