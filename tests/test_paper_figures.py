"""Paper artifacts (Figs. 9, 10, 19, Table 14 / Fig. 20): a quick end-to-end run on a tiny
Fashion-MNIST stand-in, resume without retraining, and the verdict rules."""

from __future__ import annotations

import json
import re

import pytest
import torch

from memoptim.experiments import paper_figures as PF

SECTIONS = ("Fig. 9 analogue", "Fig. 10 analogue", "Fig. 19 analogue", "Table 14 / Fig. 20 analogue")
NUMBER_ROW = re.compile(r"^\|[^|]+\|.*\d+\.\d+", re.MULTILINE)


@pytest.fixture
def one_thread():
    """Train with one torch thread (the machine is shared), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_quick_run_all_writes_report_figures_and_results(tiny_data, monkeypatch, one_thread):
    out = tiny_data / "paper-figures"
    report = PF.run_all(out, quick=True, progress=False, verify_data=False)
    assert (out / "report.md").read_text() == report
    sections = report.split("\n## ")[1:]
    assert [s.split("\n")[0].split(":")[0] for s in sections] == list(SECTIONS)
    for section in sections:
        assert len(NUMBER_ROW.findall(section)) >= 3  # table rows with numbers
        assert "> Paper:" in section
        verdict = re.search(r"\*\*Verdict: (.*)\*\*", section).group(1)
        assert any(w in verdict for w in ("agrees", "does not agree", "inconclusive"))
        png = re.search(r"!\[.*\]\((.*\.png)\)", section).group(1)
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    results = json.loads((out / "results.json").read_text())
    assert set(results["artifacts"]) == {"fig9", "fig10", "fig19", "table14"}
    assert results["scale"]["name"] == "quick" and results["compute"]["runs"] > 0
    fig9 = results["artifacts"]["fig9"]["final_sharpness"]
    assert all(v[0] is not None and v[0] > 0 for v in fig9.values())
    fig19 = results["artifacts"]["fig19"]["m_sharpness_epoch_mean"]
    assert set(fig19) == set(PF.FIG19_OPTIMIZERS) and all(v[0] is not None for v in fig19.values())
    # run directories: <artifact>/<optimizer>/<slug>/seed<k>, finished, no checkpoint kept
    runs = sorted(out.glob("*/*/*/seed0/summary.json"))
    assert len(runs) >= 3 + 3 + 4 + 3
    assert not list(out.rglob("checkpoint.pt"))
    assert (out / "fig10-batch-buffer" / "adam+cm" / "bs64-C5-lr0.001" / "seed0").is_dir()

    # a second invocation finds every run and trains nothing
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(PF.runs, "train", no_training)  # the module that calls train
    assert PF.run_all(out, quick=True, progress=False, verify_data=False) == report


def test_config_slug():
    assert PF.config_slug(64, {"lr": 1e-3, "buffer_size": 5}) == "bs64-C5-lr0.001"
    assert PF.config_slug(32, {"lr": 0.0001}) == "bs32-lr0.0001"


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 2.0], [3.0, 4.1], "lower"),
        ([3.0, 4.0], [1.0, 2.2], "higher"),
        ([1.0, 5.0], [2.0, 4.0], "unclear"),  # the seeds disagree
        ([1.0, 3.0], [1.5, 3.4], "unclear"),  # same sign, but within the seed spread
        ([1.0], [2.0], "unclear"),  # one seed
    ],
)
def test_compare(a, b, expected):
    assert PF.compare(a, b)[0] == expected


def test_verdicts():
    assert PF.verdict_order([1.0, 2.0], [3.0, 4.1]).startswith("agrees")
    assert PF.verdict_order([3.0, 4.0], [1.0, 2.2]).startswith("does not agree")
    points = {64: [90.0, 91.0], 128: [85.0, 86.2], 256: [80.0, 81.0]}
    assert PF.verdict_best(points, 64, "batch").startswith("agrees")
    assert PF.verdict_best(points, 128, "batch").startswith("does not agree")
    close = {64: [90.0, 91.0], 128: [90.2, 90.9]}
    assert PF.verdict_best(close, 64, "batch").startswith("inconclusive")
