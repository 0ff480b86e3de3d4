r"""Native fused CPU kernels (``fused=True`` on CPU): one or two memory passes per step.

The C++ source (``fused_cpu.cpp`` beside this file) is compiled on first use with
:func:`torch.utils.cpp_extension.load` and cached in ``$TORCH_EXTENSIONS_DIR``
(default ``~/.cache/torch_extensions``): about a minute once per machine and torch
version, then milliseconds.  It needs a C++ compiler and ``ninja``; when the build
fails, :func:`available` returns ``False``, a warning says why once, and
``fused=True`` falls back to the :func:`torch.compile` path of
:mod:`memoptim.optim.functional`.  Set ``MEMOPTIM_NATIVE=0`` to never use it.

Each wrapper below has the signature of the rule of the same name in
:mod:`memoptim.optim.functional` and the same semantics (the equivalence tests run
both against the float64 reference).  Per step and group:

* critical gradients (``adam_cg``, ``sgd_cg``) and any group whose keys need other
  ranks' gradients: :func:`grad_norms` reads every gradient once for the priority
  keys; then the kernel, per tensor, decides insert/replace from the keys (scalar
  work) and one loop updates the moments and the parameter, reading the running sum
  for :math:`\operatorname{aggr}`, and -- only if the offer was accepted -- writes
  the chosen slot and moves the sum by ``new - old``;
* critical momenta (``adam_cm``, ``sgd_cm`` with momentum), called with ``pending``:
  the offer is *deferred by one step*.  The value offered at step :math:`t` is
  :math:`m_t`, which step :math:`t+1` reads anyway as the old momentum, so step
  :math:`t+1`'s single loop first stores it into the slot accepted at step :math:`t`
  (and moves the sum), then aggregates -- the order of Algorithm 1 -- and meanwhile
  sums the squares of the gradient; :func:`offer_deferred` then decides step
  :math:`t+1`'s offer from those norms.  Keys are final after each step; the values
  are completed by the next pass or by :meth:`memoptim.buffer.CriticalBuffer.settle_state`
  (inspection, ``state_dict``, another path).

Every :data:`~memoptim.buffer.RESYNC_INTERVAL` steps the kernel recomputes the sum
exactly.  Numbers moved per parameter and step: Adam 7; Adam+CM 8 without and 11
with a replacement (deferred); Adam+CG 9 and 12.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from memoptim.buffer import RESYNC_INTERVAL, CriticalBuffer
from memoptim.optim.memory import CRITICAL_GRADIENTS, CRITICAL_MOMENTA, NONE
from memoptim.optim.native import build, ops
from memoptim.optim.rules import ADAM, ADAM_V_FROM_DIRECTION, ADAMOMENTUM, SGD

__all__ = ["KERNELS", "adam_cg", "adam_cm", "adamomentum", "available", "defers", "grad_norms",
           "is_built", "kernel_for", "offer_deferred", "sgd_cg", "sgd_cm", "supports"]

#: The (base rule, memory mode) pairs implemented natively -> the name of the wrapper below.
#: Looked up as an attribute of this module at each step (a lookup ``torch.compile`` traces), so a
#: wrapped (e.g. counting) replacement is honoured.  The critical-momenta wrappers accept
#: ``pending`` and may defer their offer (see :func:`defers`).
KERNELS = {
    (ADAM_V_FROM_DIRECTION, CRITICAL_MOMENTA): "adam_cm",
    (ADAM, CRITICAL_GRADIENTS): "adam_cg",
    (ADAMOMENTUM, NONE): "adamomentum",
    (SGD, CRITICAL_MOMENTA): "sgd_cm",
    (SGD, CRITICAL_GRADIENTS): "sgd_cg",
}


def kernel_for(kernel: Any) -> Any:
    """The native kernel of an eager kernel of :mod:`memoptim.optim.functional`, or ``None``."""
    name = KERNELS.get((getattr(kernel, "rule", None), getattr(kernel, "memory", None)))
    return None if name is None else getattr(_SELF, name)


def defers(kernel: Any) -> bool:
    """Whether the native kernel of ``kernel`` can defer its offer by a step: the critical-momenta
    ones, whose offered momentum the next step's pass reads anyway."""
    return getattr(kernel, "memory", None) == CRITICAL_MOMENTA and kernel_for(kernel) is not None

_SOURCE = build.SOURCE  # the C++ source, shipped in the wheel beside this file
_module: ModuleType | None = None
_failed: str | None = None


def _load() -> ModuleType | None:
    global _module, _failed
    if _module is not None or _failed is not None:
        return _module
    if os.environ.get("MEMOPTIM_NATIVE", "1") == "0":
        _failed = "disabled by MEMOPTIM_NATIVE=0"
        return None
    try:
        _module = build.load()
    except Exception as exc:  # no compiler, no ninja, read-only cache, ...
        _failed = f"{type(exc).__name__}: {exc}".splitlines()[0]
        warnings.warn(
            f"memoptim: the native fused CPU kernel could not be built ({_failed}); "
            "fused=True falls back to torch.compile",
            RuntimeWarning,
            stacklevel=3,
        )
    return _module


def is_built() -> bool:
    """Whether the native kernel is built for this machine, torch and source (a file check: it
    neither builds nor loads anything).  ``fused=None`` uses the native kernel only then."""
    return os.environ.get("MEMOPTIM_NATIVE", "1") != "0" and build.is_built()


def available() -> bool:
    """Whether the native kernel is built (building it on the first call)."""
    return _load() is not None


def supports(params: Sequence[Tensor], grads: Sequence[Tensor], *states: Sequence[Tensor | None],
             buffers: Sequence[CriticalBuffer] | None = None, steps: Sequence[Tensor] = ()) -> bool:
    """Whether the native kernel handles these tensors (builds it on first use; ``False`` if
    it cannot be built).

    Handled: float32 or float64 parameters that are contiguous CPU tensors, with state
    (``states``: per-tensor lists, or empty ones) of the same dtype, shape and layout, dense CPU
    gradients of the same dtype (a non-contiguous one is read through a contiguous copy), 0-d
    float32 CPU step counters (``steps``, if given), and buffer values in the parameter dtype or,
    for float32 parameters, bfloat16.  Tensors on any other device are refused before anything
    is built.  Runs in C++ (cheap enough for every step); while ``torch.compile`` traces, the
    same check in Python (:func:`memoptim.optim.native.ops.supports_traced`).
    """
    plist = list(params)
    if not all(p.device.type == "cpu" for p in plist):
        return False
    compiling = torch.compiler.is_compiling()
    if not (_usable_traced() if compiling else _usable()):
        return False
    lists = [[p if t is None else t for p, t in zip(plist, s)] if len(s) else [] for s in states]
    values, sums, keys, _, _ = _buffer_lists(buffers, None)
    step_list = list(steps) or [torch.zeros(())] * len(plist)
    if compiling:
        return ops.supports_traced(plist, list(grads), lists, step_list, values, sums, keys)
    return _module.supports(params=plist, grads=list(grads), states=lists, steps=step_list, values=values,
                            sums=sums, keys=keys)


def _usable() -> bool:
    """Whether the kernel may run: not disabled by ``MEMOPTIM_NATIVE=0``, and built (building it
    on the first call)."""
    return os.environ.get("MEMOPTIM_NATIVE", "1") != "0" and _load() is not None


def _usable_traced() -> bool:
    """:func:`_usable` as a constant of a traced step: Dynamo calls it once, while tracing, instead
    of tracing into the build."""
    return _usable()


# What torch.compiler.assume_constant_result(_usable_traced) does (torch 2.13), set directly: the
# decorator imports Dynamo, which would add about 1.7 s to `import memoptim`.  A test holds the
# attribute to the decorator's.
_usable_traced._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _dense(grads: Sequence[Tensor]) -> list[Tensor]:
    """The gradients as contiguous tensors (a copy only of a non-contiguous one)."""
    return [g if g.is_contiguous() else g.contiguous() for g in grads]


def grad_norms(grads: Sequence[Tensor]) -> Tensor:
    """``||g||_2`` of every tensor as a float64 tensor of shape ``(N,)`` (one read of each;
    chunked partial sums added in a fixed order, so independent of the thread count)."""
    return ops.call("grad_norms", tensors=_dense(grads))


def _buffer_lists(buffers: Sequence[CriticalBuffer] | None, keys: Tensor | None):
    if buffers is None:
        return [], [], [], [], _NO_KEYS
    offered = _NO_KEYS if keys is None else keys.to(torch.float64).contiguous()
    return ([b.values for b in buffers], [b.total for b in buffers], [b.keys for b in buffers],
            [b.replacements_tensor for b in buffers], offered)


_NO_KEYS = torch.empty(0, dtype=torch.float64)


def _lr(lr: float | Tensor) -> float | Tensor:
    """The learning rate for :func:`memoptim.optim.native.ops.call`: as given eagerly (read there
    once), a 0-d float64 tensor while ``torch.compile`` traces (a graph input, so a scheduler
    does not recompile)."""
    if torch.compiler.is_compiling() and not isinstance(lr, Tensor):
        return torch.tensor(lr, dtype=torch.float64)
    return lr


_SELF = sys.modules[__name__]
ops.loader = _load


def _adam(variant: str, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, buffers, keys, *,
          lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled_weight_decay, maximize, decay,
          pending=None) -> Tensor | None:
    values, sums, bkeys, repl, offered = _buffer_lists(buffers, keys)
    norms = ops.call(
        "adam_step", params=list(params), grads=_dense(grads), exp_avgs=list(exp_avgs),
        exp_avg_sqs=list(exp_avg_sqs), max_exp_avg_sqs=list(max_exp_avg_sqs) if amsgrad else [],
        steps=list(steps), values=values,
        sums=sums, keys=bkeys, replacements=repl, offered=offered, lr=_lr(lr), beta1=float(beta1),
        beta2=float(beta2), eps=float(eps), weight_decay=float(weight_decay), amsgrad=bool(amsgrad),
        decoupled=bool(decoupled_weight_decay), maximize=bool(maximize), decay=float(decay),
        variant=variant, resync_interval=RESYNC_INTERVAL, pending=list(pending or ()))
    return norms if pending is not None else None


def adam_cm(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, buffers, keys, *, foreach=None,
            pending=None, **hyper) -> Tensor | None:
    """Native :func:`memoptim.optim.functional.adam_cm`.

    ``pending`` (one 0-d int64 per tensor, from
    :meth:`memoptim.buffer.CriticalBuffer.pending_state`): defer the offer -- ``keys`` is
    ignored, the pass stores the previous step's accepted momentum and returns the gradient
    norms, from which the caller makes this step's offers with :func:`offer_deferred`.
    """
    return _adam("adam+cm", params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, buffers, keys,
                 pending=pending, **hyper)


def adam_cg(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, buffers, keys, *, foreach=None,
            **hyper) -> None:
    """Native :func:`memoptim.optim.functional.adam_cg`."""
    _adam("adam+cg", params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, buffers, keys, **hyper)


def adamomentum(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, *, foreach=None,
                **hyper) -> None:
    """Native :func:`memoptim.optim.functional.adamomentum`."""
    _adam("adamomentum", params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, None, None, decay=1.0,
          **hyper)


def _sgd(variant: str, params, grads, momentum_buffers, steps, buffers, keys, *, lr, momentum, dampening,
         weight_decay, maximize, decay, pending=None) -> Tensor | None:
    seed: list[int] = []
    moms: list[Tensor] = []
    if momentum:
        for i, b in enumerate(momentum_buffers):
            seed.append(b is None)
            if b is None:  # created here, seeded by the kernel (b_1 = x_1); the caller stores it
                momentum_buffers[i] = torch.zeros_like(params[i], memory_format=torch.contiguous_format)
        moms = list(momentum_buffers)
    values, sums, bkeys, repl, offered = _buffer_lists(buffers, keys)
    norms = ops.call(
        "sgd_step", params=list(params), grads=_dense(grads), momentum_buffers=moms, seed=seed,
        steps=list(steps), values=values, sums=sums, keys=bkeys, replacements=repl, offered=offered, lr=_lr(lr),
        momentum=float(momentum), dampening=float(dampening), weight_decay=float(weight_decay),
        maximize=bool(maximize), decay=float(decay), variant=variant, resync_interval=RESYNC_INTERVAL,
        pending=list(pending or ()))
    return norms if pending is not None else None


def sgd_cm(params, grads, momentum_buffers, steps, buffers, keys, *, foreach=None, pending=None,
           **hyper) -> Tensor | None:
    """Native :func:`memoptim.optim.functional.sgd_cm`; ``pending`` as for :func:`adam_cm`
    (only with ``momentum > 0``: the offered momentum must outlive the step)."""
    return _sgd("sgd+cm", params, grads, momentum_buffers, steps, buffers, keys, pending=pending, **hyper)


def offer_deferred(keys: Tensor, buffers: Sequence[CriticalBuffer], pending: Sequence[Tensor],
                   decay: float) -> None:
    """Make a deferred step's offers once its ``keys`` are known: decide insert/replace per
    buffer, decay the keys and record the accepted slot (or -1) in ``pending``."""
    ops.call("offer_deferred", keys=keys.to(torch.float64).contiguous(), buffer_keys=[b.keys for b in buffers],
             replacements=[b.replacements_tensor for b in buffers], pending=list(pending), decay=float(decay))


def sgd_cg(params, grads, momentum_buffers, steps, buffers, keys, *, foreach=None, **hyper) -> None:
    """Native :func:`memoptim.optim.functional.sgd_cg`."""
    _sgd("sgd+cg", params, grads, momentum_buffers, steps, buffers, keys, **hyper)
