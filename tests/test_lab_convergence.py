"""Section 3.2: multistep matrix, worst-case spectral radius, optimal rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memoptim.lab.convergence import (
    heavy_ball_optimal,
    optimal_rate,
    spectral_radius,
    system_matrix,
    worst_case_rate,
)


def _simulate(H, alpha, beta, C, theta0, steps):
    """Eq. 8 run directly: m_t = beta m_{t-1} + H theta_t, step with m_t + (1/C) sum of C previous m."""
    n = H.shape[0]
    theta = theta0.copy()
    m = np.zeros(n)
    history = []  # previous momenta, newest first
    out = [theta.copy()]
    for _ in range(steps):
        m = beta * m + H @ theta
        buf = sum(history[:C]) / C if C else 0.0
        theta = theta - alpha * (m + buf)
        history.insert(0, m.copy())
        out.append(theta.copy())
    return out


@pytest.mark.parametrize("C", [0, 1, 5])
def test_matrix_reproduces_direct_simulation(C):
    rng = np.random.default_rng(C)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    H = q @ np.diag([0.2, 1.0, 3.0]) @ q.T
    alpha, beta = 0.1, 0.7
    steps = 40
    traj = _simulate(H, alpha, beta, C, rng.standard_normal(3), steps)
    # Start the matrix iteration once the buffer holds C real momenta (assumption (ii)).
    k0 = max(C, 1) + 1
    # Rebuild the state at step k0 from a re-simulation that records momenta.
    theta = traj[0].copy()
    m = np.zeros(3)
    moms = []
    for _ in range(k0):
        m = beta * m + H @ theta
        buf = sum(moms[:C]) / C if C else 0.0
        theta = theta - alpha * (m + buf)
        moms.insert(0, m.copy())
    assert np.allclose(theta, traj[k0])
    nm = max(C, 1)
    V = np.concatenate([traj[k0], traj[k0 - 1], *moms[:nm]])
    A = system_matrix(H, alpha, beta, C)
    for t in range(k0 + 1, steps + 1):
        V = A @ V
        assert np.allclose(V[:3], traj[t], atol=1e-12)


def test_block_matrix_spectrum_is_the_union_of_collapsed_spectra():
    hs = [0.1, 0.7, 2.0]
    H = np.diag(hs)
    for C in (0, 5):
        full = np.abs(np.linalg.eigvals(system_matrix(H, 0.3, 0.8, C))).max()
        assert full == pytest.approx(spectral_radius(np.array(hs), 0.3, 0.8, C).max())


@pytest.mark.parametrize("kappa", [10.0, 100.0, 1000.0])
def test_heavy_ball_optimum_is_polyaks_rate(kappa):
    mu, L = 1.0 / kappa, 1.0
    known = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)
    hb = heavy_ball_optimal(mu, L)
    assert hb.rho == pytest.approx(known)
    # At Polyak's parameters every eigenvalue has modulus sqrt(beta) on [mu, L].
    h = np.linspace(mu, L, 50)
    assert np.allclose(spectral_radius(h, hb.alpha, hb.beta, 0), math.sqrt(hb.beta), rtol=1e-6)
    assert worst_case_rate(hb.alpha, hb.beta, 0, mu, L) == pytest.approx(known, rel=1e-6)
    # The numerical optimiser finds it without being told.
    num = optimal_rate(0, mu, L)
    assert num.rho == pytest.approx(known, rel=1e-4)
    assert num.alpha == pytest.approx(hb.alpha, rel=1e-2)
    assert num.beta == pytest.approx(hb.beta, rel=1e-2)


def test_heavy_ball_with_fixed_beta():
    # With beta fixed and kappa <= ((1+sqrt b)/(1-sqrt b))^2 the best rate is sqrt(beta).
    r = optimal_rate(0, 0.01, 1.0, beta=0.9)
    assert r.rho == pytest.approx(math.sqrt(0.9), rel=1e-6)
    assert r.beta == 0.9


def test_worst_case_is_the_max_over_a_dense_grid():
    for C in (0, 5):
        alpha, beta, mu, L = 0.4, 0.5, 0.02, 1.0
        dense = spectral_radius(np.linspace(mu, L, 20001), alpha, beta, C).max()
        assert worst_case_rate(alpha, beta, C, mu, L) == pytest.approx(dense, rel=1e-4)


def test_critical_momenta_optimum_converges_and_beats_random_probes():
    mu, L = 0.01, 1.0
    opt = optimal_rate(5, mu, L)
    assert 0 < opt.rho < 1
    assert worst_case_rate(opt.alpha, opt.beta, 5, mu, L) == pytest.approx(opt.rho, rel=1e-6)
    rng = np.random.default_rng(0)
    for a, b in zip(rng.uniform(0.01, 3.0, 30), rng.uniform(0.0, 0.99, 30)):
        assert worst_case_rate(a, b, 5, mu, L) >= opt.rho - 1e-9
    fixed = optimal_rate(5, mu, L, beta=0.9)
    assert fixed.beta == 0.9
    assert opt.rho <= fixed.rho < 1
