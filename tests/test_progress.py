"""memoptim.progress: a tqdm bar in a terminal, one line per phase otherwise, nothing when off."""

from __future__ import annotations

import io
import re
import sys

import pytest

from memoptim.progress import Progress

SUMMARY = re.compile(r"phase: 1000/1000 steps in \d+\.\d s \(loss=0\.2500\)\n")


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _run_phase(bar: Progress, steps: int = 1000) -> None:
    for _ in range(steps):
        bar.update(1, loss=0.25)
    bar.close()
    bar.close()  # a second close writes nothing


def test_captured_stderr_gets_one_line_per_phase(capsys):
    _run_phase(Progress(1000, "phase"))
    captured = capsys.readouterr()
    assert SUMMARY.fullmatch(captured.err), captured.err
    assert "\r" not in captured.err and captured.out == ""


def test_unknown_total_and_with_block():
    stream = io.StringIO()
    with Progress(None, "stream", unit="item", stream=stream) as bar:
        bar.update(3)
    assert re.fullmatch(r"stream: 3 items in \d+\.\d s\n", stream.getvalue())


def test_disabled_or_empty_phase_writes_nothing(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    _run_phase(Progress(1000, "phase", enabled=False))
    _run_phase(Progress(0, "empty"), steps=0)
    assert sys.stderr.getvalue() == ""
    _run_phase(Progress(1000, "phase", enabled=False, stream=io.StringIO()))
    assert capsys.readouterr().err == ""


def test_terminal_gets_a_tqdm_bar(monkeypatch):
    tqdm_std = pytest.importorskip("tqdm.std")
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    bar = Progress(1000, "phase")
    assert isinstance(bar.bar, tqdm_std.tqdm)
    _run_phase(bar)
    shown = sys.stderr.getvalue()
    assert "phase" in shown and "1000/1000" in shown and "loss=0.2500" in shown
    assert not SUMMARY.search(shown)  # the bar, not the summary line


def test_terminal_without_tqdm_falls_back_to_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails as if not installed
    stream = FakeTerminal()
    bar = Progress(1000, "phase", stream=stream)
    assert bar.bar is None
    _run_phase(bar)
    assert SUMMARY.fullmatch(stream.getvalue())


def test_training_logs_one_line_per_epoch(tiny_data, capsys):
    from memoptim.experiments.train import train

    train("fashion-mnist", "sgd", {"lr": 0.01}, 2, 0, tiny_data / "run", batch_size=20,
          subset=40, eval_subset=10, verify_data=False, progress=True)  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert all(re.fullmatch(r"epoch \d/2: 2/2 steps in \d+\.\d s \(loss=\d+\.\d{4}\)", x)
               for x in lines)  # fmt: skip
