r"""Fig. 3: optimal worst-case rates of heavy-ball momentum vs critical momenta (C = 5) on
quadratics with :math:`L = 1`, :math:`\mu = 1/\kappa` (see :mod:`memoptim.lab.convergence`)."""

from __future__ import annotations

from typing import Any

from memoptim.lab.reproduce.common import Settings
from memoptim.progress import Progress

__all__ = ["fig3"]


def fig3(s: Settings, progress: bool) -> dict[str, Any]:
    """:math:`\\rho^*`, :math:`\\alpha^*`, :math:`\\beta^*` per condition number, for momentum and
    critical momenta, optimal or fixed :math:`\\beta = 0.9`; Polyak's closed form for reference."""
    from memoptim.lab.convergence import heavy_ball_optimal, optimal_rate

    series = {"momentum": (0, None), "momentum beta=0.9": (0, 0.9),
              "critical momenta C=5": (5, None), "critical momenta C=5 beta=0.9": (5, 0.9)}
    bar = Progress(len(series) * len(s.kappas), "Fig. 3 (rates)", enabled=progress, unit="rate")
    out: dict[str, Any] = {"kappa": list(s.kappas), "C": 5, "L": 1.0}
    for label, (C, beta) in series.items():
        rows = []
        for k in s.kappas:
            rows.append(optimal_rate(C, 1.0 / k, 1.0, beta=beta, **s.conv_grid).as_dict())
            bar.update(1)
        out[label] = {"rho": [r["rho"] for r in rows], "alpha": [r["alpha"] for r in rows],
                      "beta": [r["beta"] for r in rows],
                      "one_minus_rho": [1 - r["rho"] for r in rows]}
    out["heavy_ball_closed_form_rho"] = [heavy_ball_optimal(1.0 / k, 1.0).rho for k in s.kappas]
    bar.close()
    return out
