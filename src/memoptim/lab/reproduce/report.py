"""The toy-reproduction report: ``report.md`` and a minimal ``report.html`` rendering of it."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from memoptim.lab.reproduce.common import MARGIN, Settings, fmt, md_table
from memoptim.lab.reproduce.paper import MEG, PAPER
from memoptim.lab.reproduce.tables import ACKLEY_OPTIMIZERS, TABLE1_OPTIMIZERS
from memoptim.lab.reproduce.variants import VARIANTS, variant_findings

__all__ = ["write_html", "write_report"]


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _header(res: dict[str, Any], s: Settings) -> list[str]:
    meta = res["meta"]
    L = ["# Critical momenta: toy reproduction (paper sections 3.2 and 4)\n",
         f"Command: `{meta['command']}`  ",
         f"Wall time: {meta['wall_seconds']:.1f} s on {meta['machine']} "
         f"(torch {meta['torch']}, {meta['threads']} thread(s)).  "]
    if s.quick:
        L.append("**Quick mode**: fewer seeds/points and "
                 f"{s.steps} steps (LR drop at {s.lr_drop_at}) -- a smoke test, not the "
                 "reproduction; run without `--quick` for the paper's settings.\n")
    else:
        L.append(f"Paper settings: {s.steps} steps, LR / 10 at step {s.lr_drop_at}, "
                 f"{s.table_seeds} seeds (Tables 1, 5), {s.ackley_seeds} seeds (Ackley), "
                 f"{s.escape_points} starting points (escape ratios).\n")
    n_ok = sum(c["reproduced"] for c in res["claims"])
    L.append(f"## Verdict: {n_ok} of {len(res['claims'])} checked claims reproduce\n")
    if res.get("variants"):
        counts = [f"**ours (Adam+CM)**: {n_ok} of {len(res['claims'])}"]
        counts += [f"**{v['label']}**: {v['reproduced']} of {v['applicable']} applicable"
                   for v in res["variants"].values()]
        L.append("Claims that reproduce per variant: " + "; ".join(counts) + ".\n")
    L.append(md_table(["claim", "paper", "ours", "reproduces?"],
                      [[c["claim"], c["paper"], c["ours"], _verdict(c["reproduced"])]
                       for c in res["claims"]]))
    L.append(f"\n'Lower'/'higher' between means must hold by more than {MARGIN:.0%} of the "
             "larger magnitude; means over seeds have large spreads (see the ± columns), so "
             "single orderings are fragile evidence either way.\n")
    return L


def _variants_section(res: dict[str, Any]) -> list[str]:
    variants = res.get("variants") or {}
    if not variants:
        return []
    L = ["## Claims under the variants\n",
         "Each claim re-evaluated with Adam+CM (and Adam+SAM+CM) replaced by: the authors' "
         "semantics (aggregate / filled slots, seeding first step; Adam+CG replaced by the "
         "authors' too), the memory off (v from m, no buffer), v from g (the buffer enters the "
         "direction only), and Adam at 3x / 10x its own learning rate (an lr-matched control: "
         "Adam+CM's early steps are up to 1/(1-beta1) = 10x Adam's).  Cells: verdict and the "
         "deciding numbers (Adam+CM's, or the variant's, first); n/a: the claim does not involve "
         "what the variant changes.\n"]
    by = {k: {r["id"]: r for r in v["claims"]} for k, v in variants.items()}
    rows = []
    for c in res["claims"]:
        cells = [f"{_verdict(c['reproduced'])} ({c['short']})" if c["short"] else _verdict(c["reproduced"])]
        for k in variants:
            r = by[k][c["id"]]
            cells.append(_verdict(None) if not r["applicable"]
                         else f"{_verdict(r['reproduced'])} ({r['short']})")
        rows.append([c["label"], *cells])
    counts = [f"{sum(c['reproduced'] for c in res['claims'])}/{len(res['claims'])}"]
    counts += [f"{v['reproduced']}/{v['applicable']}" for v in variants.values()]
    rows.append(["**reproduce / applicable**", *counts])
    L.append(md_table(["claim", "ours (Adam+CM)", *[VARIANTS[k].label for k in variants]], rows))
    L.append("\n**What the table shows.** " + " ".join(variant_findings(res["claims"], variants)) + "\n")
    return L


def _tables_section(res: dict[str, Any], figs: dict[str, str], s: Settings) -> list[str]:
    L = ["## Table 1: final loss and sharpness (largest Hessian eigenvalue), mean over "
         f"{s.table_seeds} seeds\n"]
    rows = []
    for surf, label in (("goldstein_price", "GP"), ("levy", "Levy")):
        for name in TABLE1_OPTIMIZERS:
            o, p = res["table1"][surf][name], PAPER["table1"][surf][name]
            rows.append([label, name, f"{o['loss']:.3f} ± {o['loss_std']:.2f}", fmt(p["loss"]),
                         f"{o['sharpness']:.3f} ± {o['sharpness_std']:.2f}", fmt(p["sharpness"])])
    L.append(md_table(["surface", "optimizer", "loss (ours)", "loss (paper)",
                       "sharpness (ours)", "sharpness (paper)"], rows))
    L.append("\n(± is the standard deviation over seeds.)  Adam+CG and Adam+CM use C = 20, "
             "decay 0.99 here (Table 1 caption, Table 5); other hyperparameters from Table 11.\n")
    L.append(f"![Fig. 1: Goldstein-Price trajectories]({figs['fig1']})\n")
    L.append("## Table 5: buffer size / decay ablation on Levy\n")
    rows = [[k, f"{v['loss']:.3f}", fmt(PAPER['table5'][k]['loss']),
             f"{v['sharpness']:.3f}", fmt(PAPER['table5'][k]['sharpness'])]
            for k, v in res["table5"].items()]
    L.append(md_table(["setting", "loss (ours)", "loss (paper)", "sharpness (ours)",
                       "sharpness (paper)"], rows))
    return L


def _ackley_section(res: dict[str, Any], figs: dict[str, str]) -> list[str]:
    L = ["\n## Fig. 4 and Fig. 16: Ackley loss curves\n"]
    rows = []
    for name in ACKLEY_OPTIMIZERS:
        a, b = res["ackley"]["with_lr_decay"][name], res["ackley"]["constant_lr"][name]
        rows.append([name, f"{a['final_loss']:.3f} ± {a['final_loss_std']:.2f}",
                     f"{a['fraction_near_global_min']:.2f}",
                     f"{b['final_loss']:.3f} ± {b['final_loss_std']:.2f}",
                     f"{b['mean_loss_last_50']:.3f}"])
    L.append(md_table(["optimizer", "final loss, LR drop", "fraction within 0.5 of (0,0)",
                       "final loss, constant LR", "mean of last 50 steps, constant LR"], rows))
    L.append("\nThe paper shows only curves (CM variants end near 0, the others at 2-5).\n")
    L += [f"![Fig. 4]({figs['fig4']})\n", f"![Fig. 16]({figs['fig16']})\n",
          f"![Fig. 13: Ackley trajectories]({figs['fig13']})\n",
          f"![Fig. 14: Goldstein-Price trajectories, Table 11 settings]({figs['fig14']})\n",
          "Buffer diagnostics on the same Ackley runs (cf. Fig. 8: the paper reports lower "
          "buffer variance and higher agreement for CM than for CG, on CIFAR-100):\n"]
    rows = [[n, *(f"{v[k]:.4g}" for k in ("variance", "cosine", "replacements", "distance"))]
            for n, v in ((n, res["ackley"]["with_lr_decay"][n].get("buffer_final", {}))
                         for n in ("adam+cg", "adam+cm")) if v]
    L.append(md_table(["optimizer", "buffer variance", "cosine (top-key item vs others)",
                       "replacements", "distance travelled"], rows))
    L.append(f"\n![Buffer diagnostics]({figs['diagnostics']})\n")
    return L


def _vectors_section(res: dict[str, Any], figs: dict[str, str]) -> list[str]:
    bv = res["buffer_vectors"]
    L = ["## Figs. 2, 11, 12: buffer vectors (gradient cancellation)\n",
         "At each step, read from the optimizer state: the buffer items (thin white lines), the "
         "buffer term of the aggregate (black arrow; the mean over the C slots) and the new "
         "vector it is added to (green: the gradient g_t for Adam+CG, the momentum m_t for "
         "Adam+CM).  Measured over the window and all starts: mean cos(buffer mean, new), share "
         "of steps with a negative cosine, mean ‖new + buffer mean‖ / ‖new‖ (below 1: the "
         "buffer cancels part of the new vector), mean step length ‖theta_t - theta_{t-1}‖, and "
         "the steadiness of the buffer mean (cosine between consecutive steps).\n"]
    rows = []
    for key, f in bv.items():
        for opt in ("adam+cg", "adam+cm"):
            m = f[opt]
            rows.append([key.replace("fig", "Fig. "), f"{f['surface']}, steps {f['window'][0]}-"
                         f"{f['window'][1]}, {f['starts']} starts", opt, f"{m['cosine']:+.3f}",
                         f"{m['negative_fraction']:.2f}", f"{m['ratio']:.3f}",
                         f"{m['step_length']:.4f}", f"{m['steadiness']:.3f}"])
    L.append(md_table(["figure", "measured on", "optimizer", "cos(mean, new)", "share cos < 0",
                       "‖aggregate‖ / ‖new‖", "step length", "steadiness"], rows))
    L.append("\nThe verdicts are in the claims table (Fig. 2, 11, 12 rows).\n")
    L += [f"![Fig. 2 analogue]({figs['fig2']})\n", f"![Fig. 11 analogue]({figs['fig11']})\n",
          f"![Fig. 12 analogue]({figs['fig12']})\n"]
    return L


def _escape_section(res: dict[str, Any], figs: dict[str, str], s: Settings) -> list[str]:
    L = ["## Fig. 5: 1-D f_s trajectories (green: ends in the flat minimum)\n"]
    f5 = res["fig5"]
    L.append(md_table(["optimizer", "escapes (of 9)", "ends at the minimum nearest its start"],
                      [[n, str(v["escapes"]), str(v["nearest_minimum"])] for n, v in f5.items()]))
    L.append(f"\n![Fig. 5]({figs['fig5']})\n")
    L.append("## Fig. 18: Fig. 5 with decay 0.99, C in {" + ", ".join(map(str, s.buffer_sizes_fig18))
             + "}\n")
    L.append(md_table(["setting", "escapes (of 9)", "cells escaped"],
                      [[k, str(v["escapes"]), ", ".join(c for c, x in v["cells"].items() if x["escaped"])
                        or "none"] for k, v in res["fig18"].items()]))
    L.append("")
    L += [f"![Fig. 18, C={C}]({figs[f'fig18_C{C}']})\n" for C in s.buffer_sizes_fig18]
    L.append(f"## Fig. 6: 10-D escape ratio ({s.escape_points} starts)\n")
    r10, rc = res["escape_ratio_10d"], res["escape_ratio_10d_coordinate"]
    ks = list(next(iter(r10.values())))
    L.append(md_table(["optimizer", *[f"s={k}" for k in ks]],
                      [[n, *(f"{v[k]:.2f}" for k in ks)] for n, v in r10.items()]))
    L.append("\nFraction of *coordinates* that end at 0 (a looser criterion):\n")
    L.append(md_table(["optimizer", *[f"s={k}" for k in ks]],
                      [[n, *(f"{v[k]:.2f}" for k in ks)] for n, v in rc.items()]))
    L.append(f"\n![Fig. 6]({figs['fig6']})\n")
    L.append(f"## Fig. 7: 1-D escape ratio ({s.escape_points} starts uniform in [-5, 5])\n")
    r1 = res["escape_ratio_1d"]
    ks = list(r1["adam"]["0"])
    L.append(md_table(["optimizer", "C", *[f"s={k}" for k in ks]],
                      [[n, C, *(f"{v[k]:.2f}" for k in ks)] for n, byc in r1.items()
                       for C, v in byc.items()]))
    L += [f"\n![Fig. 7 left]({figs['fig7_left']})\n", f"![Fig. 7 right]({figs['fig7_right']})\n"]
    return L


def _rates_meg_section(res: dict[str, Any], figs: dict[str, str]) -> list[str]:
    L = ["## Fig. 3: optimal worst-case rates on quadratics (L = 1, mu = 1/kappa)\n"]
    f3 = res["convergence_rate"]
    labels = [k for k in f3 if isinstance(f3[k], dict)]
    rows = [[f"{k:g}", *(f"{f3[lab]['rho'][i]:.5f}" for lab in labels),
             f"{f3['heavy_ball_closed_form_rho'][i]:.5f}"] for i, k in enumerate(f3["kappa"])]
    L.append(md_table(["kappa", *[f"rho* {lab}" for lab in labels],
                       "rho* heavy ball, closed form"], rows))
    L.append(f"\n![Fig. 3]({figs['fig3']})\n")
    L.append("## Fig. 15: Adam+MEG -- not reproduced\n")
    L.append("What the paper says (appendix A.2.1 and the caption of Fig. 15):\n")
    L += [f"> {t}\n" for t in MEG["paper_text"]]
    L.append(MEG["reason"] + "\n")
    return L


def write_report(out: Path, res: dict[str, Any], figs: dict[str, str], s: Settings) -> None:
    """Write ``out/report.md`` and ``out/report.html``."""
    L = _header(res, s)
    L += _variants_section(res)
    L.append("### Other observations\n")
    L.extend(f"- {o}" for o in res["observations"])
    L.append("")
    L += _tables_section(res, figs, s)
    L += _ackley_section(res, figs)
    L += _vectors_section(res, figs)
    L += _escape_section(res, figs, s)
    L += _rates_meg_section(res, figs)
    L.append("## Settings and deviations\n")
    L.extend(f"- {d}" for d in res["deviations"])
    L.append("")
    (out / "report.md").write_text("\n".join(L) + "\n")
    write_html(out, "\n".join(L))


def write_html(out: Path, md: str) -> None:
    """A minimal HTML rendering of the report (tables, images, headings, lists, quotes)."""
    body: list[str] = []
    table: list[str] = []

    def inline(t: str) -> str:
        t = html.escape(t)
        t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
        t = re.sub(r"(?<![\w*])\*([^*]+?)\*(?![\w*])", r"<i>\1</i>", t)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", t)

    def flush() -> None:
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|(---\|)+", r)]
            cells = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", r.strip()[1:-1])]
                     for r in rows]
            h = "".join(f"<th>{inline(c)}</th>" for c in cells[0])
            b = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>"
                        for r in cells[1:])
            body.append(f"<table><tr>{h}</tr>{b}</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        m = re.fullmatch(r"!\[(.*)\]\((.*)\)", line.strip())
        if m:
            body.append(f'<figure><img src="{html.escape(m[2])}" style="max-width:100%">'
                        f"<figcaption>{inline(m[1])}</figcaption></figure>")
        elif line.startswith(("## ", "### ", "# ")):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level + 1:])}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{inline(line[2:])}</li>")
        elif line.startswith("> "):
            body.append(f"<blockquote>{inline(line[2:])}</blockquote>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush()
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}"
             "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #bbb;"
             "padding:3px 6px;font-size:13px}blockquote{color:#444;border-left:3px solid #bbb;"
             "margin-left:0;padding-left:10px}")
    (out / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>memoptim toy reproduction"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")
