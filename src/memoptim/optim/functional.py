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
* :func:`compiled`: the per-tensor loop traced by ``torch.compile(fullgraph=True)``, which
  fuses each tensor's update into a few memory passes (the fallback of ``fused=True`` where the
  native kernel of :mod:`memoptim.optim.native` does not apply).  Inside the traced kernel the
  step counts and the learning rate stay tensors and the buffer decision is tensor arithmetic,
  so there is no data-dependent Python branch (``fullgraph=True`` would refuse one) and no
  wait for the device.
"""

from __future__ import annotations

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
