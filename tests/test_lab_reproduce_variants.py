"""The toy reproduction's new pieces: variants of Adam+CM, claims under them, Fig. 18, MEG."""

from __future__ import annotations

import argparse
import re
from functools import partial

import pytest
import torch

from memoptim.lab.reproduce import escape
from memoptim.lab.reproduce.claims import claims
from memoptim.lab.reproduce.common import EQ9_DEFAULTS, TABLE11, Settings
from memoptim.lab.reproduce.paper import MEG
from memoptim.lab.reproduce.report import _variants_section
from memoptim.lab.reproduce.run import run_experiments
from memoptim.lab.reproduce.variants import (
    VARIANTS,
    applicable,
    claims_under_variants,
    run_variant,
)
from memoptim.lab.surfaces import sharp_flat
from memoptim.lab.toy import run_toy
from memoptim.registry import AUTHORS


def _tiny() -> Settings:
    """Every experiment in a few steps (the structure, not the numbers, is under test)."""
    return Settings(quick=True, steps=4, lr_drop_at=2, table_seeds=2, ackley_seeds=2,
                    trajectory_starts=1, escape_points=2, cg_all_buffer_sizes=False,
                    kappas=(10.0,), conv_grid={"n_grid": 8, "n_alpha": 4, "n_beta": 4},
                    vector_starts=1, vector_window=(3, 4))


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    s = _tiny()
    res, _ = run_experiments(s)
    res["claims"] = claims(res)
    runs = {k: run_variant(v, s, False) for k, v in VARIANTS.items()}
    res["variants"] = claims_under_variants(res, runs)
    return res


def test_variant_jobs_replace_the_right_slots():
    cm, cg, sam_cm = TABLE11["adam+cm"], TABLE11["adam+cg"], TABLE11["adam+sam+cm"]
    a = VARIANTS["authors"]
    assert a.job("adam+cm", cm, TABLE11) == ("adam+cm-authors", cm)
    assert a.job("adam+cg", cg, TABLE11) == ("adam+cg-authors", cg)
    assert a.job("adam+sam+cm", sam_cm, TABLE11) == ("adam+sam+cm", {**sam_cm, **AUTHORS})
    assert a.job("adam", TABLE11["adam"], TABLE11) is None
    assert VARIANTS["vg"].job("adam+cm", cm, TABLE11) == ("adam+cm-vg", cm)
    assert VARIANTS["vg"].job("adam+sam+cm", sam_cm, TABLE11)[1]["second_moment"] == "gradient"
    assert VARIANTS["nomem"].job("adam+sam+cm", sam_cm, TABLE11)[1]["memory"] is False
    assert VARIANTS["nomem"].job("adam+cg", cg, TABLE11) is None  # only the authors' replace CG
    # lr-matched control: the experiment's own Adam (Adam+SAM) settings at 10x the lr
    assert VARIANTS["adam-lr10"].job("adam+cm", {**cm, "buffer_size": 5}, EQ9_DEFAULTS) == (
        "adam", {"lr": pytest.approx(0.5), "betas": (0.9, 0.99)})
    name, hp = VARIANTS["adam-lr3"].job("adam+sam+cm", sam_cm, TABLE11)
    assert name == "adam+sam" and hp["lr"] == pytest.approx(0.3) and hp["rho"] == TABLE11["adam+sam"]["rho"]


def test_claims_under_variants_table_has_a_row_per_claim_and_a_column_per_variant(tiny):
    ids = [c["id"] for c in tiny["claims"]]
    assert len(ids) == len(set(ids)) >= 20
    for key, v in tiny["variants"].items():
        assert [r["id"] for r in v["claims"]] == ids
        assert v["applicable"] == sum(r["applicable"] for r in v["claims"])
        assert v["reproduced"] == sum(bool(r["reproduced"]) for r in v["claims"])
        for c, r in zip(tiny["claims"], v["claims"]):
            assert r["applicable"] == applicable(c, VARIANTS[key])
            assert (r["reproduced"] is None) == (not r["applicable"])
    lines = [ln for ln in "\n".join(_variants_section(tiny)).splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["claim", "ours (Adam+CM)", *[v.label for v in VARIANTS.values()]]
    body = lines[2:]
    assert [r.split("|")[1].strip() for r in body[:-1]] == [c["label"] for c in tiny["claims"]]
    assert all(len(r.strip("|").split("|")) == len(header) for r in body)


def test_applicability_follows_what_the_variant_changes(tiny):
    by = {k: {r["id"]: r for r in v["claims"]} for k, v in tiny["variants"].items()}
    for k in VARIANTS:  # claims without Adam+CM or Adam+CG
        assert not by[k]["table1-gp-sam"]["applicable"] and not by[k]["fig3-converges"]["applicable"]
    # a claim about Adam+CG only: the authors' variant replaces Adam+CG, the others do not
    assert [k for k in VARIANTS if by[k]["fig11-cancellation"]["applicable"]] == ["authors"]
    # buffer-size claims need a buffer
    assert [k for k in VARIANTS if by[k]["table5-buffer-size"]["applicable"]] == ["authors", "vg"]
    assert all(by[k]["table1-levy-loss"]["applicable"] for k in VARIANTS)


def test_variant_results_hold_the_replacement_runs(tiny):
    auth = tiny["variants"]["authors"]
    assert {v["run_as"] for k, v in auth["results"]["table5"].items()} == {
        "adam+cm-authors", "adam+cg-authors"}
    assert auth["results"]["buffer_vectors"]["fig2"]["adam+cm"]["run_as"] == "adam+cm-authors"
    # the lr controls have no buffer: the three Table 5 slots of Adam+CM are one Adam run
    lr10 = tiny["variants"]["adam-lr10"]
    rows = [v for v in lr10["results"]["table5"].values()]
    assert {r["run_as"] for r in rows} == {"adam"} and len({r["loss"] for r in rows}) == 1
    assert set(lr10["jobs"]["fig7"]) == {f"adam+cm C={C}" for C in (5, 10, 20, 40)}
    assert lr10["jobs"]["fig7"]["adam+cm C=10"] == ("adam", {"lr": pytest.approx(0.5),
                                                             "betas": (0.9, 0.99)})


def test_fig18_quick_runs_and_matches_a_direct_run():
    torch.set_num_threads(1)
    s = Settings.quick_settings()
    jobs = escape.fig18_jobs(s)
    assert set(jobs) == {f"{n} C={C}" for n in ("adam+cg", "adam+cm") for C in (5, 10, 20)}
    assert all(hp["decay"] == 0.99 for _, hp in jobs.values())
    out, traj = escape.fig18(s, jobs, False)
    for cell in out.values():
        assert len(cell["cells"]) == 9 and 0 <= cell["escapes"] <= 9
    # the cell x0 = 3, s = 100 of Adam+CM C=10 is the same run made alone
    name, hp = jobs["adam+cm C=10"]
    alone = run_toy(partial(sharp_flat, s=100.0), torch.tensor([[3.0]], dtype=torch.float64), name, hp,
                    steps=s.steps, lr_drop_at=s.lr_drop_at)
    assert out["adam+cm C=10"]["cells"]["x0=3,s=100"]["final_x"] == pytest.approx(float(alone.final[0, 0]))
    assert traj["adam+cm C=10"].shape == (s.steps + 1, 9, 1)


def test_meg_is_reported_as_not_reproduced_with_the_papers_words():
    assert MEG["reproduced"] is False
    assert any("Momentum Extragradient" in t for t in MEG["paper_text"])
    assert re.search(r"never states the update rule", MEG["reason"])


def test_cli_variants_flag():
    from memoptim.cli import reproduce as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    # unset (None) means on for toy; the option is rejected for other targets, so it stays unset
    assert parser.parse_args(["reproduce", "toy"]).variants is not False
    assert parser.parse_args(["reproduce", "toy", "--variants"]).variants is True
    assert parser.parse_args(["reproduce", "toy", "--no-variants"]).variants is False
