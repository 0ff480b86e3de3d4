"""Toy surfaces (paper eqs. 9, 11-14): values, minima, gradients, batching."""

from __future__ import annotations

import math

import pytest
import torch

from memoptim.lab.sharpness import batched_hessian_eigenvalues
from memoptim.lab.surfaces import (
    ACKLEY_ROSENBROCK_DOCUMENTED_MIN,
    SURFACES,
    ackley,
    ackley_rosenbrock,
    get_surface,
    goldstein_price,
    levy,
    sharp_flat,
    sharp_flat_basin_edges,
)

D64 = torch.float64


def _grad(fn, x):
    x = torch.as_tensor(x, dtype=D64).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x).sum(), x)
    return g


def _levy_scalar(xs):
    """Levy (eq. 13) written independently, one point, plain floats."""
    w = [1 + (x - 1) / 4 for x in xs]
    total = math.sin(math.pi * w[0]) ** 2
    for wi in w[:-1]:
        total += (wi - 1) ** 2 * (1 + 10 * math.sin(math.pi * wi + 1) ** 2)
    total += (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    return total


def test_values_at_documented_minima():
    assert ackley(torch.zeros(2, dtype=D64)).item() == pytest.approx(0.0, abs=1e-12)
    gp_min = (math.log(3.0) - 8.693) / 2.427
    assert goldstein_price(torch.tensor([0.0, -1.0], dtype=D64)).item() == pytest.approx(gp_min)
    for d in (1, 2, 5):
        assert levy(torch.ones(d, dtype=D64)).item() == pytest.approx(0.0, abs=1e-12)
    for s in (1.0, 2.0, 100.0):
        for d in (1, 10):
            assert sharp_flat(torch.zeros(d, dtype=D64), s).item() == 0.0
            assert sharp_flat(torch.ones(d, dtype=D64), s).item() == 0.0


def test_values_at_other_points_match_hand_computations():
    # Ackley at (1, 1): both cosines are 1, so f = 20 - 20 exp(-0.2).
    assert ackley(torch.tensor([1.0, 1.0], dtype=D64)).item() == pytest.approx(
        20 - 20 * math.exp(-0.2)
    )
    # Classical Goldstein-Price at (0, 0) is 20 * 30 = 600.
    assert goldstein_price(torch.zeros(2, dtype=D64)).item() == pytest.approx(
        (math.log(600.0) - 8.693) / 2.427
    )
    pts = torch.tensor([[0.3, -2.0, 7.5], [4.0, 1.0, -9.0]], dtype=D64)
    for p in pts:
        assert levy(p).item() == pytest.approx(_levy_scalar(p.tolist()), rel=1e-12)
    # eq. 9: each coordinate takes the smaller branch.
    assert sharp_flat(torch.tensor([0.5], dtype=D64), 3.0).item() == pytest.approx(0.25)
    assert sharp_flat(torch.tensor([0.9], dtype=D64), 100.0).item() == pytest.approx(0.81)
    assert sharp_flat(torch.tensor([1.05], dtype=D64), 100.0).item() == pytest.approx(0.25)
    assert sharp_flat(torch.tensor([0.5, 1.05, -1.0], dtype=D64), 100.0).item() == pytest.approx(
        0.25 + 0.25 + 1.0
    )
    # Ackley+Rosenbrock at the origin: 0.05 + 0 + 0.6 (1 - e + e) = 0.65.
    assert ackley_rosenbrock(torch.zeros(2, dtype=D64)).item() == pytest.approx(0.65)


@pytest.mark.parametrize(
    ("fn", "point"),
    [
        (ackley, [0.0, 0.0]),
        (goldstein_price, [0.0, -1.0]),
        (levy, [1.0, 1.0]),
        (levy, [1.0] * 7),
        (lambda x: sharp_flat(x, 5.0), [0.0] * 10),
        (lambda x: sharp_flat(x, 5.0), [1.0] * 10),
    ],
)
def test_zero_gradient_at_minima(fn, point):
    assert torch.allclose(_grad(fn, point), torch.zeros(len(point), dtype=D64), atol=1e-10)


def test_gradients_nonzero_away_from_minima():
    # a check that the zero-gradient test above is not vacuous
    for fn, pt in [(ackley, [0.3, 0.2]), (goldstein_price, [0.1, -0.9]), (levy, [1.3, 0.9])]:
        assert _grad(fn, pt).norm() > 1e-2


@pytest.mark.parametrize("name", ["ackley", "goldstein-price", "levy"])
def test_documented_minimum_is_the_grid_minimum(name):
    s = get_surface(name)
    lo, hi = s.box
    g = torch.linspace(lo, hi, 401, dtype=D64)
    X, Y = torch.meshgrid(g, g, indexing="ij")
    vals = s(torch.stack([X, Y], -1))
    assert vals.min().item() >= s.min_value - 1e-9
    at_min = s(torch.tensor(s.minimum, dtype=D64)).item()
    assert at_min == pytest.approx(s.min_value, abs=1e-9)


def test_ackley_rosenbrock_has_a_local_minimum_near_the_documented_point():
    x = torch.tensor(ACKLEY_ROSENBROCK_DOCUMENTED_MIN, dtype=D64)
    for _ in range(30):  # Newton's method from the paper's point
        h = torch.autograd.functional.hessian(ackley_rosenbrock, x)
        x = x - torch.linalg.solve(h, _grad(ackley_rosenbrock, x))
    assert torch.allclose(_grad(ackley_rosenbrock, x), torch.zeros(2, dtype=D64), atol=1e-10)
    assert torch.linalg.eigvalsh(torch.autograd.functional.hessian(ackley_rosenbrock, x)).min() > 0
    assert (x - torch.tensor(ACKLEY_ROSENBROCK_DOCUMENTED_MIN, dtype=D64)).norm() < 0.15


def test_batching_matches_row_by_row_and_extra_leading_dims():
    g = torch.Generator().manual_seed(0)
    for name, surf in SURFACES.items():
        x = surf.sample(12, dim=3 if surf.dim is None else None, generator=g, dtype=D64)
        batched = surf(x)
        assert batched.shape == (12,), name
        rows = torch.stack([surf(x[i]) for i in range(12)])
        assert torch.equal(batched, rows), name
        assert torch.equal(surf(x.reshape(3, 4, -1)), batched.reshape(3, 4)), name


def test_sharp_flat_per_run_sharpness():
    x = torch.tensor([[0.9, 1.05], [0.9, 1.05], [0.2, 3.0]], dtype=D64)
    s = torch.tensor([2.0, 100.0, 7.0], dtype=D64)
    expected = torch.stack([sharp_flat(x[i], float(s[i])) for i in range(3)])
    assert torch.equal(sharp_flat(x, s), expected)


def test_sharp_flat_curvatures_and_basin_edges():
    # Hessian eigenvalue 2 at the flat minimum, 2s at the sharp one (per coordinate).
    for s in (2.0, 10.0, 100.0):
        x = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=D64)
        eig = batched_hessian_eigenvalues(lambda z, s=s: sharp_flat(z, s), x)
        assert torch.allclose(eig[0], torch.full((2,), 2.0, dtype=D64))
        assert torch.allclose(eig[1], torch.full((2,), 2 * s, dtype=D64))
        lo, hi = sharp_flat_basin_edges(s)
        for e in (lo, hi):
            assert e**2 == pytest.approx(s * (e - 1) ** 2)
        assert lo < 1 < hi


def test_get_surface_names():
    assert get_surface("goldstein_price") is get_surface("Goldstein-Price")
    with pytest.raises(ValueError, match="unknown surface"):
        get_surface("rastrigin")
    with pytest.raises(ValueError, match="2-D"):
        ackley(torch.zeros(3))
