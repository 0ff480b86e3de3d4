"""``memoptim reproduce``: the paper-figures target end to end (quick scale, tiny data) and the
refusal of options that belong to the other target."""

from __future__ import annotations

import json

import pytest
import torch

from memoptim.cli.main import main

pytest.importorskip("matplotlib")


@pytest.fixture
def restore_threads():
    """The command sets torch's thread count (default 1): restore it afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_reproduce_paper_figures_quick(tiny_data, capsys, restore_threads):
    out = tiny_data / "pf"
    argv = ["reproduce", "paper-figures", "--quick", "--no-verify", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    assert torch.get_num_threads() == 1
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert report.count("\n## ") == 4 and "**Verdict: " in report
    results = json.loads((out / "results.json").read_text())
    assert results["scale"]["name"] == "quick" and results["compute"]["runs"] > 0
    assert f"report: {out}/report.md" in printed
    assert "  fig9: " in printed and "  fig10 batch: " in printed and "  table14 accuracy: " in printed
    assert (out / "fig19-m-sharpness" / "adam+cm" / "bs32-lr0.0001" / "seed0" / "summary.json").exists()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["reproduce", "paper-figures", "--no-variants"], "--variants/--no-variants"),
        (["reproduce", "paper-figures", "--variants"], "--variants/--no-variants"),
        (["reproduce", "toy", "--threads", "2"], "--threads"),
        (["reproduce", "toy", "--data-root", "x"], "--data-root"),
        (["reproduce", "toy", "--no-verify"], "--no-verify"),
    ],
)
def test_an_option_of_the_other_target_is_refused_in_one_line(argv, flag, tmp_path, capsys):
    assert main([*argv, "--quick", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err and "only" in err
    assert not (tmp_path / "out").exists()  # nothing ran
