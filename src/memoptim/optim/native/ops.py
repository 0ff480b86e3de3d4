r"""The native kernel's entry points as torch custom operators (``torch.ops.memoptim.*``).

Each C++ entry point of ``fused_cpu.cpp`` is registered (:func:`memoptim.operators.define`),
naming the arguments it writes (``mutates_args``), and given a fake implementation that says
only what it returns (shapes and dtypes, no data).  ``torch.compile`` then traces a step that
calls them without a graph break: the operator is one opaque node of the graph, run by the C++
code, and functionalisation knows which inputs it mutates.

Eagerly (outside ``torch.compile``) the Python wrappers of :mod:`memoptim.optim.native` call the
extension directly, which skips the dispatcher's boxing of the tensor lists (tens of
microseconds per call on a 100-tensor group); the operator's implementation is that very call,
so both routes run the same code.  :func:`call` chooses.

The learning rate is a 0-d tensor here (a float learning rate is wrapped): under
``torch.compile`` a scheduler then changes a graph input, not a constant, and nothing recompiles.

:func:`supports_traced` restates the extension's ``supports`` check in Python for traced steps
(Dynamo cannot call into the C++ check; it reads tensor metadata only, which is static within a
graph and guarded).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from memoptim.operators import define

__all__ = ["OPS", "call", "supports_traced"]

#: The extension loader (:func:`memoptim.optim.native._load`), set by the package on import, so
#: that this module imports nothing of memoptim.
loader: Callable[[], ModuleType | None] = lambda: None  # noqa: E731

_ADAM_MUTATES = ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "steps", "values", "sums", "keys",
                 "replacements", "pending")
_SGD_MUTATES = ("params", "momentum_buffers", "steps", "values", "sums", "keys", "replacements", "pending")


def _extension() -> ModuleType:
    module = loader()
    if module is None:
        raise RuntimeError("memoptim: the native kernel is not available (see memoptim build-kernels --check)")
    return module


def _norms_or_empty(out: Tensor | None) -> Tensor:
    """The C++ step returns an undefined tensor (``None``) unless the offer was deferred."""
    return torch.empty(0, dtype=torch.float64) if out is None else out


def _adam_step(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
              max_exp_avg_sqs: list[Tensor], steps: list[Tensor], values: list[Tensor], sums: list[Tensor],
              keys: list[Tensor], replacements: list[Tensor], offered: Tensor, lr: Tensor, beta1: float,
              beta2: float, eps: float, weight_decay: float, amsgrad: bool, decoupled: bool, maximize: bool,
              decay: float, variant: str, resync_interval: int, pending: list[Tensor]) -> Tensor:
    r"""One fused Adam+CM / Adam+CG / AdaMomentum step (``variant``) over a group's tensors:
    :math:`\theta \leftarrow \theta - \mathrm{lr}\,\frac{d_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)}
    + \epsilon}` with the buffer's aggregate in :math:`d_t` (``docs/semantics.md``).  Returns the
    gradient norms ``(N,)`` float64 when ``pending`` is given (a deferred offer), else ``(0,)``."""
    return _norms_or_empty(_extension().adam_step(
        params=params, grads=grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs, max_exp_avg_sqs=max_exp_avg_sqs,
        steps=steps, values=values, sums=sums, keys=keys, replacements=replacements, offered=offered,
        lr=float(lr), beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
        decoupled=decoupled, maximize=maximize, decay=decay, variant=variant, resync_interval=resync_interval,
        pending=pending))


def _adam_step_fake(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, values, sums, keys,
                    replacements, offered, lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled, maximize,
                    decay, variant, resync_interval, pending):
    return torch.empty(len(params) if pending else 0, dtype=torch.float64, device="cpu")


def _sgd_step(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor], seed: list[int],
             steps: list[Tensor], values: list[Tensor], sums: list[Tensor], keys: list[Tensor],
             replacements: list[Tensor], offered: Tensor, lr: Tensor, momentum: float, dampening: float,
             weight_decay: float, maximize: bool, decay: float, variant: str, resync_interval: int,
             pending: list[Tensor]) -> Tensor:
    r"""One fused SGD+CM / SGD+CG step (``variant``): :math:`b_t = \mu b_{t-1} + (1-\tau)\hat g_t`
    (:math:`b_1 = \hat g_1` where ``seed[i]``), :math:`\theta \leftarrow \theta - \mathrm{lr}\,d_t`.
    Returns as :func:`adam_step`."""
    return _norms_or_empty(_extension().sgd_step(
        params=params, grads=grads, momentum_buffers=momentum_buffers, seed=seed, steps=steps, values=values,
        sums=sums, keys=keys, replacements=replacements, offered=offered, lr=float(lr), momentum=momentum,
        dampening=dampening, weight_decay=weight_decay, maximize=maximize, decay=decay, variant=variant,
        resync_interval=resync_interval, pending=pending))


def _sgd_step_fake(params, grads, momentum_buffers, seed, steps, values, sums, keys, replacements, offered, lr,
                   momentum, dampening, weight_decay, maximize, decay, variant, resync_interval, pending):
    return torch.empty(len(params) if pending else 0, dtype=torch.float64, device="cpu")


def _grad_norms(tensors: list[Tensor]) -> Tensor:
    r""":math:`\|g_i\|_2` of every (contiguous) tensor as ``(N,)`` float64, from one read of each."""
    return _extension().grad_norms(tensors=tensors)


def _grad_norms_fake(tensors):
    return torch.empty(len(tensors), dtype=torch.float64, device="cpu")


def _offer_deferred(keys: Tensor, buffer_keys: list[Tensor], replacements: list[Tensor], pending: list[Tensor],
                   decay: float) -> None:
    r"""A deferred step's offers: insert or replace by ``keys[i]`` (ties keep), then
    :math:`k \leftarrow \lambda k`; the accepted slot (or -1) goes to ``pending[i]``."""
    _extension().offer_deferred(keys=keys, buffer_keys=buffer_keys, replacements=replacements, pending=pending,
                                decay=decay)


def _offer_deferred_fake(keys, buffer_keys, replacements, pending, decay):
    return None


#: name -> custom operator (``torch.ops.memoptim.<name>``), registered by :func:`memoptim.operators.define`.
OPS = {
    "adam_step": define(_adam_step, name="adam_step", mutates_args=_ADAM_MUTATES, fake=_adam_step_fake,
                        device_type="cpu"),
    "sgd_step": define(_sgd_step, name="sgd_step", mutates_args=_SGD_MUTATES, fake=_sgd_step_fake,
                       device_type="cpu"),
    "grad_norms": define(_grad_norms, name="grad_norms", mutates_args=(), fake=_grad_norms_fake,
                         device_type="cpu"),
    "offer_deferred": define(_offer_deferred, name="offer_deferred",
                             mutates_args=("buffer_keys", "replacements", "pending"), fake=_offer_deferred_fake,
                             device_type="cpu"),
}


def call(name: str, **kwargs: Any) -> Any:
    """Run entry point ``name``: through its custom operator while ``torch.compile`` traces, else
    straight into the extension (the operator's implementation, without the dispatcher)."""
    if torch.compiler.is_compiling():
        return OPS[name](**kwargs)
    if "lr" in kwargs:
        kwargs["lr"] = float(kwargs["lr"])
    out = getattr(_extension(), name)(**kwargs)
    return _norms_or_empty(out) if name.endswith("_step") else out


# ------------------------------------------------------------------ the support check, traceable
def _plain_cpu(t: Tensor) -> bool:
    """A dense CPU tensor with its own storage (no tensor subclass: not a DTensor)."""
    return (t.device.type == "cpu" and t.layout == torch.strided and not t.is_sparse
            and type(t) in (Tensor, torch.nn.Parameter) and not _is_dtensor(t))


def _is_dtensor(t: Tensor) -> bool:
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


def _same_dense(t: Tensor, like: Tensor) -> bool:
    return _plain_cpu(t) and t.is_contiguous() and t.dtype == like.dtype and t.shape == like.shape


def supports_traced(params: Sequence[Tensor], grads: Sequence[Tensor],
                    states: Sequence[Sequence[Tensor | None]], steps: Sequence[Tensor],
                    values: Sequence[Tensor], sums: Sequence[Tensor], keys: Sequence[Tensor]) -> bool:
    """The extension's ``supports`` (``fused_cpu.cpp``), the same conditions in Python."""
    for i, p in enumerate(params):
        dt = p.dtype
        if dt not in (torch.float32, torch.float64) or not _plain_cpu(p) or not p.is_contiguous():
            return False
        g = grads[i]
        if not _plain_cpu(g) or g.dtype != dt or g.shape != p.shape:
            return False
        if any(len(st) and st[i] is not None and not _same_dense(st[i], p) for st in states):
            return False
        s = steps[i]
        if not _plain_cpu(s) or s.dim() != 0 or s.dtype != torch.float32:
            return False
        if values and not _buffer_supported(p, values[i], sums[i], keys[i]):
            return False
    return True


def _buffer_supported(p: Tensor, v: Tensor, total: Tensor, k: Tensor) -> bool:
    dt, vt = p.dtype, v.dtype
    if not (vt == dt or (dt == torch.float32 and vt == torch.bfloat16)):
        return False
    if not _plain_cpu(v) or not v.is_contiguous() or v.dim() != p.dim() + 1:
        return False
    if not (_plain_cpu(total) and total.is_contiguous() and _plain_cpu(k) and k.is_contiguous()):
        return False
    wide = torch.float64 if vt == torch.float64 else torch.float32
    return total.dtype == wide and k.dtype == (torch.float64 if dt == torch.float64 else torch.float32)
