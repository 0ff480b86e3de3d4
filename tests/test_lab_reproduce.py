"""`memoptim reproduce toy --quick` and `memoptim plot trajectories` end to end."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from memoptim.cli import plot as plot_cli
from memoptim.cli import reproduce as reproduce_cli

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")
pytest.importorskip("tqdm")


def _parser():
    parser = argparse.ArgumentParser(prog="memoptim")
    sub = parser.add_subparsers(dest="command")
    reproduce_cli.register(sub)
    plot_cli.register(sub)
    return parser


def _run(argv):
    args = _parser().parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    assert _run(["reproduce", "toy", "--out", str(out), "--quick", "--no-progress"]) == 0
    return out


def _finite(x):
    return isinstance(x, float) and math.isfinite(x)


@pytest.mark.slow
def test_results_json_has_the_fixed_keys(quick_run):
    res = json.loads((quick_run / "results.json").read_text())
    for surface in ("goldstein_price", "levy"):
        for opt in ("adam", "adam+sam", "adam+cg", "adam+cm"):
            cell = res["table1"][surface][opt]
            assert _finite(cell["loss"]) and _finite(cell["sharpness"])
    for opt in ("adam", "adam+sam", "adam+cg", "adam+cm"):
        assert set(res["escape_ratio_10d"][opt]) == {"2", "3", "5", "10", "100"}
        assert all(0.0 <= v <= 1.0 for v in res["escape_ratio_10d"][opt].values())
    r1 = res["escape_ratio_1d"]
    assert set(r1["adam+cm"]) == {"5", "10", "20", "40"}
    assert set(r1["adam"]) == {"0"} and "10" in r1["adam+cg"]
    for by_c in r1.values():
        for by_s in by_c.values():
            assert set(by_s) == {"1", "2", "3", "5", "10", "100"}
    conv = res["convergence_rate"]
    assert 0 < max(conv["critical momenta C=5"]["rho"]) < 1
    # heavy ball's numerical optimum equals Polyak's closed form
    for a, b in zip(conv["momentum"]["rho"], conv["heavy_ball_closed_form_rho"]):
        assert a == pytest.approx(b, rel=1e-3)
    assert set(res["table5"]) == set(res["paper"]["table5"])
    assert res["claims"] and all(isinstance(c["reproduced"], bool) for c in res["claims"])
    assert res["meta"]["quick"] is True
    # Fig. 18, buffer vectors, the claims under every variant, MEG
    assert set(res["fig18"]) == {f"{n} C={C}" for n in ("adam+cg", "adam+cm") for C in (5, 10, 20)}
    for fig in ("fig2", "fig11", "fig12"):
        for opt in ("adam+cg", "adam+cm"):
            assert -1.0 <= res["buffer_vectors"][fig][opt]["cosine"] <= 1.0
    assert set(res["variants"]) == {"authors", "nomem", "vg", "adam-lr3", "adam-lr10"}
    ids = [c["id"] for c in res["claims"]]
    for v in res["variants"].values():
        assert [r["id"] for r in v["claims"]] == ids and v["results"]
    assert res["meg"]["reproduced"] is False


@pytest.mark.slow
def test_report_and_figures_exist(quick_run):
    report = (quick_run / "report.md").read_text()
    assert "Table 1" in report and "paper" in report and "reproduces?" in report
    assert "0.81" in report and "62.53" in report  # the paper's own numbers are quoted
    assert "Claims that reproduce per variant" in report and "## Claims under the variants" in report
    assert "Adam+MEG -- not reproduced" in report
    res = json.loads((quick_run / "results.json").read_text())
    for rel in res["figures"].values():
        path = quick_run / rel
        assert path.suffix == ".png" and path.stat().st_size > 5000
        assert f"({rel})" in report
    assert (quick_run / "report.html").read_text().count("<img") == len(res["figures"])


def test_plot_trajectories_cli(tmp_path, capsys):
    out = tmp_path / "gp.png"
    code = _run(["plot", "trajectories", "--surface", "goldstein-price", "--optimizers",
                 "adam,adam+cm", "--steps", "30", "--n-starts", "2", "--out", str(out)])
    assert code == 0 and out.stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "adam+cm" in printed and str(out) in printed
    assert _run(["plot", "trajectories", "--optimizers", "nope", "--out",
                 str(tmp_path / "x.png")]) == 2
