r"""Sharpness measures: top Hessian eigenvalue, Hessian trace, m-sharpness.

The paper (section 3.2, end; section 4) uses the largest eigenvalue
:math:`h_{\max}` of the loss Hessian as its sharpness indicator (following
Kaur et al. 2023), and appendix A.3.1 also reports the m-sharpness of Foret et
al. (2021), eq. 15:

.. math::
    \frac{1}{n}\sum_{M \in D}\ \max_{\|\epsilon\|_2 \le r}\
    \frac{1}{m}\sum_{s \in M} L_s(\theta + \epsilon) - L_s(\theta).

Everything here works for any differentiable loss of any list of parameter
tensors through a *closure* ``() -> loss`` (a 0-d tensor computed from the
current parameter values).  Hessian-vector products use double backward
(Pearlmutter's trick): :math:`Hv = \nabla_\theta (\nabla_\theta L \cdot v)`.

* :func:`top_hessian_eigenvalue` -- power iteration on HVPs (with a spectral
  shift when the dominant eigenvalue is negative, so the result is the largest
  *algebraic* eigenvalue :math:`\lambda_{\max}`);
* :func:`hessian_matrix` / :func:`hessian_eigenvalues` -- the exact dense Hessian
  (one HVP per coordinate), for tiny problems and for checking;
* :func:`hutchinson_trace` -- :math:`\operatorname{tr} H \approx \frac{1}{K}\sum_k z_k^\top H z_k`
  with Rademacher :math:`z_k`;
* :func:`batched_hessian_eigenvalues` -- exact eigenvalues of many independent
  low-dimensional problems at once (toy surfaces);
* :func:`m_sharpness` -- eq. 15 with the inner maximisation done by projected
  normalised gradient ascent on the ball (one step = SAM's first-order solution).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "batched_hessian_eigenvalues",
    "hessian_eigenvalues",
    "hessian_matrix",
    "hessian_vector_product",
    "hutchinson_trace",
    "m_sharpness",
    "model_closure",
    "top_hessian_eigenvalue",
]

Closure = Callable[[], Tensor]


def _params(params: Iterable[Tensor] | nn.Module) -> list[Tensor]:
    if isinstance(params, nn.Module):
        params = params.parameters()
    out = [p for p in params if p.requires_grad]
    if not out:
        raise ValueError("no parameters that require grad")
    return out


def model_closure(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor, targets: Tensor
) -> Closure:
    """A closure computing ``loss_fn(model(inputs), targets)`` (no ``backward``, no ``zero_grad``)."""

    def closure() -> Tensor:
        return loss_fn(model(inputs), targets)

    return closure


class _HVP:
    """Hessian-vector products at the current parameters; the gradient graph is built once."""

    def __init__(self, closure: Closure, params: list[Tensor]):
        self.params = params
        with torch.enable_grad():
            loss = closure()
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        # parameters the loss does not depend on (or only linearly) have zero Hessian rows
        self.used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self.grads = [grads[i] for i in self.used]

    def __call__(self, vec: Sequence[Tensor]) -> list[Tensor]:
        if not self.used:
            return [torch.zeros_like(p) for p in self.params]
        hv = torch.autograd.grad(
            self.grads, self.params, grad_outputs=[vec[i] for i in self.used],
            retain_graph=True, allow_unused=True,
        )
        return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, self.params)]


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))  # type: ignore[return-value]


def _normalize(v: list[Tensor]) -> list[Tensor]:
    n = torch.sqrt(_dot(v, v))
    return [x / n for x in v]


def hessian_vector_product(
    closure: Closure, params: Iterable[Tensor] | nn.Module, vec: Sequence[Tensor]
) -> list[Tensor]:
    r""":math:`H v` at the current parameters, one tensor per parameter."""
    return _HVP(closure, _params(params))(vec)


def _power(hvp: _HVP, shift: float, iters: int, tol: float, generator: torch.Generator | None
           ) -> float:
    """Dominant eigenvalue of ``H - shift*I`` by power iteration (Rayleigh quotient)."""
    v = _normalize([
        torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in hvp.params
    ])
    lam = math.nan
    for _ in range(iters):
        hv = hvp(v)
        if shift:
            hv = [h - shift * x for h, x in zip(hv, v)]
        new = float(_dot(v, hv))
        norm = float(torch.sqrt(_dot(hv, hv)))
        if norm == 0.0:
            return 0.0
        v = [h / norm for h in hv]
        if not math.isnan(lam) and abs(new - lam) <= tol * max(1.0, abs(new)):
            lam = new
            break
        lam = new
    return lam


def top_hessian_eigenvalue(
    closure: Closure,
    params: Iterable[Tensor] | nn.Module,
    *,
    iters: int = 200,
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
) -> float:
    r"""Largest algebraic eigenvalue :math:`\lambda_{\max}` of the loss Hessian (paper's :math:`h_{\max}`).

    Power iteration on HVPs finds the eigenvalue of largest magnitude
    :math:`\lambda_d`.  If it is negative, a second power iteration on
    :math:`H - \lambda_d I` (whose spectrum is :math:`\ge 0`) recovers
    :math:`\lambda_{\max} = \lambda_d + \mu_{\text{top}}`.  Convergence is
    geometric in the ratio of the two leading magnitudes, so ``iters``/``tol`` bound the
    work; each iteration costs one double-backward pass.

    Args:
        closure: computes the loss (0-d tensor) from the current parameters.
        params: parameters (or a module) with respect to which the Hessian is taken.
        iters: maximum number of HVPs per power iteration.
        tol: relative change of the Rayleigh quotient at which to stop.
        generator: random source of the starting vector (for reproducibility).
    """
    hvp = _HVP(closure, _params(params))
    lam = _power(hvp, 0.0, iters, tol, generator)
    if lam < 0:
        lam = lam + _power(hvp, lam, iters, tol, generator)
    return lam


def hessian_matrix(closure: Closure, params: Iterable[Tensor] | nn.Module) -> Tensor:
    """The exact dense Hessian over all parameters flattened and concatenated, shape ``(n, n)``.

    Built from ``n`` HVPs with the unit vectors; only for tiny problems.
    """
    plist = _params(params)
    hvp = _HVP(closure, plist)
    sizes = [p.numel() for p in plist]
    n = sum(sizes)
    rows = []
    for i in range(n):
        e = torch.zeros(n, dtype=plist[0].dtype, device=plist[0].device)
        e[i] = 1.0
        vec = [c.view_as(p) for c, p in zip(torch.split(e, sizes), plist)]
        rows.append(torch.cat([h.reshape(-1) for h in hvp(vec)]))
    h = torch.stack(rows)
    return 0.5 * (h + h.T)


def hessian_eigenvalues(closure: Closure, params: Iterable[Tensor] | nn.Module) -> Tensor:
    """All eigenvalues (ascending) of the exact Hessian; see :func:`hessian_matrix`."""
    return torch.linalg.eigvalsh(hessian_matrix(closure, params))


def hutchinson_trace(
    closure: Closure,
    params: Iterable[Tensor] | nn.Module,
    *,
    samples: int = 100,
    generator: torch.Generator | None = None,
) -> float:
    r"""Hutchinson's estimator :math:`\frac{1}{K}\sum_{k=1}^{K} z_k^\top H z_k` of :math:`\operatorname{tr} H`.

    :math:`z_k` has i.i.d. Rademacher (:math:`\pm 1`) entries, so the estimator
    is unbiased with variance :math:`2(\|H\|_F^2 - \sum_i H_{ii}^2)/K`.
    """
    hvp = _HVP(closure, _params(params))
    total = 0.0
    for _ in range(samples):
        z = [
            (torch.randint(0, 2, p.shape, generator=generator).to(p.device, p.dtype) * 2 - 1)
            for p in hvp.params
        ]
        total += float(_dot(z, hvp(z)))
    return total / samples


def batched_hessian_eigenvalues(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Eigenvalues (ascending) of the Hessian of ``fn`` at every row of ``x`` (shape ``(N, d)``).

    ``fn`` maps ``(N, d) -> (N,)`` with rows independent (as the toy surfaces do);
    the Hessian of row ``i`` is taken with respect to ``x[i]`` only.  Returns ``(N, d)``.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(fn(x).sum(), x, create_graph=True)
        d = x.shape[-1]
        cols = [torch.autograd.grad(g[:, j].sum(), x, retain_graph=True)[0] for j in range(d)]
    h = torch.stack(cols, dim=-1)  # (N, d, d): h[n, i, j] = d2f / dx_i dx_j
    return torch.linalg.eigvalsh(0.5 * (h + h.transpose(-1, -2)))


@torch.no_grad()
def _add_(params: Sequence[Tensor], delta: Sequence[Tensor]) -> None:
    for p, d in zip(params, delta):
        p.add_(d)


def m_sharpness(
    params: Iterable[Tensor] | nn.Module,
    batch_losses: Iterable[Closure],
    *,
    rho: float = 0.05,
    ascent_steps: int = 1,
    generator: torch.Generator | None = None,
) -> float:
    r"""m-sharpness (eq. 15): the mean over mini-batches of the worst loss rise within radius ``rho``.

    For each closure (the mean loss :math:`\frac{1}{m}\sum_{s\in M} L_s` on one
    mini-batch :math:`M` of size :math:`m`) the inner maximum over
    :math:`\|\epsilon\|_2 \le r` is approximated by ``ascent_steps`` steps of
    projected normalised gradient ascent started at
    :math:`\epsilon_1 = r\, g/\|g\|` (SAM's first-order solution; a random
    direction if :math:`g = 0`): :math:`\epsilon \leftarrow
    \Pi_r\big(\epsilon + r\,\nabla L(\theta+\epsilon)/\|\nabla L(\theta+\epsilon)\|\big)`.
    The best value seen is kept, so more steps never decrease the estimate.
    The parameters are restored bit for bit (from a saved copy) after each evaluation.

    Args:
        params: parameters (or a module) perturbed.
        batch_losses: one closure per mini-batch, each returning that batch's mean loss.
        rho: radius :math:`r` (the paper's default 0.05).
        ascent_steps: gradient ascent steps of the inner maximisation (>= 1).
        generator: random source for the direction when the gradient vanishes.
    """
    plist = _params(params)
    if ascent_steps < 1:
        raise ValueError("ascent_steps must be >= 1")
    values: list[float] = []
    for closure in batch_losses:
        with torch.enable_grad():
            base = closure()
            grads = torch.autograd.grad(base, plist, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, plist)]
        base_value = float(base.detach())
        gnorm = float(torch.sqrt(_dot(grads, grads)))
        if gnorm == 0.0:
            grads = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                     for p in plist]
            gnorm = float(torch.sqrt(_dot(grads, grads)))
        eps = [rho * g / gnorm for g in grads]
        best = -math.inf
        saved = [p.detach().clone() for p in plist]
        for step in range(ascent_steps):
            _add_(plist, eps)
            try:
                with torch.enable_grad():
                    loss = closure()
                    need_grad = step + 1 < ascent_steps
                    g2 = torch.autograd.grad(loss, plist, allow_unused=True) if need_grad else None
            finally:
                with torch.no_grad():
                    for p, s0 in zip(plist, saved):
                        p.copy_(s0)
            best = max(best, float(loss.detach()) - base_value)
            if g2 is None:
                break
            g2 = [torch.zeros_like(p) if g is None else g for g, p in zip(g2, plist)]
            n2 = float(torch.sqrt(_dot(g2, g2)))
            if n2 == 0.0:
                break
            eps = [e + rho * g / n2 for e, g in zip(eps, g2)]
            en = float(torch.sqrt(_dot(eps, eps)))
            if en > rho:
                eps = [e * (rho / en) for e in eps]
        values.append(best)
    if not values:
        raise ValueError("no mini-batches given")
    return sum(values) / len(values)
