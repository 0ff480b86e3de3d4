r"""The claims under variants of Adam+CM: which mechanism carries each effect.

A :class:`Variant` replaces Adam+CM in every experiment (and Adam+SAM+CM by SAM over the same
variant), keeping the slot's hyperparameters:

* ``authors`` -- the authors' code semantics (``adam+cm-authors``: the aggregate divides the
  buffer sum by the filled slots, step 1 only seeds the buffer); Adam+CG is replaced by
  ``adam+cg-authors`` too;
* ``nomem`` -- the memory off (``adam+cm-nomem``): :math:`v` built from :math:`m_t`, no buffer;
* ``vg`` -- :math:`v` built from :math:`g_t` as in Adam (``adam+cm-vg``): the buffer enters the
  update direction only;
* ``adam-lr3`` / ``adam-lr10`` -- lr-matched controls: Adam (Adam+SAM for Adam+SAM+CM) with the
  experiment's Adam hyperparameters and 3x / 10x its learning rate.  Adam+CM's early steps
  are up to :math:`1/(1-\beta_1) = 10` times Adam's at equal lr, so an effect that these
  controls also show may just be "steps further".

Only the replaced slots are rerun; :func:`variant_results` merges them into a copy of the
base results and the claims of :mod:`memoptim.lab.reproduce.claims` are evaluated on it.  A
claim is *applicable* to a variant when it reads Adam+CM (and, if it needs a buffer, the
variant has one), or reads Adam+CG and the variant replaces it (the authors' variant).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memoptim.lab.reproduce import escape, tables
from memoptim.lab.reproduce.cancellation import buffer_vector_jobs, buffer_vectors
from memoptim.lab.reproduce.claims import claims as evaluate_claims
from memoptim.lab.reproduce.common import EQ9_DEFAULTS, TABLE11, Job, Settings
from memoptim.progress import labelled
from memoptim.registry import AUTHORS

__all__ = ["VARIANTS", "Variant", "applicable", "claims_under_variants", "run_variant",
           "variant_findings", "variant_results"]


@dataclass(frozen=True)
class Variant:
    """How a variant replaces the slots of an experiment (see the module docstring)."""

    key: str
    label: str
    cm: str | None = None  # registry name replacing adam+cm
    sam_cm_options: dict[str, Any] = field(default_factory=dict)  # base options of adam+sam+cm
    cg: str | None = None  # registry name replacing adam+cg
    lr_factor: float | None = None  # lr-matched Adam control
    has_buffer: bool = True

    def job(self, name: str, hp: dict[str, Any], controls: dict[str, dict[str, Any]]) -> Job | None:
        """The job replacing base job ``(name, hp)``, or ``None`` if the variant keeps it;
        ``controls`` holds the experiment's ``adam`` / ``adam+sam`` hyperparameters."""
        if name == "adam+cg":
            return (self.cg, dict(hp)) if self.cg else None
        if self.lr_factor is not None:
            base = {"adam+cm": "adam", "adam+sam+cm": "adam+sam"}.get(name)
            if base is None:
                return None
            h = dict(controls[base])
            h["lr"] = h["lr"] * self.lr_factor
            return (base, h)
        if name == "adam+cm":
            return (self.cm or name, dict(hp))
        if name == "adam+sam+cm":
            return (name, {**hp, **self.sam_cm_options})
        return None


VARIANTS: dict[str, Variant] = {v.key: v for v in (
    Variant("authors", "authors' semantics", "adam+cm-authors", dict(AUTHORS), "adam+cg-authors"),
    Variant("nomem", "memory off (v from m)", "adam+cm-nomem", {"memory": False}, has_buffer=False),
    Variant("vg", "v from g (buffer only)", "adam+cm-vg", {"second_moment": "gradient"}),
    Variant("adam-lr3", "Adam, 3x lr", lr_factor=3.0, has_buffer=False),
    Variant("adam-lr10", "Adam, 10x lr", lr_factor=10.0, has_buffer=False),
)}


Runner = Callable[[dict[str, Job]], dict[str, Any]]


def _experiments(s: Settings, progress: bool) -> list[tuple[str, dict[str, Job], dict[str, Any], Runner]]:
    """``(name, base jobs, controls, runner)``; a runner returns result-dictionary entries."""
    def fig6(j: dict[str, Job]) -> dict[str, Any]:
        r = escape.fig6(s, j, progress)
        return {"escape_ratio_10d": r["ratio"], "escape_ratio_10d_coordinate": r["coordinate_ratio"]}

    return [
        ("table1", tables.table1_jobs(s), TABLE11,
         lambda j: {"table1": tables.table1(s, j, progress)[0]}),
        ("table5", tables.table5_jobs(s), TABLE11, lambda j: {"table5": tables.table5(s, j, progress)}),
        ("ackley", tables.ackley_jobs(s), TABLE11,
         lambda j: {"ackley": tables.ackley_experiment(s, j, progress, diagnostics=False)[0]}),
        ("buffer_vectors", buffer_vector_jobs(s), TABLE11,
         lambda j: {"buffer_vectors": buffer_vectors(s, j, progress, keep_snapshots=False)[0]}),
        ("fig5", escape.fig5_jobs(s), EQ9_DEFAULTS, lambda j: {"fig5": escape.fig5(s, j, progress)[0]}),
        ("fig6", escape.fig6_jobs(s), EQ9_DEFAULTS, fig6),
        ("fig7", escape.fig7_jobs(s, cg_sizes=(10,)), EQ9_DEFAULTS,
         lambda j: {"escape_ratio_1d": escape.fig7(s, j, progress)}),
        ("fig18", escape.fig18_jobs(s), EQ9_DEFAULTS, lambda j: {"fig18": escape.fig18(s, j, progress)[0]}),
    ]


def run_variant(variant: Variant, s: Settings, progress: bool) -> dict[str, Any]:
    """Rerun every slot the variant replaces; returns ``{"jobs": ..., "results": ...}`` where
    ``results`` has the base results' layout, holding only the replaced slots."""
    results: dict[str, Any] = {}
    jobs_used: dict[str, dict[str, Job]] = {}
    for name, jobs, controls, runner in _experiments(s, progress):
        vjobs = {}
        for slot, (opt, hp) in jobs.items():
            j = variant.job(opt, hp, controls)
            if j is not None:
                vjobs[slot] = j
        if vjobs:
            jobs_used[name] = vjobs
            with labelled(f"variant {variant.key}: {', '.join(sorted({o for o, _ in vjobs.values()}))}"):
                _merge(results, runner(vjobs))
    return {"jobs": jobs_used, "results": results}


def _merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Recursive update: dictionaries merge key by key, anything else is replaced."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


def variant_results(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The base results with a variant's replaced slots merged in (the base is not modified)."""
    return _merge(copy.deepcopy({k: base[k] for k in base if k != "variants"}), overrides)


def applicable(claim: dict[str, Any], variant: Variant) -> bool:
    """Whether ``claim`` says something about ``variant`` (see the module docstring)."""
    if "cm" in claim["slots"]:
        return variant.has_buffer or not claim["needs_buffer"]
    return "cg" in claim["slots"] and variant.cg is not None


def claims_under_variants(base: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per variant key: label, replaced jobs, the replaced results and every claim re-evaluated
    (``reproduced`` is ``None`` where the claim is not applicable), with the counts."""
    out = {}
    for key, run in runs.items():
        v = VARIANTS[key]
        rows = []
        for c in evaluate_claims(variant_results(base, run["results"])):
            ok = applicable(c, v)
            rows.append({"id": c["id"], "applicable": ok, "reproduced": c["reproduced"] if ok else None,
                         "short": c["short"] if ok else "", "ours": c["ours"] if ok else ""})
        out[key] = {"label": v.label, "jobs": run["jobs"], "results": run["results"], "claims": rows,
                    "reproduced": sum(bool(r["reproduced"]) for r in rows),
                    "applicable": sum(r["applicable"] for r in rows)}
    return out


def _labels(claims: list[dict[str, Any]], ids: list[str]) -> str:
    by_id = {c["id"]: c["label"] for c in claims}
    return ", ".join(by_id[i] for i in ids) if ids else "none"


def variant_findings(claims: list[dict[str, Any]], variants: dict[str, Any]) -> list[str]:
    """Sentences summarising the claims-under-variants table (generated from the verdicts)."""
    if not variants:
        return []
    held = {k: {r["id"]: r["reproduced"] for r in v["claims"]} for k, v in variants.items()}

    def holds(key: str, cid: str) -> bool | None:
        return held.get(key, {}).get(cid)

    cm = [c for c in claims if "cm" in c["slots"]]
    ours = [c["id"] for c in cm if c["reproduced"]]
    out = [f"Under our semantics {len(ours)} of the {len(cm)} claims that involve Adam+CM "
           f"reproduce ({_labels(claims, ours)})."]
    if "adam-lr3" in held or "adam-lr10" in held:
        lr = [i for i in ours if holds("adam-lr3", i) or holds("adam-lr10", i)]
        keep = [i for i in ours if i not in lr]
        out.append(f"The lr-matched Adam control (Adam at 3x or 10x its learning rate, no memory) "
                   f"reproduces {len(lr)} of them ({_labels(claims, lr)}): there larger steps suffice. "
                   f"{len(keep)} survive both controls ({_labels(claims, keep)}).")
    if "nomem" in held and "vg" in held:
        app = [i for i in ours if holds("vg", i) is not None]
        vm = [i for i in app if holds("nomem", i)]
        buf = [i for i in app if holds("vg", i)]
        none = [i for i in app if not holds("nomem", i) and not holds("vg", i)]
        out.append(f"Mechanism, over the {len(app)} of these the ablations apply to: with the memory "
                   f"off (v from m alone) {len(vm)} still hold ({_labels(claims, vm)}); with v from g "
                   f"(the buffer alone) {len(buf)} hold ({_labels(claims, buf)}); {len(none)} "
                   f"{'needs' if len(none) == 1 else 'need'} both ({_labels(claims, none)}).")
    if "authors" in held:
        flips = [c for c in claims if holds("authors", c["id"]) is not None
                 and holds("authors", c["id"]) != c["reproduced"]]
        if flips:
            desc = "; ".join(f"{c['label']} ({'holds' if holds('authors', c['id']) else 'fails'})"
                             for c in flips)
            out.append(f"The authors' semantics change {len(flips)} verdict(s) relative to ours: {desc}.")
        else:
            out.append("The authors' semantics give the same verdict as ours on every applicable claim.")
    rescued = {c["label"]: [variants[k]["label"] for k in held if holds(k, c["id"])]
               for c in cm if not c["reproduced"]}
    rescued = {k: v for k, v in rescued.items() if v}
    if rescued:
        out.append("Claims that fail for Adam+CM but hold for a variant: "
                   + "; ".join(f"{k} ({', '.join(v)})" for k, v in rescued.items()) + ".")
    return out
