r"""Toy loss surfaces of the paper's section 4 and appendix A.2.1, as batched torch functions.

Every function takes ``x`` of shape ``(..., d)`` (any number of leading batch
dimensions, one row per independent run or starting point) and returns the loss
of each row, shape ``(...)``.  They are differentiable with autograd, work in
any floating dtype, and are pure (no state), so ``loss.sum().backward()`` on a
batch gives every run its own gradient.

Formulas (equation numbers of Malviya et al., TMLR 2024):

* Ackley (eq. 11), :math:`d = 2`:

  .. math:: f(x, y) = -20 e^{-0.2\sqrt{0.5(x^2+y^2)}}
            - e^{0.5(\cos 2\pi x + \cos 2\pi y)} + e + 20,

  global minimum :math:`f(0, 0) = 0`.
* log-scaled Goldstein-Price (eq. 12; Picheny et al. 2013), :math:`d = 2`:

  .. math:: f(x, y) = \frac{1}{2.427}\Big(\log\big[(1 + (x+y+1)^2(19 - 14x + 3x^2 - 14y
            + 6xy + 3y^2))\,(30 + (2x-3y)^2(18 - 32x + 12x^2 + 48y - 36xy + 27y^2))\big]
            - 8.693\Big),

  applied to the raw coordinates exactly as printed in eq. 12 (no rescaling of
  the inputs); global minimum at :math:`(0, -1)`, value
  :math:`(\log 3 - 8.693)/2.427 \approx -3.1291`.
* Levy (eq. 13), any :math:`d`, with :math:`w_i = 1 + (x_i - 1)/4`:

  .. math:: f(x) = \sin^2(\pi w_1) + \sum_{i=1}^{d-1} (w_i - 1)^2\,[1 + 10\sin^2(\pi w_i + 1)]
            + (w_d - 1)^2\,[1 + \sin^2(2\pi w_d)],

  global minimum :math:`f(1, \dots, 1) = 0`.
* Ackley+Rosenbrock (eq. 14), :math:`d = 2`, exactly as printed:

  .. math:: f(x, y) = 0.05(1-x)^2 + 0.05(y - x^2)^2
            + 0.6\big[e^{-0.2\sqrt{0.5(x^2+y^2)}} - e^{0.5(\cos 2\pi x + \cos 2\pi y)} + e\big].

  The paper documents the minimum "at (2.1, 3.9)"; for the printed formula the
  nearest stationary point is a local minimum at about (1.998, 4.001)
  (:data:`ACKLEY_ROSENBROCK_DOCUMENTED_MIN` keeps the paper's value).
* Sharp/flat family (eq. 9), any :math:`d`, sharpness coefficient :math:`s > 1`:

  .. math:: f_s(x) = \sum_{i=1}^{d} \min\big(x_i^2,\; s\,(x_i - 1)^2\big),

  a flat minimum at the origin (curvature 2) and a sharp one at
  :math:`(1, \dots, 1)` (curvature :math:`2s`), both with value 0.  ``s`` may be a
  tensor broadcastable to the batch shape, so runs with different
  sharpness can share one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ACKLEY_ROSENBROCK_DOCUMENTED_MIN",
    "SURFACES",
    "Surface",
    "ackley",
    "ackley_rosenbrock",
    "get_surface",
    "goldstein_price",
    "levy",
    "sharp_flat",
    "sharp_flat_basin_edges",
]

#: Minimum location stated in the paper's appendix A.2.1 for eq. 14 (approximate, see module doc).
ACKLEY_ROSENBROCK_DOCUMENTED_MIN: tuple[float, float] = (2.1, 3.9)


def _xy(x: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape[-1] != 2:
        raise ValueError(f"this surface is 2-D; got last dimension {x.shape[-1]}")
    return x[..., 0], x[..., 1]


def _ackley_core(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The two exponentials of the Ackley function (radial and cosine terms)."""
    # sqrt has an infinite derivative at 0; a tiny floor keeps the gradient finite
    # (and exactly 0 by symmetry) at the origin without changing values off it.
    r2 = 0.5 * (x * x + y * y)
    radial = torch.exp(-0.2 * torch.sqrt(torch.clamp(r2, min=torch.finfo(x.dtype).tiny)))
    cosine = torch.exp(0.5 * (torch.cos(2 * math.pi * x) + torch.cos(2 * math.pi * y)))
    return radial, cosine


def ackley(x: Tensor) -> Tensor:
    r"""Ackley function (eq. 11) of each row of ``x`` (shape ``(..., 2)``); minimum 0 at the origin."""
    radial, cosine = _ackley_core(*_xy(x))
    return -20.0 * radial - cosine + math.e + 20.0


def goldstein_price(x: Tensor) -> Tensor:
    r"""Log-scaled Goldstein-Price function (eq. 12) of each row of ``x`` (shape ``(..., 2)``).

    Global minimum at :math:`(0, -1)` with value :math:`(\log 3 - 8.693)/2.427`.
    The product inside the logarithm is at least 1 * 30 > 0 (both factors are
    sums of a positive constant and a non-negative term), so the function is
    finite everywhere.
    """
    x_, y = _xy(x)
    a = 1 + (x_ + y + 1) ** 2 * (
        19 - 14 * x_ + 3 * x_**2 - 14 * y + 6 * x_ * y + 3 * y**2
    )
    b = 30 + (2 * x_ - 3 * y) ** 2 * (
        18 - 32 * x_ + 12 * x_**2 + 48 * y - 36 * x_ * y + 27 * y**2
    )
    return (torch.log(a) + torch.log(b) - 8.693) / 2.427


def levy(x: Tensor) -> Tensor:
    r"""Levy function (eq. 13) of each row of ``x`` (shape ``(..., d)``, any ``d >= 1``).

    Global minimum 0 at :math:`(1, \dots, 1)`.
    """
    w = 1 + (x - 1) / 4
    first = torch.sin(math.pi * w[..., 0]) ** 2
    wi = w[..., :-1]
    middle = ((wi - 1) ** 2 * (1 + 10 * torch.sin(math.pi * wi + 1) ** 2)).sum(-1)
    wd = w[..., -1]
    last = (wd - 1) ** 2 * (1 + torch.sin(2 * math.pi * wd) ** 2)
    return first + middle + last


def ackley_rosenbrock(x: Tensor) -> Tensor:
    r"""Ackley+Rosenbrock function (eq. 14, as printed) of each row of ``x`` (shape ``(..., 2)``)."""
    x_, y = _xy(x)
    radial, cosine = _ackley_core(x_, y)
    return 0.05 * (1 - x_) ** 2 + 0.05 * (y - x_**2) ** 2 + 0.6 * (radial - cosine + math.e)


def sharp_flat(x: Tensor, s: float | Tensor) -> Tensor:
    r"""The sharp/flat family :math:`f_s` of eq. 9 for each row of ``x`` (shape ``(..., d)``).

    Args:
        x: points, shape ``(..., d)``.
        s: sharpness coefficient(s) :math:`s > 1` (the paper also plots ``s = 1``), a
            float or a tensor broadcastable to ``x.shape[:-1]`` (one value per run).
    """
    s_t = torch.as_tensor(s, dtype=x.dtype, device=x.device)
    if s_t.dim() > 0:
        s_t = s_t.unsqueeze(-1)
    return torch.minimum(x * x, s_t * (x - 1) ** 2).sum(-1)


def sharp_flat_basin_edges(s: float) -> tuple[float, float]:
    r"""Interval of one coordinate where the sharp branch :math:`s(x-1)^2` of eq. 9 is active.

    It is :math:`(\sqrt{s}/(\sqrt{s}+1),\ \sqrt{s}/(\sqrt{s}-1))` for :math:`s > 1`
    (the right edge is infinite for :math:`s \le 1`); outside it the flat branch
    :math:`x^2` is the minimum, so gradient flow converges to 0.
    """
    r = math.sqrt(s)
    return r / (r + 1), (r / (r - 1) if s > 1 else math.inf)


@dataclass(frozen=True)
class Surface:
    """A named toy surface with its documented minimum and a default box.

    Attributes:
        name: canonical name (``goldstein-price`` etc.).
        fn: batched function ``(..., d) -> (...)``.
        dim: input dimension, or ``None`` if any (Levy).
        box: ``(low, high)`` per coordinate, the default plotting / sampling box.
        minimum: documented global minimiser (for 2-D surfaces, ``dim`` values).
        min_value: value at the documented minimum.
        equation: the paper's equation number.
    """

    name: str
    fn: Callable[[Tensor], Tensor]
    dim: int | None
    box: tuple[float, float]
    minimum: tuple[float, ...]
    min_value: float
    equation: int

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def sample(self, n: int, dim: int | None = None, *, generator: torch.Generator | None = None,
               box: tuple[float, float] | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` points uniform in ``box`` (default :attr:`box`), shape ``(n, d)``."""
        d = dim or self.dim
        if d is None:
            raise ValueError(f"{self.name} takes any dimension: pass dim")
        lo, hi = box or self.box
        return lo + (hi - lo) * torch.rand(n, d, generator=generator, dtype=dtype)


SURFACES: dict[str, Surface] = {
    s.name: s
    for s in (
        Surface("ackley", ackley, 2, (-5.0, 5.0), (0.0, 0.0), 0.0, 11),
        Surface("goldstein-price", goldstein_price, 2, (-2.0, 2.0), (0.0, -1.0),
                (math.log(3.0) - 8.693) / 2.427, 12),
        Surface("levy", levy, None, (-10.0, 10.0), (1.0, 1.0), 0.0, 13),
        Surface("ackley-rosenbrock", ackley_rosenbrock, 2, (-5.0, 5.0),
                ACKLEY_ROSENBROCK_DOCUMENTED_MIN, float("nan"), 14),
    )
}


def get_surface(name: str) -> Surface:
    """Look up a surface by name; ``_`` and ``-`` are interchangeable, case is ignored."""
    key = name.lower().replace("_", "-")
    try:
        return SURFACES[key]
    except KeyError:
        raise ValueError(f"unknown surface {name!r}; choose from {sorted(SURFACES)}") from None
