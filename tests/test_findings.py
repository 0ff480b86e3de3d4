"""The findings where users look (README "Does it help?", docs/findings.md) are generated from
verdicts.json and say what the verdict words say."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from memoptim.experiments import findings as F

ROOT = Path(__file__).resolve().parents[1]
VERDICTS = ROOT / "results" / "benchmarks" / "verdicts.json"
TOY = ROOT / "results" / "toy" / "results.json"


def _committed() -> tuple[list[dict], dict | None]:
    return F.load(VERDICTS, TOY)


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    assert F.START in text and F.END in text, "README lost its findings markers"
    return F.START + text.split(F.START, 1)[1].split(F.END, 1)[0] + F.END


def test_readme_section_is_what_verdicts_json_gives():
    rows, toy = _committed()
    assert _readme_block() == F.readme_section(rows, toy), (
        f"README's 'Does it help?' differs from verdicts.json: run `{F.COMMAND}`")


def test_docs_findings_page_is_what_verdicts_json_gives():
    rows, toy = _committed()
    assert (ROOT / "docs" / "findings.md").read_text() == F.docs_page(rows, toy), (
        f"docs/findings.md differs from verdicts.json: run `{F.COMMAND}`")


def test_every_interval_in_the_readme_table_is_a_verdict_of_verdicts_json():
    rows, _ = _committed()
    table = [line for line in _readme_block().splitlines() if line.startswith("| ") and "[" in line]
    assert table, "the README's findings table has no intervals"
    known = {f"{r['diff']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] **{r['verdict']}**"
             for r in rows if r["diff"] is not None}
    for line in table:
        for cell in re.findall(r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\] \*\*[a-z ]+\*\*", line):
            assert cell in known, f"{cell!r} is not in verdicts.json"


def test_a_changed_number_changes_the_section():
    rows, toy = _committed()
    changed = copy.deepcopy(rows)
    # the Adam+CM row against the tuned baseline is always in the README (a pending row may not be)
    row = next(r for r in changed if r["optimizer"] == "adam+cm" and r["baseline"] in ("adam", "adamw")
               and r["diff"] is not None)
    row["diff"] += 0.5
    assert F.readme_section(changed, toy) != F.readme_section(rows, toy)


def _row(task: str, opt: str, base: str, diff: float | None, verdict: str, mode: str = "max") -> dict:
    lo, hi = (None, None) if diff is None else (diff - 0.2, diff + 0.2)
    return {"task": task, "optimizer": opt, "baseline": base, "diff": diff, "ci_low": lo, "ci_high": hi,
            "verdict": verdict, "mean": 90.0, "baseline_mean": 90.0, "best_lr": 1e-3, "baseline_best_lr": 1e-3,
            "seeds": 5, "baseline_seeds": 5, "contrast": "", "metric": "val_accuracy", "mode": mode,
            "reason": ""}


def test_prose_follows_the_verdict_words():
    behind = [_row("fashion-mnist", "adam+cm", "adam", -0.7, "behind"),
              _row("brown-lm", "adam+cm", "adam", 0.1, "level", mode="min")]
    text = " ".join(F.answer(behind))
    assert "behind on Fashion-MNIST" in text and "level on Brown LM" in text
    assert "not supported by this evidence" in text and "disagrees with the paper" in text
    ahead = [_row("fashion-mnist", "adam+cm", "adam", 0.9, "ahead")]
    text = " ".join(F.answer(ahead))
    assert "helps on Fashion-MNIST" in text
    assert "not supported" not in text and "disagrees" not in text


def test_the_transformer_is_compared_with_adamw_and_named_so():
    rows = [_row("gpt-brown", "adam+cm", "adamw", 3.0, "behind", mode="min"),
            _row("gpt-brown", "lion", "lion", None, "pending")]
    assert "(AdamW on the transformer)" in F.answer(rows)[0]
    table = "\n".join(F.headline_table(rows))
    assert "| AdamW 90.00 (1e-3) | +3.00 [+2.80, +3.20] **behind** |" in table
    rows[0]["baseline_seeds"] = 1  # the baseline still being tuned
    assert "| AdamW 90.00 (1e-3, 1 seed so far) |" in "\n".join(F.headline_table(rows))


def test_priority_answer_and_the_contrasts_not_run_yet():
    rows = [_row("brown-lm", "adam+cm", "adam+cm-random", 0.1, "level")]
    text = F.priority(rows)
    assert "No difference detected so far" in text and "FIFO replacement not measured yet" in text
    rows.append(_row("brown-lm", "adam+cm", "adam+cm-fifo", 2.0, "ahead"))
    assert "disagree" in F.priority(rows)
    missing = F.mechanism(rows)[-1]
    assert missing.startswith("- Not measured yet") and "decay 0.99" in missing


def test_best_variant_respects_the_metric_direction():
    rows = [_row("brown-lm", "adam+cm-nomem", "adam", -2.0, "ahead", mode="min"),
            _row("brown-lm", "adamomentum", "adam", 1.0, "level", mode="min"),
            _row("brown-lm", "adam+cm-random", "adam", -5.0, "pending", mode="min")]
    assert F.best_variant(rows, "brown-lm")["optimizer"] == "adam+cm-nomem"


def test_replace_section_needs_the_markers():
    assert F.replace_section(f"a\n{F.START}\nold\n{F.END}\nb", "NEW") == "a\nNEW\nb"
    with pytest.raises(ValueError, match="markers"):
        F.replace_section("no markers", "NEW")



def _buffer(replaced: float, oldest: float, age: float, decay: float = 0.7, policy: str = "norm",
            seeds: int = 5) -> dict:
    return {"policy": policy, "decay": decay, "seeds": seeds, "runs": 5, "buffer_replacement_rate": replaced,
            "buffer_oldest_share": oldest, "buffer_mean_age": age, "buffer_fifo_age": 2.0}


def _study() -> list[dict]:
    """Brown LM: Adam+CM's own runs predate the diagnostic; Adam+SAM+CM's window-like buffer."""
    sam = _row("brown-lm", "adam+sam+cm", "adam", 1.0, "behind", mode="min")
    sam["buffer"] = _buffer(1.0, 1.0, 2.0)
    cg = _row("brown-lm", "adam+cg", "adam", 2.0, "behind", mode="min")
    cg["buffer"] = _buffer(1.0, 1.0, 2.0, seeds=2)
    slow = _row("brown-lm", "adam+cm-decay0.99", "adam+cm", 0.5, "level", mode="min")
    slow["buffer"] = _buffer(0.58, 0.29, 9.46, decay=0.99)
    untuned = _row("fashion-mnist", "adam+cm-authors", "adam", None, "not tuned")
    untuned["buffer"] = _buffer(1.0, 0.81, 2.05)
    cm = _row("brown-lm", "adam+cm", "adam", 1.8, "behind", mode="min")
    cm["buffer"] = None
    nomem = _row("brown-lm", "adam+cm", "adam+cm-nomem", 4.2, "behind", mode="min")
    return [sam, cg, slow, untuned, cm, nomem]


def test_buffer_dynamics_table_shows_tuned_configurations_only():
    rows = _study()
    text = "\n\n".join(F.buffer_answer(rows))
    assert "| Brown LM | momenta | 0.7 | Adam+SAM+CM | 5 of 5 | 100% | 100% | 2.00 (2.00) |" in text
    assert "| Brown LM | gradients | 0.7 | Adam+CG | 2 of 5 | 100% | 100% | 2.00 (2.00) |" in text
    assert "| Brown LM | momenta | 0.99 | Adam+CM, decay 0.99 | 5 of 5 | 58% | 29% | 9.46 (2.00) |" in text
    assert "Fashion-MNIST" not in text  # a configuration without a final verdict is not shown
    assert "Adam+CM's own tuned runs on Brown LM predate this diagnostic" in text
    assert "Key decay 0.99 against the paper's 0.7, each tuned: Brown LM +0.50 [+0.30, +0.70] **level**" in text
    assert "Letting the key decide more (fewer replacements, older entries) changed nothing detectable." in text
    worse = [{**r, "verdict": "behind"} if r["optimizer"] == "adam+cm-decay0.99" else r for r in rows]
    assert "older entries) made Adam+CM worse." in "".join(F.buffer_answer(worse))
    assert "FIFO" not in text.split("|")[-1]  # no FIFO contrast yet: no answer on recency
    partial = _row("brown-lm", "adam+cm-random", "adam", 1.0, "behind", mode="min")
    partial["buffer"] = {"policy": "random", "decay": 0.7, "buffer_oldest_share": 0.2}  # keys missing
    assert F.buffers([*rows, partial]) == F.buffers(rows)
    assert F.buffer_answer([_row("brown-lm", "adam+cm", "adam", 1.0, "behind")]) == []


def test_the_recency_answer_follows_the_fifo_verdicts_and_the_momentum_buffers():
    rows = _study()
    fifo = _row("brown-lm", "adam+cm", "adam+cm-fifo", 0.1, "level", mode="min")
    text = F.recency_answer([*rows, fifo], F.buffers([*rows, fifo]))
    assert text.startswith("**So at the paper's settings the priority hardly selects.** On Brown LM")
    assert "(Adam+SAM+CM)" in text and "against v from m alone (no buffer) it is behind on Brown LM" in text
    assert F.recency_answer([*rows, {**fifo, "verdict": "pending"}], F.buffers(rows)) is None
    # only a gradient buffer measured: no claim about the momentum buffer
    no_cm = [r for r in rows if r["optimizer"] != "adam+sam+cm"]
    text = F.recency_answer([*no_cm, fifo], F.buffers(no_cm))
    assert text == "On Brown LM a FIFO window does as well as the gradient-norm key."
    ahead = {**fifo, "verdict": "ahead", "diff": -1.0}
    assert "although its momentum buffers mostly evict" in F.recency_answer([*rows, ahead], F.buffers(rows))
    rows[0]["buffer"] = _buffer(1.0, 0.5, 3.0)  # not window-like
    assert not F.window_like(rows[0]["buffer"]) and F.window_like(_buffer(1.0, 0.8, 2.4))
    text = F.recency_answer([*rows, ahead], F.buffers(rows))
    assert text.startswith("**The priority matters on Brown LM:**") and "although" not in text
    assert "hardly selects" not in F.recency_answer([*rows, fifo], F.buffers(rows))
    behind = {**fifo, "verdict": "behind", "diff": 1.0}
    text = F.recency_answer([*rows, behind], F.buffers(rows))
    assert text.startswith("**Ranking by gradient norm costs on Brown LM:**")


def test_only_tuned_adam_cm_runs_are_said_to_predate_the_diagnostic():
    rows = [*_study(), _row("gpt-brown", "adam+cm", "adamw", None, "not tuned", mode="min")]
    text = F.buffer_answer(rows)[0]
    assert "tuned runs on Brown LM predate" in text and "GPT" not in text
