r"""Convergence analysis of critical momenta on quadratics (paper section 3.2, Fig. 3).

Setting: :math:`L(\theta) = \tfrac12 \theta^\top H \theta` with
:math:`\mu I \preceq H \preceq L I`, and the simplified update (eq. 8)

.. math::
    m_{t+1} = \beta m_t + H\theta_{t+1}, \qquad
    \theta_{t+2} = \theta_{t+1} - \alpha\Big(m_{t+1} + \frac{1}{C}\sum_{k=0}^{C-1} m_{t-k}\Big),

i.e. the buffer holds exactly the :math:`C` previous momenta (assumptions (i)-(ii)
of section 3.2).  With the state
:math:`V_{t+1} = [\theta_{t+1}, \theta_t, m_t, m_{t-1}, \dots, m_{t-C+1}]` this is
:math:`V_{t+2} = A V_{t+1}` with

.. math::
    A = \begin{pmatrix}
    I - \alpha H & 0 & -\alpha(\beta + \tfrac1C) I & -\tfrac{\alpha}{C} I & \cdots & -\tfrac{\alpha}{C} I\\
    I & 0 & 0 & 0 & \cdots & 0\\
    H & 0 & \beta I & 0 & \cdots & 0\\
    0 & 0 & I & 0 & \cdots & 0\\
    \vdots & & & \ddots & & \vdots\\
    0 & 0 & 0 & \cdots & I & 0
    \end{pmatrix}.

(Substituting :math:`m_{t+1}` gives every buffer block the coefficient
:math:`-\alpha/C`; the matrix printed in the paper shows :math:`+\alpha/C` in the
last block, which does not follow from eq. 8 -- the tests check this matrix
against a direct simulation of the update.)  ``C = 0`` gives classical
(heavy-ball) momentum :math:`\theta_{t+2} = \theta_{t+1} - \alpha(\beta m_t + H\theta_{t+1})`,
equivalent to Polyak's heavy ball
:math:`\theta_{t+2} = \theta_{t+1} - \alpha H\theta_{t+1} + \beta(\theta_{t+1} - \theta_t)`.

Because every block is a polynomial in :math:`H`, the eigenvalues of :math:`A`
are those of the small matrices :math:`A_h` obtained by replacing :math:`I` by 1
and :math:`H` by each of its eigenvalues :math:`h`.  The worst-case rate over the
function class is

.. math:: \rho(\alpha, \beta) = \max_{h \in [\mu, L]} \rho(A_h), \qquad
          \rho^* = \min_{\alpha, \beta} \rho(\alpha, \beta),

computed numerically (grid over :math:`h` refined around the maximiser; grid
search then Nelder-Mead over :math:`(\log\alpha, \beta)`).  For heavy ball the
optimum is known in closed form (Polyak 1964):
:math:`\alpha^* = 4/(\sqrt L + \sqrt\mu)^2`, :math:`\beta^* = \rho^{*2}`,
:math:`\rho^* = (\sqrt\kappa - 1)/(\sqrt\kappa + 1)` with :math:`\kappa = L/\mu`.

SciPy is needed only by :func:`optimal_rate` (imported lazily).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "OptimalRate",
    "heavy_ball_optimal",
    "optimal_rate",
    "rate_curve",
    "spectral_radius",
    "system_matrix",
    "worst_case_rate",
]


def system_matrix(hessian: float | np.ndarray, alpha: float, beta: float, C: int) -> np.ndarray:
    r"""The multistep matrix :math:`A` of section 3.2 for Hessian ``hessian`` (scalar ``h`` or ``(n, n)``).

    Args:
        hessian: a scalar eigenvalue ``h`` (gives the collapsed :math:`A_h`) or a symmetric matrix.
        alpha: step size :math:`\alpha`.
        beta: momentum :math:`\beta`.
        C: buffer capacity; ``0`` is classical momentum (no buffer).

    Returns:
        ``(K n, K n)`` with ``K = 2 + max(C, 1)`` blocks: state
        ``[theta_{t+1}, theta_t, m_t, ..., m_{t-max(C,1)+1}]``.
    """
    if C < 0:
        raise ValueError("C must be >= 0")
    H = np.atleast_2d(np.asarray(hessian, dtype=float))
    n = H.shape[0]
    eye = np.eye(n)
    nm = max(C, 1)
    k = 2 + nm
    A = np.zeros((k * n, k * n))

    def put(i: int, j: int, block: np.ndarray) -> None:
        A[i * n:(i + 1) * n, j * n:(j + 1) * n] = block

    put(0, 0, eye - alpha * H)
    if C == 0:
        put(0, 2, -alpha * beta * eye)
    else:
        put(0, 2, -alpha * (beta + 1.0 / C) * eye)
        for j in range(3, 2 + C):
            put(0, j, -alpha / C * eye)
    put(1, 0, eye)
    put(2, 0, H)
    put(2, 2, beta * eye)
    for j in range(3, 2 + nm):
        put(j, j - 1, eye)
    return A


def _batched_collapsed(h: np.ndarray, alpha: float, beta: float, C: int) -> np.ndarray:
    """:math:`A_h` for every ``h`` at once, shape ``(len(h), K, K)``."""
    nm = max(C, 1)
    k = 2 + nm
    A = np.zeros((h.size, k, k))
    A[:, 0, 0] = 1.0 - alpha * h
    if C == 0:
        A[:, 0, 2] = -alpha * beta
    else:
        A[:, 0, 2] = -alpha * (beta + 1.0 / C)
        A[:, 0, 3:2 + C] = -alpha / C
    A[:, 1, 0] = 1.0
    A[:, 2, 0] = h
    A[:, 2, 2] = beta
    for j in range(3, 2 + nm):
        A[:, j, j - 1] = 1.0
    return A


def spectral_radius(h: float | np.ndarray, alpha: float, beta: float, C: int) -> np.ndarray:
    r""":math:`\rho(A_h)` (largest eigenvalue modulus) for each ``h``."""
    hh = np.atleast_1d(np.asarray(h, dtype=float))
    return np.abs(np.linalg.eigvals(_batched_collapsed(hh, alpha, beta, C))).max(axis=-1)


def _h_grid(mu: float, L: float, n: int) -> np.ndarray:
    lin = np.linspace(mu, L, n)
    geo = np.geomspace(mu, L, n) if mu > 0 else lin
    return np.unique(np.concatenate([lin, geo]))


def worst_case_rate(
    alpha: float, beta: float, C: int, mu: float, L: float, *, n_grid: int = 200, refine: bool = True
) -> float:
    r""":math:`\rho(\alpha,\beta) = \max_{h\in[\mu, L]} \rho(A_h)`.

    Evaluated on a grid (linear and geometric, ``n_grid`` points each) and, if
    ``refine``, refined by a dense grid between the neighbours of the best point.
    """
    h = _h_grid(mu, L, n_grid)
    r = spectral_radius(h, alpha, beta, C)
    i = int(np.argmax(r))
    best = float(r[i])
    if refine:
        lo, hi = h[max(i - 1, 0)], h[min(i + 1, h.size - 1)]
        best = max(best, float(spectral_radius(np.linspace(lo, hi, 65), alpha, beta, C).max()))
    return best


@dataclass(frozen=True)
class OptimalRate:
    """Result of :func:`optimal_rate`: :math:`\\rho^*` and the minimising :math:`(\\alpha, \\beta)`."""

    rho: float
    alpha: float
    beta: float
    C: int
    kappa: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def heavy_ball_optimal(mu: float, L: float) -> OptimalRate:
    """Polyak's closed-form optimum for heavy-ball momentum on :math:`[\\mu, L]`."""
    sk = math.sqrt(L / mu)
    rho = (sk - 1) / (sk + 1)
    alpha = 4.0 / (math.sqrt(L) + math.sqrt(mu)) ** 2
    return OptimalRate(rho, alpha, rho**2, 0, L / mu)


def optimal_rate(
    C: int,
    mu: float,
    L: float,
    *,
    beta: float | None = None,
    n_grid: int = 100,
    n_alpha: int = 40,
    n_beta: int = 25,
) -> OptimalRate:
    r""":math:`\rho^* = \min_{\alpha(,\beta)} \max_{h \in [\mu, L]} \rho(A_h)` by numerical optimisation.

    A coarse grid over :math:`\log\alpha \in [\log(10^{-4}/L), \log(4/L)]` (and
    :math:`\beta \in [0, 0.999]` unless ``beta`` is fixed) seeds a Nelder-Mead
    search from the three best grid points; the worst case over :math:`h` uses
    ``n_grid`` points (linear and geometric) with local refinement.

    Args:
        C: buffer capacity (0 = classical momentum).
        mu: strong convexity constant (:math:`0 < \mu \le L`).
        L: smoothness constant.
        beta: fix :math:`\beta` (Fig. 3 dashed lines use 0.9) or ``None`` to optimise it.
    """
    from scipy.optimize import minimize

    def rate(log_alpha: float, b: float) -> float:
        if not (0.0 <= b < 1.0):
            return math.inf
        return worst_case_rate(math.exp(log_alpha), b, C, mu, L, n_grid=n_grid)

    la = np.linspace(math.log(1e-4 / L), math.log(4.0 / L), n_alpha)
    betas = [beta] if beta is not None else list(np.linspace(0.0, 0.999, n_beta))
    coarse = sorted(
        (worst_case_rate(math.exp(a), b, C, mu, L, n_grid=max(n_grid // 3, 16), refine=False), a, b)
        for a in la for b in betas
    )
    best = (math.inf, 0.0, 0.0)
    step = la[1] - la[0]
    for _, a0, b0 in coarse[:3]:
        if beta is None:
            res = minimize(lambda z: rate(z[0], z[1]), x0=[a0, b0], method="Nelder-Mead",
                           options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000,
                                    "initial_simplex": [[a0, b0], [a0 + step, b0],
                                                        [a0, min(b0 + 0.04, 0.998)]]})
            cand = (float(res.fun), float(res.x[0]), float(res.x[1]))
        else:
            res = minimize(lambda z: rate(z[0], beta), x0=[a0], method="Nelder-Mead",
                           options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 500,
                                    "initial_simplex": [[a0], [a0 + step]]})
            cand = (float(res.fun), float(res.x[0]), float(beta))
        if cand[0] < best[0]:
            best = cand
    return OptimalRate(best[0], math.exp(best[1]), best[2], C, L / mu)


def rate_curve(
    kappas: Sequence[float], C: int, *, beta: float | None = None, **kwargs: int
) -> list[OptimalRate]:
    r""":math:`\rho^*` for each condition number :math:`\kappa = L/\mu` (with :math:`L = 1`).

    Fig. 3 plots :math:`1 - \rho^*` against :math:`\kappa` for ``C = 0`` (momentum) and ``C = 5``.
    """
    return [optimal_rate(C, 1.0 / k, 1.0, beta=beta, **kwargs) for k in kappas]
