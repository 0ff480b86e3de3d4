"""The PNG figures of the toy reproduction (drawn by :mod:`memoptim.lab.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memoptim.lab.reproduce.cancellation import FIGURES
from memoptim.lab.reproduce.common import Settings
from memoptim.lab.reproduce.escape import FIG5_SHARPNESS, FIG5_STARTS
from memoptim.lab.surfaces import ackley, get_surface, goldstein_price

__all__ = ["figures"]


def _trajectory_figures(fig: Path, extra: dict[str, Any], s: Settings) -> dict[str, Path]:
    from memoptim.lab import plots

    gp = get_surface("goldstein-price")
    panels = list(range(min(s.trajectory_starts, s.table_seeds)))
    res = 100 if s.quick else 200  # contour grid
    return {
        "fig1": plots.plot_trajectories(
            goldstein_price, extra["table1"]["trajectories"]["goldstein_price"], fig / "fig1_gp.png",
            box=(-2, 2, -2, 2), minimum=gp.minimum, panels=panels, resolution=res,
            title="Goldstein-Price (Table 1 settings: CG/CM with C=20, decay 0.99)"),
        "fig14": plots.plot_trajectories(
            goldstein_price, extra["gp11"], fig / "fig14_gp_table11.png", box=(-2, 2, -2, 2),
            minimum=gp.minimum, resolution=res, title="Goldstein-Price (Table 11 settings)"),
        "fig13": plots.plot_trajectories(
            ackley, extra["ackley"]["trajectories"], fig / "fig13_ackley.png", box=(-3, 3, -3, 3),
            minimum=(0.0, 0.0), panels=list(range(min(4, s.ackley_seeds))), resolution=res,
            title="Ackley (Table 11 settings)"),
    }


def _ackley_figures(fig: Path, extra: dict[str, Any], s: Settings) -> dict[str, Path]:
    from memoptim.lab import plots

    curves = extra["ackley"]["curves"]
    return {
        "fig4": plots.plot_loss_curves(
            curves["with_lr_decay"], fig / "fig4_ackley_loss.png", mark_step=s.lr_drop_at,
            title=f"Ackley, LR / 10 at step {s.lr_drop_at} (mean ± std, {s.ackley_seeds} seeds)"),
        "fig16": plots.plot_loss_curves(
            curves["constant_lr"], fig / "fig16_ackley_loss_constant_lr.png",
            title=f"Ackley, constant LR ({s.ackley_seeds} seeds)"),
        "diagnostics": plots.plot_buffer_diagnostics(
            extra["ackley"]["diagnostics"], fig / "fig8_buffer_diagnostics_ackley.png",
            title="Buffer diagnostics on Ackley (mean over seeds)"),
    }


def _vector_figures(fig: Path, extra: dict[str, Any]) -> dict[str, Path]:
    from memoptim.lab import plots

    titles = {"fig2": "Fig. 2 analogue: Ackley, first 10 steps (Table 11 settings)",
              "fig11": "Fig. 11 analogue: Ackley+Rosenbrock (Adam+CG C=5)",
              "fig12": "Fig. 12 analogue: Goldstein-Price"}
    out = {}
    for key, f in FIGURES.items():
        out[key] = plots.plot_buffer_vectors(
            get_surface(f.surface).fn, extra["buffer_vectors"][key],
            fig / f"{key}_buffer_vectors_{f.surface.replace('-', '_')}.png",
            per_step=not f.paper_window, title=titles[key])
    return out


def _escape_figures(fig: Path, res: dict[str, Any], extra: dict[str, Any], s: Settings) -> dict[str, Path]:
    from memoptim.lab import plots

    out = {"fig5": plots.plot_sharp_flat_1d(extra["fig5"], FIG5_STARTS, FIG5_SHARPNESS,
                                            fig / "fig5_sharp_flat_1d.png")}
    for C in s.buffer_sizes_fig18:
        runs = {k: v for k, v in extra["fig18"].items() if k.endswith(f" C={C}")}
        out[f"fig18_C{C}"] = plots.plot_sharp_flat_1d(
            runs, FIG5_STARTS, FIG5_SHARPNESS, fig / f"fig18_sharp_flat_decay099_C{C}.png",
            title=f"Fig. 18 analogue: decay 0.99, C = {C}")
    r10 = res["escape_ratio_10d"]
    out["fig6"] = plots.plot_escape_ratio(
        {(f"{n} C=20" if n in ("adam+cm", "adam+cg") else n): v for n, v in r10.items()},
        fig / "fig6_escape_10d.png", title=f"10-D escape ratio ({s.escape_points} starts)")
    r1 = res["escape_ratio_1d"]
    out["fig7_left"] = plots.plot_escape_ratio(
        {"adam+cm C=10": r1["adam+cm"]["10"], "adam+cg C=10": r1["adam+cg"]["10"],
         "adam+sam": r1["adam+sam"]["0"], "adam": r1["adam"]["0"]},
        fig / "fig7_left_escape_1d.png", title="1-D escape ratio, C = 10")
    out["fig7_right"] = plots.plot_escape_ratio(
        {f"adam+cm C={C}": v for C, v in r1["adam+cm"].items()},
        fig / "fig7_right_escape_1d_by_C.png", title="1-D escape ratio of Adam+CM by C")
    return out


def figures(out: Path, res: dict[str, Any], extra: dict[str, Any], s: Settings) -> dict[str, str]:
    """Draw every figure under ``out/figures``; returns figure key -> path relative to ``out``."""
    from memoptim.lab import plots

    fig = out / "figures"
    figs = {**_trajectory_figures(fig, extra, s), **_ackley_figures(fig, extra, s),
            **_vector_figures(fig, extra), **_escape_figures(fig, res, extra, s)}
    f3 = res["convergence_rate"]
    figs["fig3"] = plots.plot_convergence_rates(
        f3["kappa"], {k: v["rho"] for k, v in f3.items() if isinstance(v, dict)},
        fig / "fig3_convergence.png", title="Optimal worst-case rate on quadratics")
    return {k: str(Path(v).relative_to(out)) for k, v in figs.items()}
