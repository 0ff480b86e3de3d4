r"""Update rules as functions, one per optimizer, each with a per-tensor and a multi-tensor kernel.

These functions do the maths of one step for the tensors of one parameter
group; the optimizer classes only collect state and call them.  Every kernel
mutates ``params`` and the state tensors in place.  ``buffers`` is ``None``
when the memory is off (then :math:`\operatorname{aggr}(x, B) = x`).

Notation as in ``docs/semantics.md``: :math:`g_t` gradient, :math:`t` the tensor's 1-based
step count, :math:`B` its critical buffer, :math:`\operatorname{aggr}` paper eq. 6.

Each rule has three execution paths over the same maths:

* ``foreach=False``: a plain loop over tensors (the slow, reference-like path);
* ``foreach=True``: ``torch._foreach_*`` kernels over the whole list, one launch
  per operation instead of one per tensor;
* :func:`compiled` (``fused=True`` in the classes): the per-tensor loop traced by
  ``torch.compile(fullgraph=True)``, which fuses each tensor's update into a few
  memory passes.  Inside the traced rule the step counts and the learning rate
  stay tensors and the buffer decision is tensor arithmetic, so the rule has no
  data-dependent Python branch (``fullgraph=True`` would refuse one) and never
  waits for the device.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from memoptim.buffer import CriticalBuffer, aggregate, offer

__all__ = ["adam_cg", "adam_cm", "adam_cm_vg", "adamomentum", "compiled", "sgd_cg", "sgd_cm"]

Buffers = Sequence[CriticalBuffer] | None


_COMPILED: dict[Callable[..., None], Callable[..., None]] = {}


def compiled(rule: Callable[..., None]) -> Callable[..., None]:
    """``torch.compile(rule, fullgraph=True)``, built once per rule.

    Call it with ``foreach=False`` and ``lr`` as a 0-d tensor (so that a changing
    learning rate does not trigger recompilation), under ``torch.no_grad()``.
    The first call per parameter layout compiles (seconds to a minute).
    """
    if rule not in _COMPILED:
        traced = torch.compile(rule, fullgraph=True, dynamic=False)
        eager = False  # set once torch.compile gave up on this rule

        def run(*args: object, **kwargs: object) -> None:
            nonlocal eager
            if not eager:
                lifted = [_lift_0d(a) for a in args]
                try:
                    traced(*lifted, **kwargs)
                except torch._dynamo.exc.FailOnRecompileLimitHit:
                    # Each new set of tensors with gradients is a new graph; once the recompile
                    # limit is hit (raised before the graph runs, so no state has changed) the
                    # rule runs eagerly from then on.
                    warnings.warn(f"memoptim: torch.compile hit its recompile limit for {rule.__name__} "
                                  "(the set of tensors with gradients keeps changing); running it "
                                  "eagerly from now on", RuntimeWarning, stacklevel=3)
                    eager = True
            if eager:
                rule(*args, **{**kwargs, "lr": float(kwargs["lr"]), "foreach": True})
                return
            # Lists the rule fills in (fresh momentum buffers) were copies: write back.
            for orig, new in zip(args, lifted):
                if isinstance(orig, list) and new is not orig:
                    for i, (o, n) in enumerate(zip(orig, new)):
                        if o is None and n is not None:
                            orig[i] = n.view(args[0][i].shape)  # args[0] are the params

        _COMPILED[rule] = run
    return _COMPILED[rule]


def _lift_0d(x: object) -> object:
    """View 0-d tensors as 1-element tensors (same storage).

    In-place updates of 0-d graph inputs are lost by the compiled graph in
    torch 2.13 (0-d inputs are treated as scalars); a 1-element view is updated
    in place like any other tensor and writes through to the 0-d original.
    """
    if isinstance(x, Tensor):
        return x.view(1) if x.dim() == 0 else x
    if isinstance(x, CriticalBuffer):
        if x.total.dim() > 0:
            return x
        return CriticalBuffer(x.keys, x.values.view(-1, 1), x.total.view(1),
                              x.replacements_tensor.view(1))
    if isinstance(x, list):
        return [_lift_0d(e) for e in x]
    return x


# --------------------------------------------------------------------------- helpers
def _step_values(steps: Sequence[Tensor]) -> list[float] | list[Tensor]:
    """Increment the step counters; return them as Python floats (eager: they live on the CPU)
    or, while ``torch.compile`` traces the rule, as the tensors themselves (no host read)."""
    if torch.compiler.is_compiling():
        for s in steps:
            s.add_(1.0)
        return list(steps)
    torch._foreach_add_(list(steps), 1.0)
    return [s.item() for s in steps]


def prepare_grads(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    *,
    lr: float,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
    foreach: bool,
) -> list[Tensor]:
    r"""Apply ``maximize`` and weight decay; return the gradients the rule uses.

    Decoupled: :math:`\theta \leftarrow \theta (1 - \mathrm{lr}\cdot wd)`, gradients untouched.
    Coupled (L2): :math:`g \leftarrow g + wd\,\theta`.
    """
    grads = list(grads)
    if foreach:
        if maximize:
            grads = list(torch._foreach_neg(grads))
        if weight_decay != 0:
            if decoupled:
                torch._foreach_mul_(list(params), 1.0 - lr * weight_decay)
            else:
                grads = list(torch._foreach_add(grads, list(params), alpha=weight_decay))
        return grads
    out = []
    for p, g in zip(params, grads):
        if maximize:
            g = -g
        if weight_decay != 0:
            if decoupled:
                p.mul_(1.0 - lr * weight_decay)
            else:
                g = g.add(p, alpha=weight_decay)
        out.append(g)
    return out


def _aggregate(xs: list[Tensor], buffers: Buffers, foreach: bool) -> list[Tensor]:
    return xs if buffers is None else aggregate(xs, buffers, foreach)


def _offer(buffers: Buffers, keys: Tensor | None, values: list[Tensor], decay: float,
           foreach: bool) -> None:
    if buffers is None:
        return
    if foreach:
        offer(buffers, keys, values, decay)
    else:
        for i, (b, v) in enumerate(zip(buffers, values)):
            b.offer(keys[i], v, decay)


def _adam_apply(
    params: list[Tensor],
    numerators: list[Tensor],
    second: list[Tensor],
    max_second: list[Tensor],
    step_values: list[float],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    amsgrad: bool,
    foreach: bool,
    eps_outside: bool = True,
) -> None:
    r"""Bias-corrected Adam step :math:`\theta \leftarrow \theta - \mathrm{lr}\,
    \frac{n_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}` (eq. 7).

    With ``amsgrad`` the running maximum of :math:`v_t` replaces it.  With
    ``eps_outside=False`` no :math:`\epsilon` is added to the denominator
    (AdaMomentum keeps it inside :math:`v_t`).
    """
    if torch.compiler.is_compiling():  # step counts and lr are tensors: stay branch-free
        # Per-tensor scalars computed once into one small buffer (in double, as the eager
        # path does with Python floats), then cast to each parameter's dtype so the fused
        # elementwise loops run in that dtype.
        t = torch.stack([s.reshape(()) for s in step_values]).to(torch.float64)
        scalars = torch.stack([lr / (1.0 - beta1**t), 1.0 / torch.sqrt(1.0 - beta2**t)])
        for i, p in enumerate(params):
            step_size, inv_sqrt_bc2 = scalars[0, i].to(p.dtype), scalars[1, i].to(p.dtype)
            v = second[i]
            if amsgrad:
                torch.maximum(max_second[i], v, out=max_second[i])
                v = max_second[i]
            denom = v.sqrt() * inv_sqrt_bc2
            if eps_outside:
                denom = denom + eps
            p.sub_(numerators[i] / denom * step_size)
        return
    bc1 = [1.0 - beta1**t for t in step_values]
    sqrt_bc2 = [math.sqrt(1.0 - beta2**t) for t in step_values]
    if foreach:
        if amsgrad:
            torch._foreach_maximum_(max_second, second)
            second = max_second
        denom = torch._foreach_sqrt(second)
        torch._foreach_div_(denom, sqrt_bc2)
        if eps_outside:
            torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, numerators, denom, [-lr / b for b in bc1])
        return
    for i, p in enumerate(params):
        v = second[i]
        if amsgrad:
            torch.maximum(max_second[i], v, out=max_second[i])
            v = max_second[i]
        denom = v.sqrt().div_(sqrt_bc2[i])
        if eps_outside:
            denom.add_(eps)
        p.addcdiv_(numerators[i], denom, value=-lr / bc1[i])


def _ema_(avgs: list[Tensor], xs: list[Tensor], beta: float, foreach: bool) -> None:
    r""":math:`m \leftarrow \beta m + (1-\beta) x`."""
    if foreach:
        torch._foreach_lerp_(avgs, xs, 1.0 - beta)
    else:
        for m, x in zip(avgs, xs):
            m.lerp_(x, 1.0 - beta)


def _ema_sq_(avgs: list[Tensor], xs: list[Tensor], beta: float, foreach: bool) -> None:
    r""":math:`v \leftarrow \beta v + (1-\beta) x^2`."""
    if foreach:
        torch._foreach_mul_(avgs, beta)
        torch._foreach_addcmul_(avgs, xs, xs, 1.0 - beta)
    else:
        for v, x in zip(avgs, xs):
            v.mul_(beta).addcmul_(x, x, value=1.0 - beta)


# --------------------------------------------------------------------------- Adam+CM
def adam_cm(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    buffers: Buffers,
    keys: Tensor | None,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    decoupled_weight_decay: bool,
    maximize: bool,
    decay: float,
    foreach: bool,
) -> None:
    r"""Adam with critical momenta (paper eqs. 4-7, Algorithm 1).

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        a_t &= \operatorname{aggr}(m_t, B) = m_t + \tfrac{1}{C}\textstyle\sum B \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) a_t^2 \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\,
            \frac{a_t / (1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    then :math:`(\|g_t\|, m_t)` is offered to :math:`B` and the keys decay.
    """
    t = _step_values(steps)
    g = prepare_grads(params, grads, lr=lr, weight_decay=weight_decay,
                       decoupled=decoupled_weight_decay, maximize=maximize, foreach=foreach)
    _ema_(exp_avgs, g, beta1, foreach)
    a = _aggregate(exp_avgs, buffers, foreach)
    _ema_sq_(exp_avg_sqs, a, beta2, foreach)
    _adam_apply(params, a, exp_avg_sqs, max_exp_avg_sqs, t, lr=lr, beta1=beta1, beta2=beta2,
                eps=eps, amsgrad=amsgrad, foreach=foreach)
    _offer(buffers, keys, exp_avgs, decay, foreach)


def adam_cm_vg(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    buffers: Buffers,
    keys: Tensor | None,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    decoupled_weight_decay: bool,
    maximize: bool,
    decay: float,
    foreach: bool,
) -> None:
    r"""Adam+CM with Adam's second moment (``AdamCM(second_moment="gradient")``): the buffer
    enters the update direction only.

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad a_t = \operatorname{aggr}(m_t, B) \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\,
            \frac{a_t / (1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    then :math:`(\|g_t\|, m_t)` is offered to :math:`B` and the keys decay.
    """
    t = _step_values(steps)
    g = prepare_grads(params, grads, lr=lr, weight_decay=weight_decay,
                       decoupled=decoupled_weight_decay, maximize=maximize, foreach=foreach)
    _ema_(exp_avgs, g, beta1, foreach)
    _ema_sq_(exp_avg_sqs, g, beta2, foreach)
    a = _aggregate(exp_avgs, buffers, foreach)
    _adam_apply(params, a, exp_avg_sqs, max_exp_avg_sqs, t, lr=lr, beta1=beta1, beta2=beta2,
                eps=eps, amsgrad=amsgrad, foreach=foreach)
    _offer(buffers, keys, exp_avgs, decay, foreach)


# --------------------------------------------------------------------------- Adam+CG
def adam_cg(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    buffers: Buffers,
    keys: Tensor | None,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    decoupled_weight_decay: bool,
    maximize: bool,
    decay: float,
    foreach: bool,
) -> None:
    r"""Adam with critical gradients (paper eq. 3; McRae et al. 2022).

    .. math::
        \hat g_t &= \operatorname{aggr}(g_t, B) \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\hat g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\hat g_t^2 \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\,
            \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    then :math:`(\|g_t\|, g_t)` is offered to :math:`B` and the keys decay.
    """
    t = _step_values(steps)
    g = prepare_grads(params, grads, lr=lr, weight_decay=weight_decay,
                       decoupled=decoupled_weight_decay, maximize=maximize, foreach=foreach)
    ghat = _aggregate(g, buffers, foreach)
    _ema_(exp_avgs, ghat, beta1, foreach)
    _ema_sq_(exp_avg_sqs, ghat, beta2, foreach)
    _adam_apply(params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, t, lr=lr, beta1=beta1,
                beta2=beta2, eps=eps, amsgrad=amsgrad, foreach=foreach)
    _offer(buffers, keys, g, decay, foreach)


# --------------------------------------------------------------------------- AdaMomentum
def adamomentum(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    decoupled_weight_decay: bool,
    maximize: bool,
    foreach: bool,
) -> None:
    r"""AdaMomentum / AdaM3 (Wang et al.): the second moment is built from the momentum.

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) m_t^2 + \epsilon \\
        \theta_t &= \theta_{t-1} - \frac{\mathrm{lr}}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{v_t} / \sqrt{1-\beta_2^t}}

    :math:`\epsilon` accumulates in the stored :math:`v_t`; none is added outside the root.
    """
    t = _step_values(steps)
    g = prepare_grads(params, grads, lr=lr, weight_decay=weight_decay,
                       decoupled=decoupled_weight_decay, maximize=maximize, foreach=foreach)
    _ema_(exp_avgs, g, beta1, foreach)
    _ema_sq_(exp_avg_sqs, exp_avgs, beta2, foreach)
    if foreach:
        torch._foreach_add_(exp_avg_sqs, eps)
    else:
        for v in exp_avg_sqs:
            v.add_(eps)
    _adam_apply(params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, t, lr=lr, beta1=beta1,
                beta2=beta2, eps=eps, amsgrad=amsgrad, foreach=foreach, eps_outside=False)


# --------------------------------------------------------------------------- SGD family
def _heavy_ball_(
    momentum_buffers: list[Tensor | None],
    xs: list[Tensor],
    momentum: float,
    dampening: float,
    foreach: bool,
) -> list[Tensor]:
    r""":math:`b_t = \mu b_{t-1} + (1 - \tau) x_t`, seeded with :math:`b_1 = x_1`.

    Fills ``None`` entries of ``momentum_buffers`` in place and returns the buffers.
    """
    fresh = [i for i, b in enumerate(momentum_buffers) if b is None]
    for i in fresh:
        momentum_buffers[i] = torch.clone(xs[i]).detach()
    seeded = set(fresh)
    old = [i for i in range(len(xs)) if i not in seeded]
    if old:
        bufs = [momentum_buffers[i] for i in old]
        vals = [xs[i] for i in old]
        if foreach:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, vals, alpha=1.0 - dampening)
        else:
            for b, x in zip(bufs, vals):
                b.mul_(momentum).add_(x, alpha=1.0 - dampening)
    return momentum_buffers  # type: ignore[return-value]


def _sgd_apply(params: list[Tensor], directions: list[Tensor], lr: float, foreach: bool) -> None:
    if torch.compiler.is_compiling():  # lr is a tensor
        for p, d in zip(params, directions):
            p.sub_(d * lr)
        return
    if foreach:
        torch._foreach_add_(params, directions, alpha=-lr)
    else:
        for p, d in zip(params, directions):
            p.add_(d, alpha=-lr)


def sgd_cm(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    steps: list[Tensor],
    buffers: Buffers,
    keys: Tensor | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    maximize: bool,
    decay: float,
    foreach: bool,
) -> None:
    r"""SGD with critical momenta (paper eqs. 4 and 8).

    .. math::
        g_t &\leftarrow g_t + wd\,\theta_{t-1} \\
        m_t &= \mu m_{t-1} + (1-\tau) g_t \quad (m_1 = g_1;\ m_t = g_t \text{ if } \mu = 0) \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\,\operatorname{aggr}(m_t, B)

    then :math:`(\|g_t\|, m_t)` is offered to :math:`B`.  ``momentum_buffers``
    entries that are ``None`` are created (the caller stores them).
    """
    _step_values(steps)
    g = prepare_grads(params, grads, lr=lr, weight_decay=weight_decay, decoupled=False,
                       maximize=maximize, foreach=foreach)
    m = _heavy_ball_(momentum_buffers, g, momentum, dampening, foreach) if momentum else g
    _sgd_apply(params, _aggregate(m, buffers, foreach), lr, foreach)
    _offer(buffers, keys, m, decay, foreach)


def sgd_cg(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    steps: list[Tensor],
    buffers: Buffers,
    keys: Tensor | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    maximize: bool,
    decay: float,
    foreach: bool,
) -> None:
    r"""SGD with critical gradients (paper eq. 10).

    .. math::
        g_t &\leftarrow g_t + wd\,\theta_{t-1}, \qquad \hat g_t = \operatorname{aggr}(g_t, B) \\
        b_t &= \mu b_{t-1} + (1-\tau)\hat g_t \quad (b_1 = \hat g_1;\ b_t = \hat g_t
            \text{ if } \mu = 0) \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\, b_t

    then :math:`(\|g_t\|, g_t)` is offered to :math:`B`.
    """
    _step_values(steps)
    g = prepare_grads(params, grads, lr=lr, weight_decay=weight_decay, decoupled=False,
                       maximize=maximize, foreach=foreach)
    ghat = _aggregate(g, buffers, foreach)
    d = _heavy_ball_(momentum_buffers, ghat, momentum, dampening, foreach) if momentum else ghat
    _sgd_apply(params, d, lr, foreach)
    _offer(buffers, keys, g, decay, foreach)
