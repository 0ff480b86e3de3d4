r"""The checked claims: each paper statement about the toy experiments, our number, a verdict.

Every claim is a dict with ``id``, ``label`` (short name), ``claim`` (the statement),
``paper`` (the paper's number or "qualitative (figure)"), ``ours`` (our numbers), ``short``
(the deciding numbers, for the variants table), ``reproduced`` (bool), and for the variants
(:mod:`memoptim.lab.reproduce.variants`): ``slots`` -- which of Adam+CM (``"cm"``, also
standing for Adam+SAM+CM) and Adam+CG (``"cg"``) the claim reads -- and ``needs_buffer``
(meaningless for a variant without a buffer: buffer size, buffer vectors).

"Lower" between means must hold by more than :data:`~memoptim.lab.reproduce.common.MARGIN`
of the larger magnitude (:func:`~memoptim.lab.reproduce.common.lower`).  The functions read
only the results dictionary, so the same code evaluates a variant's results.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from memoptim.lab.reproduce.common import lower
from memoptim.lab.reproduce.paper import PAPER, STATEMENTS

__all__ = ["claims", "observations"]

Add = Callable[..., None]


def _adder(out: list[dict[str, Any]]) -> Add:
    def add(cid: str, label: str, text: str, paper: str, ours: str, ok: bool, short: str,
            slots: tuple[str, ...] = (), needs_buffer: bool = False) -> None:
        out.append({"id": cid, "label": label, "claim": text, "paper": paper, "ours": ours,
                     "short": short, "reproduced": bool(ok), "slots": list(slots),
                     "needs_buffer": needs_buffer})
    return add


def _table_claims(res: dict[str, Any], add: Add) -> None:
    t1, p1 = res["table1"], PAPER["table1"]
    for surf, label in (("goldstein_price", "Goldstein-Price"), ("levy", "Levy")):
        for metric in ("loss", "sharpness"):
            cm = t1[surf]["adam+cm"][metric]
            others = {k: v[metric] for k, v in t1[surf].items() if k != "adam+cm"}
            best = min(others, key=others.get)
            pothers = min(v[metric] for k, v in p1[surf].items() if k != "adam+cm")
            add(f"table1-{surf}-{metric}", f"Table 1 {label} {metric}",
                f"Table 1 ({label}): Adam+CM has the lowest mean {metric}",
                f"Adam+CM {p1[surf]['adam+cm'][metric]:.2f} vs best other {pothers:.2f}",
                f"Adam+CM {cm:.3f} vs best other {others[best]:.3f} ({best})",
                lower(cm, others[best]), f"{cm:.3g} vs {others[best]:.3g}", ("cm", "cg"))
    gp = t1["goldstein_price"]
    add("table1-gp-sam", "Table 1 GP SAM",
        "Table 1 (Goldstein-Price): Adam+SAM ends at a higher loss but lower sharpness than Adam",
        "loss 3.14 vs 0.86, sharpness 1.43 vs 1.49",
        f"loss {gp['adam+sam']['loss']:.3f} vs {gp['adam']['loss']:.3f}, sharpness "
        f"{gp['adam+sam']['sharpness']:.3f} vs {gp['adam']['sharpness']:.3f}",
        lower(gp["adam"]["loss"], gp["adam+sam"]["loss"])
        and lower(gp["adam+sam"]["sharpness"], gp["adam"]["sharpness"]), "")
    t5 = res["table5"]
    big = t5["adam+cm C=20 decay=0.99"]
    small = [t5["adam+cm C=5 decay=0.7"], t5["adam+cm C=5 decay=0.99"]]
    pair = " and ".join(f"{r['loss']:.3f} / {r['sharpness']:.3f}" for r in small)
    add("table5-buffer-size", "Table 5 C=20 vs C=5",
        "Table 5 (Levy): Adam+CM with C=20 is flatter and deeper than with C=5",
        "C=20: 12.50 / 62.53; C=5: 12.90 / 63.74 and 13.02 / 63.83",
        f"C=20: {big['loss']:.3f} / {big['sharpness']:.3f}; C=5: {pair}",
        all(lower(big["loss"], r["loss"]) and lower(big["sharpness"], r["sharpness"])
            for r in small),
        f"{big['loss']:.3g}/{big['sharpness']:.3g} vs "
        + ", ".join(f"{r['loss']:.3g}/{r['sharpness']:.3g}" for r in small), ("cm",), True)
    cm_worst = max(v["loss"] for v in t5.values() if v["optimizer"] == "adam+cm")
    cg_best = min(v["loss"] for v in t5.values() if v["optimizer"] == "adam+cg")
    add("table5-cm-vs-cg", "Table 5 CM vs CG",
        "Table 5 (Levy): every Adam+CM setting reaches a lower loss than every Adam+CG setting",
        "worst Adam+CM 13.02 < best Adam+CG 13.61",
        f"worst Adam+CM {cm_worst:.3f} vs best Adam+CG {cg_best:.3f}", lower(cm_worst, cg_best),
        f"{cm_worst:.3g} vs {cg_best:.3g}", ("cm", "cg"))


def _ackley_claims(res: dict[str, Any], add: Add) -> None:
    for mode, fig in (("with_lr_decay", "Fig. 4"), ("constant_lr", "Fig. 16")):
        a = res["ackley"][mode]
        base = {k: a[k]["final_loss"] for k in ("adam", "adam+cg", "adam+sam")}
        cms = {k: a[k]["final_loss"] for k in ("adam+cm", "adam+sam+cm")}
        add(f"ackley-{mode}", f"{fig} Ackley",
            f"{fig} (Ackley, {mode.replace('_', ' ')}): both CM variants end with a lower mean "
            "loss than Adam, Adam+CG and Adam+SAM",
            "CM variants reach the global-minimum region, the others stay in local minima",
            ", ".join(f"{k} {v:.3f}" for k, v in {**cms, **base}.items()),
            lower(max(cms.values()), min(base.values())),
            f"{max(cms.values()):.3g} vs {min(base.values()):.3g}", ("cm", "cg"))


def _vector_claims(res: dict[str, Any], add: Add) -> None:
    bv = res["buffer_vectors"]
    cg, cm = bv["fig2"]["adam+cg"], bv["fig2"]["adam+cm"]
    add("fig2-cancellation", "Fig. 2 cancellation",
        "Fig. 2 (Ackley, steps 1-10): in Adam+CG the buffer mean cancels the new gradient "
        "(mean cosine < 0 and ‖g + mean‖ < ‖g‖), in Adam+CM it does not (higher cosine)",
        STATEMENTS["fig2"],
        f"cos(mean, new): CG {cg['cosine']:+.2f}, CM {cm['cosine']:+.2f}; ‖aggregate‖/‖new‖: "
        f"CG {cg['ratio']:.2f}, CM {cm['ratio']:.2f}",
        cg["cosine"] < 0 and cg["ratio"] < 1 and cm["cosine"] > cg["cosine"],
        f"CG cos {cg['cosine']:+.2f}, r {cg['ratio']:.2f}; CM cos {cm['cosine']:+.2f}",
        ("cm", "cg"), True)
    add("fig2-small-update", "Fig. 2 CG smaller steps",
        "Fig. 2 (Ackley, steps 1-10): Adam+CG takes smaller steps than Adam+CM",
        STATEMENTS["fig2"], f"mean step length CG {cg['step_length']:.3f}, CM {cm['step_length']:.3f}",
        lower(cg["step_length"], cm["step_length"]),
        f"{cg['step_length']:.3f} vs {cm['step_length']:.3f}", ("cm", "cg"))
    f11 = bv["fig11"]["adam+cg"]
    w = bv["fig11"]["window"]
    add("fig11-cancellation", "Fig. 11 CG cancellation",
        f"Fig. 11 (Ackley+Rosenbrock, Adam+CG C=5, steps {w[0]}-{w[1]}): the buffer mean opposes "
        "the new gradient (mean cosine < 0) and shrinks it (‖g + mean‖ < ‖g‖)",
        STATEMENTS["fig11"],
        f"cos {f11['cosine']:+.2f} (negative at {f11['negative_fraction']:.0%} of steps), "
        f"‖aggregate‖/‖g‖ {f11['ratio']:.2f}",
        f11["cosine"] < 0 and f11["ratio"] < 1, f"cos {f11['cosine']:+.2f}, r {f11['ratio']:.2f}",
        ("cg",))
    cg, cm = bv["fig12"]["adam+cg"], bv["fig12"]["adam+cm"]
    w = bv["fig12"]["window"]
    add("fig12-small-update", "Fig. 12 CG smaller steps",
        f"Fig. 12 (Goldstein-Price, steps {w[0]}-{w[1]}): Adam+CG takes smaller steps than Adam+CM",
        STATEMENTS["fig12"], f"mean step length CG {cg['step_length']:.3f}, CM {cm['step_length']:.3f}",
        lower(cg["step_length"], cm["step_length"]),
        f"{cg['step_length']:.3f} vs {cm['step_length']:.3f}", ("cm", "cg"))
    add("fig12-steadiness", "Fig. 12 CM buffer steadier",
        f"Fig. 12 (Goldstein-Price, steps {w[0]}-{w[1]}): the buffer mean of Adam+CM changes "
        "direction less from step to step than Adam+CG's",
        STATEMENTS["fig12"],
        f"cosine of consecutive buffer means: CM {cm['steadiness']:.3f}, CG {cg['steadiness']:.3f}",
        cm["steadiness"] > cg["steadiness"], f"{cm['steadiness']:.3f} vs {cg['steadiness']:.3f}",
        ("cm", "cg"), True)


def _escape_claims(res: dict[str, Any], add: Add) -> None:
    f5 = res["fig5"]
    add("fig5-adam-nearest", "Fig. 5 Adam nearest",
        "Fig. 5: Adam mostly converges to the minimum closest to its start",
        "qualitative (figure)", f"{f5['adam']['nearest_minimum']}/9 cells",
        f5["adam"]["nearest_minimum"] >= 5, "")
    add("fig5-cm-vs-cg", "Fig. 5 CM vs CG",
        "Fig. 5: Adam+CM reaches the flat minimum more often than Adam+CG",
        "qualitative (figure)",
        f"escapes: Adam+CM {f5['adam+cm']['escapes']}/9, Adam+CG {f5['adam+cg']['escapes']}/9, "
        f"Adam {f5['adam']['escapes']}/9",
        f5["adam+cm"]["escapes"] > f5["adam+cg"]["escapes"],
        f"{f5['adam+cm']['escapes']} vs {f5['adam+cg']['escapes']} of 9", ("cm", "cg"))
    r10 = res["escape_ratio_10d"]
    high = [k for k in r10["adam+cm"] if float(k) >= 10]
    add("fig6-cm-highest", "Fig. 6 10-D escape",
        "Fig. 6 (10-D): Adam+CM (C=20) has the highest escape ratio at high sharpness (s >= 10)",
        "qualitative (figure)",
        "; ".join(f"s={k}: " + ", ".join(f"{n} {r10[n][k]:.2f}" for n in r10) for k in high),
        all(r10["adam+cm"][k] > max(r10[n][k] for n in r10 if n != "adam+cm") for k in high),
        " / ".join(f"{r10['adam+cm'][k]:.2f}" for k in high) + " vs "
        + " / ".join(f"{max(r10[n][k] for n in r10 if n != 'adam+cm'):.2f}" for k in high),
        ("cm", "cg"))
    _fig7_claims(res, add)
    _fig18_claim(res, add)


def _fig7_claims(res: dict[str, Any], add: Add) -> None:
    r1 = res["escape_ratio_1d"]
    ss = [k for k in r1["adam"]["0"] if k != "2"]
    series = {"adam": r1["adam"]["0"], "adam+sam": r1["adam+sam"]["0"], "adam+cg": r1["adam+cg"]["10"]}
    cm10 = r1["adam+cm"]["10"]
    worst = min(ss, key=lambda k: cm10[k] - max(v[k] for v in series.values()))
    add("fig7-left-cm", "Fig. 7 left CM",
        "Fig. 7 left (1-D, C=10): apart from s=2, Adam+CM escapes at least as often as the others",
        "qualitative (figure)",
        "; ".join(f"s={k}: CM {cm10[k]:.2f} vs max other "
                  f"{max(v[k] for v in series.values()):.2f}" for k in ss),
        all(cm10[k] >= max(v[k] for v in series.values()) for k in ss),
        f"worst s={worst}: {cm10[worst]:.2f} vs {max(v[worst] for v in series.values()):.2f}",
        ("cm", "cg"))
    smax = max(r1["adam"]["0"], key=float)
    add("fig7-left-cg", "Fig. 7 left CG",
        f"Fig. 7 left: at high sharpness (s={smax}) Adam+CG escapes less often than Adam and "
        "Adam+SAM", "qualitative (figure)",
        f"CG {series['adam+cg'][smax]:.2f}, Adam {series['adam'][smax]:.2f}, "
        f"SAM {series['adam+sam'][smax]:.2f}",
        series["adam+cg"][smax] < min(series["adam"][smax], series["adam+sam"][smax]),
        f"{series['adam+cg'][smax]:.2f} vs {min(series['adam'][smax], series['adam+sam'][smax]):.2f}",
        ("cg",))
    means = {C: sum(v.values()) / len(v) for C, v in r1["adam+cm"].items()}
    order = sorted(means, key=int)
    add("fig7-right-C", "Fig. 7 right C",
        "Fig. 7 right: a larger buffer C makes Adam+CM escape more often (mean over s)",
        "qualitative (figure)", ", ".join(f"C={C}: {means[C]:.2f}" for C in order),
        all(means[a] <= means[b] for a, b in itertools.pairwise(order)),
        " ≤ ".join(f"{means[C]:.2f}" for C in order), ("cm",), True)


def _fig18_claim(res: dict[str, Any], add: Add) -> None:
    f18 = res["fig18"]
    sizes = sorted({int(k.split("C=")[1]) for k in f18}, key=int)
    cm = {C: f18[f"adam+cm C={C}"]["escapes"] for C in sizes}
    cg = {C: f18[f"adam+cg C={C}"]["escapes"] for C in sizes}
    add("fig18-cm-vs-cg", "Fig. 18 CM vs CG (decay 0.99)",
        "Fig. 18 (1-D f_s, decay 0.99): Adam+CM reaches the flat minimum more often than Adam+CG "
        f"(in total, and at least as often at each C in {{{', '.join(map(str, sizes))}}})",
        STATEMENTS["fig18"],
        "escapes of 9: " + "; ".join(f"C={C}: CM {cm[C]}, CG {cg[C]}" for C in sizes),
        sum(cm.values()) > sum(cg.values()) and all(cm[C] >= cg[C] for C in sizes),
        f"{sum(cm.values())} vs {sum(cg.values())} of {9 * len(sizes)}", ("cm", "cg"))


def _rate_claims(res: dict[str, Any], add: Add) -> None:
    f3 = res["convergence_rate"]
    cm_ok = all(r < 1 for r in f3["critical momenta C=5"]["rho"]) and all(
        r < 1 for r in f3["critical momenta C=5 beta=0.9"]["rho"])
    add("fig3-converges", "Fig. 3 rates",
        "Fig. 3: critical momenta (C=5) converge (rho* < 1) over the whole range of condition "
        "numbers, with optimal and with fixed beta=0.9", "qualitative (figure)",
        f"kappa {f3['kappa'][0]:g}..{f3['kappa'][-1]:g}: max rho* = "
        f"{max(f3['critical momenta C=5']['rho']):.5f} (optimal beta), "
        f"{max(f3['critical momenta C=5 beta=0.9']['rho']):.5f} (beta=0.9)", cm_ok, "")


def claims(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every checked claim, in the report's order (tables, Ackley, buffer vectors, eq. 9, rates)."""
    out: list[dict[str, Any]] = []
    add = _adder(out)
    _table_claims(res, add)
    _ackley_claims(res, add)
    _vector_claims(res, add)
    _escape_claims(res, add)
    _rate_claims(res, add)
    return out


def observations(res: dict[str, Any]) -> list[str]:
    """Plain statements about results the paper does not state as claims about toys."""
    obs = []
    f3 = res["convergence_rate"]
    hb, cm = f3["momentum"]["rho"], f3["critical momenta C=5"]["rho"]
    slower = sum(c > h for c, h in zip(cm, hb))
    obs.append(
        f"Fig. 3: with optimally tuned (alpha, beta), critical momenta (C=5) converge more slowly "
        f"than heavy-ball momentum at {slower} of {len(cm)} condition numbers (e.g. kappa="
        f"{f3['kappa'][-1]:g}: 1-rho* = {1 - cm[-1]:.2e} vs {1 - hb[-1]:.2e}); with beta fixed to "
        f"0.9 at kappa={f3['kappa'][-1]:g}: {1 - f3['critical momenta C=5 beta=0.9']['rho'][-1]:.2e}"
        f" vs {1 - f3['momentum beta=0.9']['rho'][-1]:.2e}.")
    a = res["ackley"]["with_lr_decay"]
    if "buffer_final" in a.get("adam+cm", {}) and "buffer_final" in a.get("adam+cg", {}):
        cm_b, cg_b = a["adam+cm"]["buffer_final"], a["adam+cg"]["buffer_final"]
        obs.append(
            "Buffer diagnostics on Ackley at the last step (Fig. 8 reports, on CIFAR-100, lower "
            "variance and higher agreement for CM than for CG): variance "
            f"CM {cm_b['variance']:.3g} vs CG {cg_b['variance']:.3g}; mean cosine "
            f"CM {cm_b['cosine']:.3f} vs CG {cg_b['cosine']:.3f}; distance travelled "
            f"CM {cm_b['distance']:.2f} vs CG {cg_b['distance']:.2f}.")
    t1 = res["table1"]["goldstein_price"]
    obs.append(
        "Goldstein-Price: Adam+CM ends flatter but higher than Adam "
        f"(sharpness {t1['adam+cm']['sharpness']:.1f} vs {t1['adam']['sharpness']:.1f}, loss "
        f"{t1['adam+cm']['loss']:.2f} vs {t1['adam']['loss']:.2f}; the global minimum -3.13 is "
        "also the sharpest minimum of eq. 12, largest eigenvalue 132.6).")
    bv = res.get("buffer_vectors", {}).get("fig11", {})
    if "adam+cm" in bv and not math.isnan(bv["adam+cm"]["cosine"]):
        cm_v, cg_v = bv["adam+cm"], bv["adam+cg"]
        obs.append(
            f"Buffer vectors, Ackley+Rosenbrock steps {bv['window'][0]}-{bv['window'][1]}: "
            f"cos(buffer mean, new vector) Adam+CM {cm_v['cosine']:+.2f} (vs its momentum), "
            f"Adam+CG {cg_v['cosine']:+.2f} (vs its gradient); ‖aggregate‖/‖new‖ Adam+CM "
            f"{cm_v['ratio']:.2f}, Adam+CG {cg_v['ratio']:.2f}.")
    return obs
