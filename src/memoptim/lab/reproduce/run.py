"""The driver of ``memoptim reproduce toy``: run every experiment, the variants, write the outputs."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from memoptim.lab.reproduce import escape, tables
from memoptim.lab.reproduce.cancellation import buffer_vector_jobs, buffer_vectors
from memoptim.lab.reproduce.claims import claims, observations
from memoptim.lab.reproduce.common import EQ9_DEFAULTS, START_BOXES, TABLE11, Settings
from memoptim.lab.reproduce.figures import figures
from memoptim.lab.reproduce.paper import DEVIATIONS, MEG, PAPER
from memoptim.lab.reproduce.rates import fig3
from memoptim.lab.reproduce.report import write_report
from memoptim.lab.reproduce.variants import VARIANTS, claims_under_variants, run_variant
from memoptim.progress import labelled

__all__ = ["reproduce_toy", "run_experiments"]


def _untimed(name: str, f: Callable[[], Any]) -> Any:
    return f()


def run_experiments(s: Settings, progress: bool = False,
                    timed: Callable[[str, Callable[[], Any]], Any] = _untimed
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paper's experiments with the paper's optimizers: ``(results, plotting extras)``.

    ``timed(name, f)`` runs each stage ``f`` (e.g. recording its wall time)."""
    res: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    res["table1"], extra["table1"] = timed(
        "table1", lambda: tables.table1(s, tables.table1_jobs(s), progress))
    res["table5"] = timed("table5", lambda: tables.table5(s, tables.table5_jobs(s), progress))
    res["ackley"], extra["ackley"] = timed(
        "ackley", lambda: tables.ackley_experiment(s, tables.ackley_jobs(s), progress))
    extra["gp11"] = timed("gp_trajectories", lambda: tables.gp_trajectories(s, progress))
    res["buffer_vectors"], extra["buffer_vectors"] = timed(
        "buffer_vectors", lambda: buffer_vectors(s, buffer_vector_jobs(s), progress))
    res["fig5"], extra["fig5"] = timed("fig5", lambda: escape.fig5(s, escape.fig5_jobs(s), progress))
    res["fig18"], extra["fig18"] = timed(
        "fig18", lambda: escape.fig18(s, escape.fig18_jobs(s), progress))
    f6 = timed("fig6", lambda: escape.fig6(s, escape.fig6_jobs(s), progress))
    res["escape_ratio_10d"] = f6["ratio"]
    res["escape_ratio_10d_coordinate"] = f6["coordinate_ratio"]
    extra["fig6_hyperparameters"] = f6["hyperparameters"]
    res["escape_ratio_1d"] = timed("fig7", lambda: escape.fig7(s, escape.fig7_jobs(s), progress))
    res["convergence_rate"] = timed("fig3", lambda: fig3(s, progress))
    return res, extra


def reproduce_toy(out: str | Path, *, quick: bool = False, variants: bool = True,
                  progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Run every toy experiment (and, with ``variants``, the claims under the variants of
    Adam+CM), write ``out/results.json``, ``out/report.md`` (+ ``.html``) and the PNG figures
    under ``out/figures``; return the results dictionary."""
    s = Settings.quick_settings(variants) if quick else Settings.full(variants)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and the machine is shared)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name: str, f: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        r = f()
        timings[name] = round(time.perf_counter() - t, 2)
        return r

    try:
        with labelled("paper's optimizers"):
            res, extra = run_experiments(s, progress, timed)
        runs = {k: timed(f"variant {k}", lambda k=k: run_variant(VARIANTS[k], s, progress))
                for k in s.variants}
    finally:
        torch.set_num_threads(threads)
    res["claims"] = claims(res)
    res["variants"] = claims_under_variants(res, runs)
    res["observations"] = observations(res)
    res["paper"] = PAPER
    res["meg"] = MEG
    res["deviations"] = DEVIATIONS
    res["settings"] = {
        **asdict(s), "table11": TABLE11, "eq9_defaults": EQ9_DEFAULTS,
        "table1_hyperparameters": extra["table1"]["hyperparameters"],
        "fig6_hyperparameters": extra["fig6_hyperparameters"], "start_boxes": START_BOXES,
    }
    res["meta"] = {
        "command": command or f"memoptim reproduce toy --out {out}" + (" --quick" if quick else "")
        + ("" if variants else " --no-variants"),
        "quick": quick, "variants": list(s.variants), "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()}", "threads": 1,
        "timings_seconds": timings,
    }
    t = time.perf_counter()
    figs = figures(out, res, extra, s)
    timings["figures"] = round(time.perf_counter() - t, 2)
    res["meta"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    res["figures"] = figs
    write_report(out, res, figs, s)
    (out / "results.json").write_text(
        json.dumps(_finite(res), indent=1, default=_json_default, allow_nan=False) + "\n")
    return res


def _finite(o: Any) -> Any:
    """Replace NaN/inf floats by ``None`` so that results.json is strict JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, tuple):
        return list(o)
    if isinstance(o, Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
