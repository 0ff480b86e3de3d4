"""Sharpness: power iteration, exact Hessian, Hutchinson trace, m-sharpness (eq. 15)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from memoptim.lab.sharpness import (
    batched_hessian_eigenvalues,
    hessian_eigenvalues,
    hessian_matrix,
    hessian_vector_product,
    hutchinson_trace,
    m_sharpness,
    model_closure,
    top_hessian_eigenvalue,
)
from memoptim.lab.surfaces import ackley, goldstein_price

D64 = torch.float64


def _sym(n, seed, eigs=None):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D64))
    if eigs is None:
        eigs = torch.randn(n, generator=g, dtype=D64) * 3
    return q @ torch.diag(torch.as_tensor(eigs, dtype=D64)) @ q.T


def _quadratic(A, b, shapes):
    """Loss 0.5 x'Ax + b'x over parameters of the given shapes (concatenated in order)."""
    g = torch.Generator().manual_seed(1)
    params = [torch.randn(s, generator=g, dtype=D64, requires_grad=True) for s in shapes]

    def closure():
        x = torch.cat([p.reshape(-1) for p in params])
        return 0.5 * x @ A @ x + b @ x

    return params, closure


def test_exact_hessian_of_random_quadratic_split_over_tensors():
    A = _sym(7, 0)
    params, closure = _quadratic(A, torch.ones(7, dtype=D64), [(2, 2), (3,)])
    assert torch.allclose(hessian_matrix(closure, params), A, atol=1e-12)
    assert torch.allclose(hessian_eigenvalues(closure, params), torch.linalg.eigvalsh(A))
    v = [torch.ones(2, 2, dtype=D64), torch.arange(3, dtype=D64)]
    hv = torch.cat([h.reshape(-1) for h in hessian_vector_product(closure, params, v)])
    assert torch.allclose(hv, A @ torch.cat([x.reshape(-1) for x in v]))


@pytest.mark.parametrize(
    "eigs",
    [
        [5.0, 2.0, 1.0, -0.5, 0.1, 3.0],  # dominant eigenvalue positive
        [1.5, 0.3, -4.0, -1.0, 0.2, 1.0],  # dominant magnitude negative: needs the shift
        [-1.0, -2.0, -3.0, -0.5, -0.1, -0.2],  # negative definite
    ],
)
def test_power_iteration_finds_largest_algebraic_eigenvalue(eigs):
    A = _sym(6, 3, eigs)
    params, closure = _quadratic(A, torch.zeros(6, dtype=D64), [(6,)])
    lam = top_hessian_eigenvalue(
        closure, params, iters=2000, tol=1e-12, generator=torch.Generator().manual_seed(0)
    )
    assert lam == pytest.approx(max(eigs), abs=1e-6)


def _mlp_and_flat_loss(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(16, 3, dtype=D64)
    y = torch.randn(16, 1, dtype=D64)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def flat_loss(theta):
        chunks = torch.split(theta, sizes)
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        out = torch.func.functional_call(model, params, (x,))
        return nn.functional.mse_loss(out, y)

    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return model, x, y, flat_loss, theta0


def test_small_network_against_autograd_functional_hessian():
    model, x, y, flat_loss, theta0 = _mlp_and_flat_loss()
    exact = torch.autograd.functional.hessian(flat_loss, theta0)
    closure = model_closure(model, nn.functional.mse_loss, x, y)
    assert torch.allclose(hessian_matrix(closure, model), exact, atol=1e-10)
    lam = top_hessian_eigenvalue(
        closure, model, iters=3000, tol=1e-13, generator=torch.Generator().manual_seed(0)
    )
    assert lam == pytest.approx(torch.linalg.eigvalsh(exact).max().item(), rel=1e-6)


def test_hutchinson_trace():
    # Diagonal Hessian: z'Hz = tr H exactly for every Rademacher z.
    diag = torch.tensor([1.0, -2.0, 5.0, 0.5], dtype=D64)
    params, closure = _quadratic(torch.diag(diag), torch.zeros(4, dtype=D64), [(4,)])
    assert hutchinson_trace(closure, params, samples=3) == pytest.approx(diag.sum().item())
    # Dense Hessian: unbiased, within 5 standard errors of the exact trace.
    A = _sym(8, 5)
    params, closure = _quadratic(A, torch.zeros(8, dtype=D64), [(8,)])
    k = 2000
    est = hutchinson_trace(closure, params, samples=k, generator=torch.Generator().manual_seed(0))
    var = 2 * ((A**2).sum() - (torch.diagonal(A) ** 2).sum()).item()
    assert abs(est - torch.trace(A).item()) < 5 * (var / k) ** 0.5
    # and the network case against the exact Hessian
    model, x, y, flat_loss, theta0 = _mlp_and_flat_loss(1)
    exact = torch.autograd.functional.hessian(flat_loss, theta0)
    est = hutchinson_trace(model_closure(model, nn.functional.mse_loss, x, y), model,
                           samples=3000, generator=torch.Generator().manual_seed(2))
    var = 2 * ((exact**2).sum() - (torch.diagonal(exact) ** 2).sum()).item()
    assert abs(est - torch.trace(exact).item()) < 5 * (var / 3000) ** 0.5


def test_batched_eigenvalues_match_per_point_hessians():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(9, 2, generator=g, dtype=D64) * 3 - 1.5
    for fn in (goldstein_price, ackley):
        eig = batched_hessian_eigenvalues(fn, x)
        for i in range(9):
            h = torch.autograd.functional.hessian(fn, x[i])
            assert torch.allclose(eig[i], torch.linalg.eigvalsh(h), atol=1e-9)


def test_m_sharpness_quadratic_at_minimum_reaches_half_r2_lambda_max():
    # At theta = 0 the gradient vanishes; max_{|e|<=r} 0.5 e'Ae = 0.5 r^2 lambda_max.
    A = _sym(5, 7, [4.0, 1.0, 0.5, 0.2, 0.1])
    p = torch.zeros(5, dtype=D64, requires_grad=True)

    def closure():
        return 0.5 * p @ A @ p

    r = 0.05
    val = m_sharpness([p], [closure], rho=r, ascent_steps=200,
                      generator=torch.Generator().manual_seed(0))
    assert val == pytest.approx(0.5 * r * r * 4.0, rel=1e-6)
    assert torch.equal(p.detach(), torch.zeros(5, dtype=D64))  # restored exactly
    # never more than the true maximum
    assert val <= 0.5 * r * r * 4.0 * (1 + 1e-9)


def test_m_sharpness_one_step_is_sams_first_order_ascent_and_averages_batches():
    A = _sym(4, 11, [3.0, 2.0, 1.0, 0.5])
    g = torch.Generator().manual_seed(3)
    targets = [torch.randn(4, generator=g, dtype=D64) for _ in range(3)]
    p = torch.randn(4, generator=g, dtype=D64, requires_grad=True)
    start = p.detach().clone()

    def make(c):
        return lambda: 0.5 * (p - c) @ A @ (p - c)

    rho = 0.1
    expected = []
    for c in targets:
        d = start - c
        grad = A @ d
        e = rho * grad / grad.norm()
        expected.append((0.5 * (d + e) @ A @ (d + e) - 0.5 * d @ A @ d).item())
    val = m_sharpness([p], [make(c) for c in targets], rho=rho, ascent_steps=1)
    assert val == pytest.approx(sum(expected) / 3, rel=1e-12)
    assert torch.equal(p.detach(), start)
    # more ascent steps can only find a larger (still feasible) rise
    assert m_sharpness([p], [make(c) for c in targets], rho=rho, ascent_steps=20) >= val


def test_parameters_outside_the_loss_have_zero_hessian_rows():
    a = torch.tensor([1.0, 2.0], dtype=D64, requires_grad=True)
    unused = torch.ones(3, dtype=D64, requires_grad=True)
    linear = torch.ones(1, dtype=D64, requires_grad=True)

    def closure():
        return (a**2).sum() * 1.5 + 4.0 * linear.sum()

    h = hessian_matrix(closure, [a, unused, linear])
    expected = torch.zeros(6, 6, dtype=D64)
    expected[0, 0] = expected[1, 1] = 3.0
    assert torch.equal(h, expected)
    assert top_hessian_eigenvalue(closure, [a, unused, linear]) == pytest.approx(3.0)
