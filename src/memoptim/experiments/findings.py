"""The findings where users look: the README's "Does it help?" section and the docs' Findings page,
generated from ``verdicts.json`` (and the toy reproduction's ``results.json``).

Every number in them is read from those files; the sentences around the numbers are chosen by
the verdict words (``ahead`` / ``level`` / ``behind`` / ``pending`` / ``not tuned``), so that the
prose cannot contradict the table.  Regenerate both with::

    memoptim report --runs results/benchmarks/study --out results/benchmarks --findings

The README keeps the generated section between :data:`START` and :data:`END`; the docs page is
written whole.  ``tests/test_findings.py`` fails when either differs from what this module
renders from the committed files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memoptim.experiments import paper
from memoptim.experiments.protocol import format_lr
from memoptim.experiments.verdicts import (
    CONTRASTS,
    TASK_TITLES,
    baseline_of,
    metric_title,
    seeds_text,
    verdict_cell,
)
from memoptim.optim.memory import CRITICAL_GRADIENTS, CRITICAL_MOMENTA
from memoptim.registry import LABELS, memory_mode

START = "<!-- findings:start -->"
END = "<!-- findings:end -->"
COMMAND = "memoptim report --runs results/benchmarks/study --out results/benchmarks --findings"
FINAL = ("ahead", "level", "behind")
Row = Mapping[str, Any]
#: ``(task, optimizer) -> buffer dynamics`` (:func:`buffers`).
Found = Mapping[tuple[str, str], Mapping[str, Any]]


def _name(o: str) -> str:
    return LABELS.get(o, o)


def _title(task: str) -> str:
    return TASK_TITLES.get(task, task)


def _diff(r: Row) -> str:
    """``+1.84 [+0.16, +3.51] **behind**``, or the verdict word alone without an interval."""
    return verdict_cell(r)


def _find(rows: Sequence[Row], task: str, optimizer: str, baseline: str) -> Row | None:
    return next((r for r in rows if r["task"] == task and r["optimizer"] == optimizer
                 and r["baseline"] == baseline), None)  # fmt: skip


def _tasks(rows: Sequence[Row]) -> list[str]:
    return sorted({r["task"] for r in rows})


def best_variant(rows: Sequence[Row], task: str) -> Row | None:
    """The best optimizer other than Adam+CM against the task's baseline, among those with a final
    verdict (by mean difference, in the metric's better direction)."""
    base = baseline_of("adam", task)
    cands = [r for r in rows if r["task"] == task and r["baseline"] == base and r["optimizer"] != "adam+cm"
             and r["verdict"] in FINAL]  # fmt: skip
    if not cands:
        return None
    sign = 1.0 if cands[0].get("mode", "max") == "max" else -1.0
    return max(cands, key=lambda r: sign * r["diff"])


def _paper_cell(task: str) -> str:
    """The paper's Adam+CM and Adam on the benchmarks the task stands in for."""
    cells = []
    for bench in paper.ANALOGUES.get(task, ()):
        table = paper.TABLE4 if task.endswith("-fashion-mnist") and task != "fashion-mnist" else paper.TABLE2
        cm, adam = table.get("adam+cm", {}).get(bench), table.get("adam", {}).get(bench)
        if cm and adam:
            cells.append(f"{bench} {cm[0]:.1f} vs {adam[0]:.1f}")
    return "; ".join(cells) or "–"


def headline_table(rows: Sequence[Row]) -> list[str]:
    """One row per task: the tuned baseline, Adam+CM and the best variant against it, the paper."""
    md = ["| task (metric) | tuned baseline (lr) | Adam+CM − baseline, 95% CI | best variant − baseline, "
          "95% CI | paper: Adam+CM vs Adam |", "|---|---|---|---|---|"]
    for task in _tasks(rows):
        base = baseline_of("adam", task)
        cm = _find(rows, task, "adam+cm", base)
        ref = cm or next((r for r in rows if r["task"] == task and r["baseline"] == base), None)
        if ref is None:
            continue
        best = best_variant(rows, task)
        metric = metric_title(ref.get("metric", "value"), ref.get("mode", "max"))
        # a baseline still being tuned says so: its mean is not a tuned 5-seed result yet
        n = ref.get("baseline_seeds", 0)
        seeds = "" if n >= 5 else f", {seeds_text(n)} so far"
        md.append(
            f"| {_title(task)} ({metric}) | {_name(base)} {ref['baseline_mean']:.2f} "
            f"({format_lr(ref['baseline_best_lr'])}{seeds}) | {_diff(cm) if cm else '*not run*'} | "
            + (f"{_name(best['optimizer'])}: {_diff(best)}" if best else "*none yet*")
            + f" | {_paper_cell(task)} |"
        )  # fmt: skip
    return md


def _by_word(rows: Sequence[Row], optimizer: str, baseline: str | None = None) -> dict[str, list[str]]:
    """verdict word -> the tasks where ``optimizer`` got it against ``baseline`` (default: the
    task's baseline)."""
    out: dict[str, list[str]] = {}
    for task in _tasks(rows):
        r = _find(rows, task, optimizer, baseline or baseline_of(optimizer, task))
        if r is not None:
            out.setdefault(r["verdict"], []).append(_title(task))
    return out


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def answer(rows: Sequence[Row]) -> list[str]:
    """The plain sentences on Adam+CM against the tuned baseline, chosen by its verdict words."""
    words = _by_word(rows, "adam+cm")
    if not words:
        return ["No verdict on Adam+CM yet: its runs or its baseline's are missing."]
    parts = [f"{w} on {_join(words[w])}" for w in (*FINAL, "not tuned", "pending") if w in words]
    adamw = any(baseline_of("adam", t) == "adamw" for t in _tasks(rows))
    out = [f"**Adam+CM (Adam with a buffer of critical momenta) against a tuned "
           f"Adam{' (AdamW on the transformer)' if adamw else ''}**: {'; '.join(parts)}."]
    if "ahead" not in words and ("behind" in words or "level" in words):
        out.append("On these tasks a tuned Adam is as good as Adam+CM or better: switching from a tuned "
                   "Adam/AdamW to Adam+CM is not supported by this evidence.")
    elif "ahead" in words:
        out.append(f"Adam+CM helps on {_join(words['ahead'])}; elsewhere it does not.")
    if set(words) - {"ahead"}:
        out.append("This disagrees with the paper, which reports a better mean for Adam+CM than for Adam on "
                   "every benchmark (the last column, from its Tables 2 and 4). Our tasks are CPU-scale "
                   "stand-ins, so the paper's scale may matter; at the scale we can test, the claimed gain "
                   "does not appear.")
    return out


def lr_advice(rows: Sequence[Row]) -> str | None:
    """Adam+CM's tuned learning rate beside its baseline's, per task."""
    pairs = []
    for task in _tasks(rows):
        base = baseline_of("adam+cm", task)
        r = _find(rows, task, "adam+cm", base)
        if r is not None and r["best_lr"] is not None and r["baseline_best_lr"] is not None:
            pairs.append(f"{format_lr(r['best_lr'])} against {_name(base)}'s "
                         f"{format_lr(r['baseline_best_lr'])} on {_title(task)}")
    if not pairs:
        return None
    return ("**If you try Adam+CM, tune its learning rate separately**, on the same grid as your baseline, "
            "and check that the best value is not at the grid's edge: its early steps are up to "
            "1/(1-β₁) times Adam's at the same lr, and its best lr was " + "; ".join(pairs) + ".")


def _contrast_line(rows: Sequence[Row], opt: str, base: str, what: str) -> str | None:
    cells = []
    for task in _tasks(rows):
        r = _find(rows, task, opt, base)
        if r is not None:
            cells.append(f"{_title(task)} {_diff(r)}")
    if not cells:
        return None
    return f"- **{_name(opt)} − {_name(base)}**, {what}: " + "; ".join(cells) + "."


def mechanism(rows: Sequence[Row]) -> list[str]:
    """Every measured mechanism contrast (registry-derived), and those of Adam+CM not run yet."""
    md, missing = [], []
    for opt, base, what in CONTRASTS:
        if (opt, base) == ("adam+cm", "adam"):
            continue  # the headline table has it
        line = _contrast_line(rows, opt, base, what)
        if line:
            md.append(line)
        elif "adam+cm" in (opt, base) and (opt, base) != ("adam+cm", "adamomentum"):
            missing.append(f"{_name(opt)} − {_name(base)}, {what}")
    if missing:
        md.append(f"- Not measured yet: {'; '.join(missing)}.")
    return md


#: The buffer-dynamics keys the findings read (:data:`memoptim.experiments.buffer_report.COLUMNS`).
DYNAMICS = ("buffer_replacement_rate", "buffer_oldest_share", "buffer_mean_age", "buffer_fifo_age")
#: A buffer is window-like when it replaced an entry on at least this share of its full steps, at
#: least :data:`WINDOW_OLDEST` of the replacements evicted the oldest entry, and its mean entry
#: age is within :data:`WINDOW_AGE` steps of a FIFO window's.
WINDOW_REPLACED, WINDOW_OLDEST, WINDOW_AGE = 0.95, 0.8, 0.5


def buffers(rows: Sequence[Row]) -> Found:
    """``(task, optimizer) -> buffer dynamics`` of the tuned configurations (both sides of a row
    with a final verdict: tuned, 5 seeds) whose runs recorded them (``buffer`` /
    ``baseline_buffer`` of ``verdicts.json``)."""
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in rows:
        if r["verdict"] not in FINAL:
            continue
        for opt, d in ((r["optimizer"], r.get("buffer")), (r["baseline"], r.get("baseline_buffer"))):
            if d and all(k in d for k in DYNAMICS):
                out[(r["task"], opt)] = d
    return out


def window_like(d: Mapping[str, Any]) -> bool:
    """Whether a buffer behaved as a FIFO window would (:data:`WINDOW_REPLACED` and below)."""
    return (d["buffer_replacement_rate"] >= WINDOW_REPLACED and d["buffer_oldest_share"] >= WINDOW_OLDEST
            and abs(d["buffer_mean_age"] - d["buffer_fifo_age"]) <= WINDOW_AGE)


def _single(words: set[str]) -> str | None:
    return next(iter(words)) if len(words) == 1 else None


def _span(values: Sequence[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}}-{hi:{fmt}}"


def _keeps(optimizer: str) -> str:
    return {CRITICAL_MOMENTA: "momenta", CRITICAL_GRADIENTS: "gradients"}.get(memory_mode(optimizer), "-")


def dynamics_table(found: Found) -> list[str]:
    """Per task, what the buffer keeps and key decay: how the norm-priority buffers behaved (ranges
    over the optimizers named)."""
    groups: dict[tuple[str, str, float], dict[str, Mapping[str, Any]]] = {}
    for (task, opt), d in sorted(found.items()):
        if d.get("policy") == "norm" and d.get("decay") is not None:
            groups.setdefault((task, _keeps(opt), d["decay"]), {})[opt] = d
    lines = []
    for (task, keeps, decay), ds in sorted(groups.items()):
        v = list(ds.values())
        lines.append(
            f"| {_title(task)} | {keeps} | {decay:g} | {', '.join(sorted(map(_name, ds)))} | "
            f"{sum(d['seeds'] for d in v)} of {sum(d['runs'] for d in v)} | "
            f"{_span([100 * d['buffer_replacement_rate'] for d in v], '.0f')}% | "
            f"{_span([100 * d['buffer_oldest_share'] for d in v], '.0f')}% | "
            f"{_span([d['buffer_mean_age'] for d in v], '.2f')} "
            f"({_span([d['buffer_fifo_age'] for d in v], '.2f')}) |")
    if not lines:
        return []
    return ["| task | the buffer keeps | key decay λ | optimizers (norm priority) | seeds recorded | replaced "
            "on full-buffer steps | replacements evicting the oldest | mean entry age (a FIFO window's) |",
            "|---|---|---|---|---|---|---|---|", *lines]


def _paper_buffers(found: Found, task: str) -> dict[str, Mapping[str, Any]]:
    """The momentum buffers of ``task`` at the paper's settings (norm priority, λ = 0.7): Adam+CM's
    own where recorded, else those of the other optimizers with such a buffer."""
    ds = {o: d for (t, o), d in found.items() if t == task and d.get("policy") == "norm"
          and d.get("decay") == 0.7 and _keeps(o) == "momenta"}
    return {"adam+cm": ds["adam+cm"]} if "adam+cm" in ds else ds


def recency_answer(rows: Sequence[Row], found: Found) -> str | None:
    """What the final FIFO contrasts, with the momentum buffers' dynamics on the same tasks, say of
    Adam+CM at the paper's settings: a priority memory, or a smoothed "v from m" rule."""
    fifo = {r["task"]: r for r in rows if r["optimizer"] == "adam+cm" and r["baseline"] == "adam+cm-fifo"
            and r["verdict"] in FINAL}
    if not fifo:
        return None
    paper = {t: _paper_buffers(found, t) for t in fifo}
    window = {t: bool(ds) and all(map(window_like, ds.values())) for t, ds in paper.items()}
    by_word: dict[str, list[str]] = {}
    for t, r in sorted(fifo.items()):
        by_word.setdefault(r["verdict"], []).append(t)
    names = {w: _join([_title(t) for t in ts]) for w, ts in by_word.items()}
    if set(by_word) == {"level"} and all(window.values()):
        measured = sorted({_name(o) for ds in paper.values() for o in ds})
        nomem = _by_word(rows, "adam+cm", "adam+cm-nomem")
        against = "; ".join(f"{w} on {_join(ts)}" for w, ts in nomem.items() if w in FINAL)
        return ("**So at the paper's settings the priority hardly selects.** "
                f"On {names['level']} a FIFO window does as well as the gradient-norm key, and the momentum "
                "buffers measured there at λ = 0.7 "
                f"({_join(measured)}) behave as a window of the last C momenta. There, Adam+CM is a smoothed "
                "\"v from m\" rule: the momentum plus the mean of its recent values"
                + (f"; against v from m alone (no buffer) it is {against}" if against else "") + ".")
    parts = []
    if "ahead" in by_word:
        mostly = all(window[t] for t in by_word["ahead"])
        although = ", although its momentum buffers mostly evict their oldest entry" if mostly else ""
        parts.append(f"**The priority matters on {names['ahead']}:** Adam+CM is ahead of the FIFO window "
                     f"there{although}.")
    if "behind" in by_word:
        parts.append(f"**Ranking by gradient norm costs on {names['behind']}:** Adam+CM is behind the FIFO "
                     "window there.")
    if "level" in by_word:
        parts.append(f"On {names['level']} a FIFO window does as well as the gradient-norm key.")
    return " ".join(parts)


def buffer_answer(rows: Sequence[Row]) -> list[str]:
    """How the buffers of the tuned configurations behaved (a table), key decay 0.99 against
    0.7, and :func:`recency_answer`; empty while no tuned configuration recorded its dynamics."""
    found = buffers(rows)
    table = dynamics_table(found)
    if not table:
        return []
    md = ["**How the buffer behaves** (the tuned configurations whose runs recorded it, mean over those "
          "seeds; a FIFO window replaces on every step, always its oldest entry):\n\n" + "\n".join(table)]
    missing = [_title(t) for t in _tasks(rows) if (t, "adam+cm") not in found
               and (_find(rows, t, "adam+cm", baseline_of("adam+cm", t)) or {}).get("verdict") in FINAL]
    if missing:
        md[0] += (f"\n\nAdam+CM's own tuned runs on {_join(missing)} predate this diagnostic; the table shows "
                  "the other optimizers' buffers where their runs recorded them.")
    slow = [r for r in rows if r["optimizer"] == "adam+cm-decay0.99" and r["baseline"] == "adam+cm"
            and r["verdict"] in FINAL]
    if slow:
        effect = {"behind": " made Adam+CM worse", "ahead": " made Adam+CM better",
                  "level": " changed nothing detectable"}.get(_single({r["verdict"] for r in slow}), "")
        said = f" Letting the key decide more (fewer replacements, older entries){effect}." if effect else ""
        md.append("Key decay 0.99 against the paper's 0.7, each tuned: "
                  + "; ".join(f"{_title(r['task'])} {_diff(r)}" for r in slow) + "." + said)
    answer = recency_answer(rows, found)
    if answer:
        md.append(answer)
    return md


def _policy(ablation: str) -> str:
    """``"random replacement"`` for ``adam+cm-random``: the buffer policy an ablation swaps in."""
    return _name(ablation).removeprefix("Adam+CM, ")


def priority(rows: Sequence[Row]) -> str:
    """The answer on gradient-norm priority against recency and chance, from those contrasts."""
    head = "**Does the gradient-norm priority matter?**"
    found = [r for r in rows if r["optimizer"] == "adam+cm"
             and r["baseline"] in ("adam+cm-random", "adam+cm-fifo") and r["verdict"] in FINAL]
    measured = {r["baseline"] for r in found}
    gaps = [f"against {_policy(b)} not measured yet" for b in ("adam+cm-random", "adam+cm-fifo")
            if b not in measured]
    gap = f" ({'; '.join(gaps)})" if gaps else ""
    if not found:
        return f"{head} Not answered yet: no contrast against random or FIFO replacement has a final verdict."
    where = "; ".join(f"Adam+CM − {_policy(r['baseline'])} on {_title(r['task'])}: {_diff(r)}" for r in found)
    words = {r["verdict"] for r in found}
    if words == {"level"}:
        return (f"{head} No difference detected so far: {where}{gap}. A level verdict means the interval "
                "contains zero: no benefit of the priority is detected, which does not prove there is none.")
    if words == {"ahead"}:
        return f"{head} Yes, where measured: Adam+CM is ahead of the priority-free buffer ({where}){gap}."
    if words == {"behind"}:
        return f"{head} It costs, where measured: Adam+CM is behind the priority-free buffer ({where}){gap}."
    return f"{head} The contrasts disagree: {where}{gap}."


def toy_lines(toy: Mapping[str, Any] | None) -> list[str]:
    """The toy reproduction's escape effect and its lr-matched Adam control, from ``results.json``."""
    if not toy or "variants" not in toy:
        return []
    cm_claims = [c for c in toy["claims"] if "cm" in c.get("slots", ()) and c["reproduced"]]
    by = {k: {c["id"]: c for c in v["claims"]} for k, v in toy["variants"].items()}
    lr3 = [c for c in cm_claims if by.get("adam-lr3", {}).get(c["id"], {}).get("reproduced")]
    either = [c for c in cm_claims if any(by.get(k, {}).get(c["id"], {}).get("reproduced")
                                          for k in ("adam-lr3", "adam-lr10"))]  # fmt: skip
    esc, adam3 = toy["escape_ratio_10d"], toy["variants"]["adam-lr3"]["results"]["escape_ratio_10d"]["adam+cm"]
    s = max(esc["adam+cm"], key=float)
    real = esc["adam+cm"][s] > esc["adam"][s]
    line = (f"**On the toy surfaces** the escape effect is {'real' if real else 'not reproduced'}: in 10-D "
            f"at sharpness s={s}, Adam+CM escapes the sharp minimum from {esc['adam+cm'][s]:.0%} of the "
            f"starts and Adam from {esc['adam'][s]:.0%}. "
            f"{'But p' if adam3[s] >= esc['adam+cm'][s] else 'P'}lain Adam at 3x its learning rate escapes "
            f"from {adam3[s]:.0%}, and of the {len(cm_claims)} toy claims that reproduce for Adam+CM, "
            f"{len(either)} also hold for Adam at 3x or 10x its lr ({len(lr3)} at 3x)")
    most = 2 * len(either) > len(cm_claims)
    return [line + (": most of the exploration is step size." if most else ".")]


def render(rows: Sequence[Row], toy: Mapping[str, Any] | None, root: str = "",
           findings: str | None = None) -> str:
    """The section (Markdown, with its heading); ``root``: the prefix of repository links;
    ``findings``: a link to the full page, which replaces the mechanism contrasts (the README's)."""
    md = ["## Does it help?", "",
          f"*Generated from [`verdicts.json`]({root}results/benchmarks/verdicts.json) by `{COMMAND}`.* "
          "Each optimizer was tuned on the same learning-rate grid and run on 5 seeds at its own best "
          "lr; the difference to the tuned baseline carries Welch's 95% CI, and the verdict word follows "
          "the interval (**ahead** / **behind** when it excludes zero, **level** when it contains it). "
          f"Details: [the report]({root}results/benchmarks/report.md).", "",
          *headline_table(rows), "", *answer(rows), ""]
    advice = lr_advice(rows)
    if advice:
        md += [advice, ""]
    mech = mechanism(rows)
    if findings:
        md += [f"What each mechanism adds, contrast by contrast: [Findings]({findings}).", ""]
    elif mech:
        md += ["## What the mechanism contrasts show", "",
               "First named − second named, each at its own tuned lr, with the 95% CI:", "", *mech, ""]
    md += [priority(rows), ""]
    md += [line for paragraph in buffer_answer(rows) for line in (paragraph, "")]
    toy_md = toy_lines(toy)
    if toy_md:
        md += [*toy_md[:-1], toy_md[-1] + f" ([toy report]({root}results/toy/report.md))", ""]
    return "\n".join(md).rstrip() + "\n"


def readme_section(rows: Sequence[Row], toy: Mapping[str, Any] | None) -> str:
    return f"{START}\n{render(rows, toy, findings='docs/findings.md')}{END}"


def docs_page(rows: Sequence[Row], toy: Mapping[str, Any] | None) -> str:
    return render(rows, toy, root="../").replace("## Does it help?", "# Findings: does it help?", 1)


def replace_section(text: str, section: str) -> str:
    """``text`` with the part from :data:`START` to :data:`END` replaced by ``section``."""
    if START not in text or END not in text:
        raise ValueError(f"no {START} ... {END} markers to write the findings between")
    head, rest = text.split(START, 1)
    return head + section + rest.split(END, 1)[1]


def load(verdicts: str | os.PathLike[str], toy: str | os.PathLike[str] | None
         ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    rows = json.loads(Path(verdicts).read_text())
    toy_data = json.loads(Path(toy).read_text()) if toy and Path(toy).exists() else None
    return rows, toy_data


def write_findings(verdicts: str | os.PathLike[str], readme: str | os.PathLike[str],
                   docs: str | os.PathLike[str], toy: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write the README section and the docs page; returns the paths written."""
    rows, toy_data = load(verdicts, toy)
    readme, docs = Path(readme), Path(docs)
    readme.write_text(replace_section(readme.read_text(), readme_section(rows, toy_data)))
    docs.write_text(docs_page(rows, toy_data))
    return [readme, docs]


__all__ = ["COMMAND", "END", "START", "answer", "best_variant", "buffer_answer", "buffers", "docs_page",
           "dynamics_table", "headline_table", "load", "lr_advice", "mechanism", "priority", "readme_section",
           "recency_answer", "render", "replace_section", "toy_lines", "window_like", "write_findings"]
