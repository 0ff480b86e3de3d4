r"""The functional kernels: every (base rule, memory mode) pair the optimizers run, by name.

Each kernel does the maths of one step for the tensors of one parameter group and mutates
``params`` and the state in place; ``buffers`` is ``None`` when the memory is off (then
:math:`\operatorname{aggr}(x, B) = x`).  The maths lives once, in the base rules of
:mod:`memoptim.optim.rules`; the memory modes in :mod:`memoptim.optim.memory`.  Notation as in
``docs/semantics.md``.

Each kernel has three execution paths over the same maths:

* ``foreach=False``: a plain loop over tensors (the slow, reference-like path);
* ``foreach=True``: ``torch._foreach_*`` kernels over the whole list, one launch
  per operation instead of one per tensor;
* :func:`compiled`: the multi-tensor path traced by ``torch.compile(fullgraph=True)``, whose
  Inductor kernels fuse the updates into a few memory passes (the ``fused=True`` path on
  accelerators, and where the native kernel of :mod:`memoptim.optim.native` does not apply).
  The rule is traced from the ``torch._foreach_*`` operations, one node per operation for the
  whole list, and the buffer's offer is one custom operator for the whole group
  (:mod:`memoptim.offers`), so the graph does not grow with a loop unrolled per tensor.  Inside
  the traced kernel the step counts and the learning rate stay tensors on the parameters'
  device and the buffer decision is tensor arithmetic, so there is no data-dependent Python
  branch (``fullgraph=True`` would refuse one) and no wait for the device.

Each kernel is its own function with its own code object (:func:`memoptim.optim.memory.kernel`),
hence its own ``torch.compile`` cache and recompile limit.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from memoptim.buffer import CriticalBuffer
from memoptim.optim.memory import CRITICAL_GRADIENTS, CRITICAL_MOMENTA, NONE, kernel
from memoptim.optim.rules import ADAM, ADAM_V_FROM_DIRECTION, ADAMOMENTUM, LION, SGD
from memoptim.optim.rules.ops import prepare_grads

__all__ = ["adam_cg", "adam_cm", "adam_cm_vg", "adamomentum", "compiled", "lion", "lion_cg", "lion_cm",
           "prepare_grads", "sgd_cg", "sgd_cm"]

#: Adam+CM (paper eqs. 4-7): critical momenta, the second moment from the aggregated momentum.
adam_cm = kernel(ADAM_V_FROM_DIRECTION, CRITICAL_MOMENTA, "adam_cm")
#: Adam+CM with Adam's second moment (``AdamCM(second_moment="gradient")``): the buffer enters
#: the update direction only.
adam_cm_vg = kernel(ADAM, CRITICAL_MOMENTA, "adam_cm_vg")
#: Adam+CG (paper eq. 3): Adam on the aggregated gradient.
adam_cg = kernel(ADAM, CRITICAL_GRADIENTS, "adam_cg")
#: AdaMomentum: the second moment from the momentum, epsilon inside it; no buffer.
adamomentum = kernel(ADAMOMENTUM, NONE, "adamomentum")
#: SGD+CM (paper eqs. 4 and 8) and SGD+CG (eq. 10).
sgd_cm = kernel(SGD, CRITICAL_MOMENTA, "sgd_cm")
sgd_cg = kernel(SGD, CRITICAL_GRADIENTS, "sgd_cg")
#: Lion, Lion+CG (Lion on the aggregated gradient) and Lion+CM (the sign of the aggregated
#: interpolation).
lion = kernel(LION, NONE, "lion")
lion_cg = kernel(LION, CRITICAL_GRADIENTS, "lion_cg")
lion_cm = kernel(LION, CRITICAL_MOMENTA, "lion_cm")


_COMPILED: dict[Callable[..., None], Callable[..., None]] = {}


def compiled(rule: Callable[..., None]) -> Callable[..., None]:
    """``torch.compile(rule, fullgraph=True)`` on its multi-tensor path, built once per rule.

    Call it with ``lr`` as a 0-d tensor (so that a changing learning rate does not trigger
    recompilation), under ``torch.no_grad()``; ``foreach`` is ignored.  The first call per
    parameter layout compiles.  Called while ``torch.compile`` already traces (a compiled
    ``opt.step``), it is the rule itself, traced into the caller's graph.
    """
    if rule not in _COMPILED:
        own = _own_code(rule)
        traced = torch.compile(own, fullgraph=True, dynamic=False)
        eager = False  # set once torch.compile gave up on this rule

        def run(*args: object, **kwargs: object) -> None:
            nonlocal eager
            kwargs = {**kwargs, "foreach": True}
            if torch.compiler.is_compiling():
                rule(*args, **kwargs)
                return
            if not eager:
                lifted = [_lift_0d(a) for a in args]
                try:
                    traced(*lifted, **kwargs)
                except torch._dynamo.exc.FailOnRecompileLimitHit:
                    # Raised before the graph runs, so no state has changed: the rule runs
                    # eagerly from then on.
                    warnings.warn(_recompile_message(rule, own.__code__), RuntimeWarning, stacklevel=3)
                    eager = True
            if eager:
                rule(*args, **{**kwargs, "lr": float(kwargs["lr"])})
                return
            # Lists the rule fills in (fresh momentum buffers) were copies: write back.
            for orig, new in zip(args, lifted):
                if isinstance(orig, list) and new is not orig:
                    for i, (o, n) in enumerate(zip(orig, new)):
                        if o is None and n is not None:
                            orig[i] = n.view(args[0][i].shape)  # args[0] are the params

        _COMPILED[rule] = run
    return _COMPILED[rule]


def _own_code(rule: Callable[..., None]) -> Callable[..., None]:
    """``rule`` with a code object of its own (``<name>_compiled``), so that its compile cache is
    this path's alone: a compiled ``opt.step`` that inlines ``rule`` leaves entries on the
    eager kernel's code object, which must not decide how this path runs."""
    code = rule.__code__
    name = f"{rule.__name__}_compiled"
    code = code.replace(co_name=name, co_qualname=name) if sys.version_info >= (3, 11) else code.replace(
        co_name=name)
    fn = types.FunctionType(code, rule.__globals__, name, rule.__defaults__, rule.__closure__)
    fn.__kwdefaults__ = rule.__kwdefaults__
    fn.__qualname__, fn.__doc__ = name, rule.__doc__
    return fn


def _recompile_message(rule: Callable[..., None], code: types.CodeType) -> str:
    """The warning when ``rule``'s compile cache is full, naming the guard that failed last (the
    real cause: a new parameter layout, another dtype, a hyperparameter that changed, ...)."""
    failures = torch._dynamo.utils.guard_failures.get(code) or ["unknown"]
    cause = " ".join(str(failures[-1]).split())[:300]
    limit = getattr(torch._dynamo.config, "recompile_limit", None)
    return (f"memoptim: torch.compile hit its recompile limit for {rule.__name__} (torch._dynamo.config."
            f"recompile_limit={limit}); the last recompilation was caused by: {cause}. Running "
            f"{rule.__name__} eagerly from now on (raise the limit, or keep the set, shapes and dtypes "
            "of the tensors with gradients and the hyperparameters fixed)")


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
