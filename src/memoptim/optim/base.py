"""Shared machinery of the optimizer classes: validation, lazy state, checkpoints.

The optimizer classes are thin: they validate hyperparameters, collect the
tensors of a parameter group, and hand them to the functional update rules in
:mod:`memoptim.optim.functional`.  This module holds what all of them share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from memoptim.buffer import (
    PENDING_KEYS,
    RESYNC_INTERVAL,
    STATE_KEYS,
    CriticalBuffer,
    offer,
    replacement_draw,
)
from memoptim.optim import _validation as V

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]

#: The memory options of every memory-augmented optimizer and their defaults (this project's
#: semantics); the alternatives reproduce the authors' code or serve as ablations.
MEMORY_OPTIONS: dict[str, Any] = {
    "aggregation": "capacity",  # or "filled": divide the buffer sum by the filled slots
    "first_step": "step",  # or "seed": step 1 of critical momenta only seeds the buffer with g_1
    "policy": "norm",  # or "random": a seeded draw replaces, the key no longer decides
    "replace_prob": 1.0,  # random policy: probability that a full buffer takes the offer
    "policy_seed": 0,  # random policy: seed of the draws (see memoptim.buffer.replacement_draw)
}

#: Group keys that older state dicts may lack (filled from the defaults on load).
_OPTIONAL_KEYS = frozenset({"memory", "fused", "foreach", "buffer_dtype", *MEMORY_OPTIONS})
#: Keys that ``torch.optim.Optimizer`` itself adds to ``defaults`` (its ``__setstate__``, run by
#: ``copy.deepcopy`` and by wrappers such as Accelerate's, sets ``differentiable``): they are not
#: ours, and a state dict need not carry them.
_TORCH_MANAGED_KEYS = frozenset({"differentiable", "capturable"})

#: Key under which :meth:`BaseOptimizer.state_dict` records which optimizer wrote it.
STATE_DICT_TAG = "memoptim"


class BaseOptimizer(Optimizer):
    """Base class of memoptim's optimizers (not meant to be used directly).

    Adds to :class:`torch.optim.Optimizer`: per-group validation also in
    :meth:`add_param_group`, a tag in :meth:`state_dict` naming the optimizer
    (loading a state dict written by another optimizer raises ``ValueError``),
    and a clear error for sparse gradients.
    """

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the argument if a hyperparameter is invalid."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._validate_group(self.param_groups[-1])

    def _check_grad(self, p: Tensor) -> None:
        if p.grad.is_sparse:
            raise RuntimeError(
                f"{type(self).__name__} does not support sparse gradients; "
                "use a dense embedding (sparse=False)"
            )

    # ------------------------------------------------------------ checkpoints
    def _tag(self) -> dict[str, Any]:
        return {"optimizer": type(self).__name__, "version": 1}

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd[STATE_DICT_TAG] = self._tag()
        return sd

    def _check_loadable(self, state_dict: dict[str, Any]) -> None:
        tag = state_dict.get(STATE_DICT_TAG)
        if tag is not None and tag.get("optimizer") != self._tag()["optimizer"]:
            raise ValueError(
                f"this state dict was written by {tag.get('optimizer')}, "
                f"it cannot be loaded into {type(self).__name__}"
            )
        saved_groups = state_dict.get("param_groups", [])
        for i, saved in enumerate(saved_groups):
            optional = _OPTIONAL_KEYS | _TORCH_MANAGED_KEYS | set(getattr(self, "_rule_options", ()))
            missing = sorted(k for k in self.defaults if k not in saved and k not in optional)
            if missing:
                raise ValueError(
                    f"param group {i} of the state dict lacks {', '.join(missing)}: it was not "
                    f"written by {type(self).__name__}"
                )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._check_loadable(state_dict)
        self._load_checked({k: v for k, v in state_dict.items() if k != STATE_DICT_TAG})

    def _load_checked(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict that :meth:`_check_loadable` has accepted (tag removed)."""
        Optimizer.load_state_dict(self, state_dict)


class MemoryOptimizer(BaseOptimizer):
    """Base class of the optimizers with a critical buffer.

    Every parameter group carries ``buffer_size`` (capacity :math:`C`), ``decay``
    (:math:`\\lambda`), ``priority`` (``"group"`` or ``"tensor"``), ``buffer_dtype``
    and ``memory`` (``True`` while the buffer is in use; see
    :meth:`disable_memory`).
    """

    #: The state entry holding the momentum a critical-momenta rule offers (``None``: the rule
    #: offers something not kept in the state, so its offers cannot be deferred).
    _offered_state: str | None = None

    def __init__(self, params: ParamsT, defaults: dict[str, Any]):
        defaults = {"memory": True, **MEMORY_OPTIONS, **defaults}
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._validate_group(group)

    def _validate_group(self, group: dict[str, Any]) -> None:
        V.check_memory_group(group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("memory", True)
            group.setdefault("buffer_dtype", None)
            group.setdefault("foreach", None)
            group.setdefault("fused", None)
            group.setdefault("maximize", False)
            for name, value in MEMORY_OPTIONS.items():
                group.setdefault(name, value)

    # ------------------------------------------------------------ memory switch
    def disable_memory(self) -> None:
        """Switch the critical buffer off for good, in every group, and free it.

        From the next step on the optimizer computes its base rule as if its
        buffer were empty forever (:math:`\\operatorname{aggr}(x, B) = x`); all
        other state (moments, step counts) is kept.  To do this for one group
        only, set ``group["memory"] = False``: the buffer is freed at that
        group's next step.
        """
        for group in self.param_groups:
            group["memory"] = False
            self._free_buffers(group)

    def _free_buffers(self, group: dict[str, Any]) -> None:
        for p in group["params"]:
            if p in self.state:
                CriticalBuffer.clear_state(self.state[p])

    # ------------------------------------------------------------ step helpers
    def _buffers(
        self, group: dict[str, Any], params: list[Tensor], anchors: list[Tensor]
    ) -> list[CriticalBuffer] | None:
        """The buffers of ``params`` (created lazily, shaped like ``anchors``), or None if off."""
        if not group["memory"]:
            self._free_buffers(group)
            return None
        capacity = group["buffer_size"]
        out = []
        for p, like in zip(params, anchors):
            state = self.state[p]
            if STATE_KEYS[0] not in state:
                CriticalBuffer.init_state(state, like, capacity, group["buffer_dtype"])
            buf = CriticalBuffer.from_state(state, settle=False)  # see _defer
            buf.aggregation = group["aggregation"]
            if buf.capacity != capacity:
                raise ValueError(
                    f"buffer_size of a param group changed from {buf.capacity} to {capacity}; "
                    "the capacity of an existing buffer cannot change"
                )
            out.append(buf)
        return out

    # ------------------------------------------------------------ the step protocol
    def _step_group(self, group: dict[str, Any], rule: Callable[..., Any], params: list[Tensor],
                    grads: list[Tensor], states: Sequence[list[Any]], steps: list[Tensor],
                    hyper: dict[str, Any]) -> tuple[list[Tensor], Sequence[list[Any]]]:
        """One group's step, the protocol shared by every memory rule.

        ``rule(params, grads, *states, steps, buffers, keys, lr=, foreach=, **hyper)`` is a
        functional kernel of :mod:`memoptim.optim.functional`; ``states`` are its per-tensor
        state lists.  Order: buffers, execution path, deferral, keys, the random policy's draws,
        the authors' seeding step (``first_step="seed"``), the kernel, a deferred offer's
        decision, the periodic resync.  Returns the ``params`` and ``states`` the kernel stepped
        (all but the seeded tensors), so the caller can store state the kernel created.
        """
        buffers = self._buffers(group, params, params)
        seeding = self._seeding(group, steps)
        kernel, foreach, lr = select_kernel(rule, group, (params, grads, *states), buffers, steps)
        pending = None
        if seeding:
            self._settle(params)
        else:
            pending = self._defer(kernel, group, params, buffers)
        keys = None
        if buffers is not None and pending is None:
            keys = self._keys(group, grads, True, is_native(kernel))
        if buffers is not None and group["policy"] == "random":
            for b, s in zip(buffers, steps):
                b.draw = replacement_draw(group["policy_seed"], int(s) + 1, b.capacity, group["replace_prob"])
        all_buffers, all_steps = buffers, steps
        if seeding:
            self._seed_buffers(group, hyper, _pick(params, seeding), _pick(grads, seeding),
                               _pick(steps, seeding), _pick(buffers, seeding), _pick(keys, seeding))
            rest = [i for i in range(len(params)) if i not in set(seeding)]
            params, grads, steps = _pick(params, rest), _pick(grads, rest), _pick(steps, rest)
            buffers, keys = _pick(buffers, rest), _pick(keys, rest)
            states = [_pick(xs, rest) if len(xs) else xs for xs in states]  # amsgrad off: an empty list
        if params:
            norms = kernel(params, grads, *states, steps, buffers, keys, lr=lr, foreach=foreach,
                           **hyper, **({} if pending is None else {"pending": pending}))
            if pending is not None:
                self._offer_deferred(group, grads, buffers, pending, norms)
        self._maybe_resync(all_buffers, all_steps, kernel)
        return params, states

    def _seeding(self, group: dict[str, Any], steps: list[Tensor]) -> list[int]:
        """Indices of the tensors whose step 1 is the authors' seeding step (none by default)."""
        if group["first_step"] != "seed" or self._offered_state is None:  # critical momenta only
            return []
        return [i for i, s in enumerate(steps) if int(s) == 0]

    @staticmethod
    def _seed_buffers(group: dict[str, Any], hyper: dict[str, Any], params: list[Tensor],
                      grads: list[Tensor], steps: list[Tensor], buffers: list[CriticalBuffer] | None,
                      keys: Tensor | None) -> None:
        r"""The authors' step 1 of critical momenta: offer :math:`g_1` (after ``maximize`` and L2)
        to the buffer and count the step; :math:`\theta` moves only by decoupled weight decay and
        the momenta stay zero, so the first real step has :math:`t = 2`."""
        from memoptim.optim.functional import prepare_grads

        g = prepare_grads(params, grads, lr=float(group["lr"]), weight_decay=group["weight_decay"],
                           decoupled=bool(hyper.get("decoupled_weight_decay", False)),
                           maximize=group["maximize"], foreach=False)
        for s in steps:
            s.add_(1.0)
        if buffers is not None:
            offer(buffers, keys, g, group["decay"])

    # ------------------------------------------------------------ deferred offers
    def _can_defer(self, group: dict[str, Any]) -> bool:
        """Whether the offered value of ``group`` outlives the step (overridden by SGD)."""
        return self._offered_state is not None

    def _defer(self, kernel: Callable[..., None], group: dict[str, Any], params: list[Tensor],
               buffers: list[CriticalBuffer] | None) -> list[Tensor] | None:
        """The pending-offer entries of ``params`` if this step defers its offer, else ``None``.

        Deferred (native kernel, critical momenta, keys that depend on this optimizer's
        gradients only -- also under DDP, not for group keys under ZeRO): the kernel's single
        pass stores the previous step's accepted momentum and returns the gradient norms, and
        :meth:`_offer_deferred` decides this step's offers -- one pass over the gradients
        fewer, and no separate write of the slot.  Any other path first completes an offer
        left pending by an earlier native step.
        """
        from memoptim.optim import native

        if (buffers is not None and is_native(kernel) and kernel.__name__ in native.DEFERRABLE
                and self._can_defer(group) and self._local_keys(group)):
            return [CriticalBuffer.pending_state(self.state[p], self._offered_state) for p in params]
        self._settle(params)
        return None

    def _local_keys(self, group: dict[str, Any]) -> bool:
        if not _distributed():
            return True
        from memoptim.distributed import local_keys

        return local_keys(self, group)

    def _offer_deferred(self, group: dict[str, Any], grads: list[Tensor], buffers: list[CriticalBuffer],
                        pending: list[Tensor], norms: Tensor) -> None:
        """This step's offers, from the gradient norms the deferring kernel returned."""
        from memoptim.optim import native

        native.offer_deferred(self._keys_from_norms(group, grads, norms), buffers, pending, group["decay"])

    def _settle(self, params: Iterable[Tensor]) -> None:
        """Complete the pending offers of ``params`` (cheap when there are none)."""
        for p in params:
            state = self.state.get(p)
            if state is not None and PENDING_KEYS[0] in state:
                CriticalBuffer.settle_state(state)

    def state_dict(self) -> dict[str, Any]:
        self._settle(p for g in self.param_groups for p in g["params"])
        return super().state_dict()

    def _keys(self, group: dict[str, Any], grads: list[Tensor], foreach: bool,
              native: bool = False) -> Tensor:
        """Priority keys, one per tensor: ``||g||_2`` or, in group mode, their sum over the group.

        Computed from the raw gradients (before weight decay or ``maximize``).  When a
        process group is initialised the keys come from
        :func:`memoptim.distributed.priority_keys`: norms of the *full* gradients of
        sharded (FSDP2/DTensor) parameters, group sums over the whole group under
        ``ZeroRedundancyOptimizer``; identical on every rank.  ``native``: the norms come
        from the native kernel's single read of each gradient (float64 accumulation).
        """
        if _distributed():
            from memoptim.distributed import priority_keys

            return priority_keys(self, group, grads, foreach)
        if native:
            from memoptim.optim.native import grad_norms

            return self._keys_from_norms(group, grads, grad_norms(grads))
        if foreach:
            norms = torch._foreach_norm(grads)
        else:
            norms = [torch.linalg.vector_norm(g) for g in grads]
        device, dtype = grads[0].device, _key_dtype(grads)
        stacked = torch.stack([n.to(device=device, dtype=dtype) for n in norms])
        return self._keys_from_norms(group, grads, stacked)

    @staticmethod
    def _keys_from_norms(group: dict[str, Any], grads: list[Tensor], norms: Tensor) -> Tensor:
        """The keys from the ``(N,)`` gradient norms: float32, or float64 if a gradient is."""
        norms = norms.to(_key_dtype(grads))
        if group["priority"] == "group":
            return norms.sum().expand(len(grads))
        return norms

    @staticmethod
    def _maybe_resync(buffers: list[CriticalBuffer] | None, steps: list[Tensor],
                      kernel: Callable[..., None] | None = None) -> None:
        """Recompute running sums exactly every :data:`RESYNC_INTERVAL` steps (bounded drift).

        The native kernels do this themselves (``kernel``: the one that ran the step)."""
        if buffers is None or (kernel is not None and is_native(kernel)):
            return
        for b, s in zip(buffers, steps):
            if int(s) % RESYNC_INTERVAL == 0:
                b.resync()


    # ------------------------------------------------------------ checkpoints
    def _check_loadable(self, state_dict: dict[str, Any]) -> None:
        super()._check_loadable(state_dict)
        for i, (saved, group) in enumerate(zip(state_dict["param_groups"], self.param_groups)):
            if saved["buffer_size"] != group["buffer_size"]:
                raise ValueError(
                    f"param group {i}: the state dict has buffer_size={saved['buffer_size']}, "
                    f"this optimizer buffer_size={group['buffer_size']}; refusing to mix them"
                )
            for pid in saved["params"]:
                values = state_dict["state"].get(pid, {}).get("critical_values")
                if values is not None and values.shape[0] != saved["buffer_size"]:
                    raise ValueError(
                        f"param group {i}: a stored buffer has {values.shape[0]} slots, "
                        f"buffer_size says {saved['buffer_size']}"
                    )

    def _load_checked(self, state_dict: dict[str, Any]) -> None:
        # torch casts floating state to the parameter's dtype on load; the buffer keeps
        # its own dtypes (float32-or-wider keys and sums, buffer_dtype values, int64
        # counts), so it is set aside and restored after the generic load.
        state = state_dict["state"]
        kept = {pid: {k: st[k] for k in STATE_KEYS if k in st} for pid, st in state.items()}
        stripped = dict(state_dict)
        stripped["state"] = {
            pid: {k: v for k, v in st.items() if k not in STATE_KEYS} for pid, st in state.items()
        }
        super()._load_checked(stripped)
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        for pid, p in zip(saved_ids, params):
            for k, v in kept.get(pid, {}).items():
                self.state[p][k] = v.to(device=p.device, copy=True)


def _pick(xs: Any, idx: list[int]) -> Any:
    """The entries ``idx`` of a per-tensor list or of a ``(N,)`` key tensor (``None`` stays ``None``)."""
    if xs is None:
        return None
    return xs[idx] if isinstance(xs, Tensor) else [xs[i] for i in idx]


def _key_dtype(grads: list[Tensor]) -> torch.dtype:
    return torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32


def _distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised (cheap check)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def select_kernel(
    rule: Callable[..., None],
    group: dict[str, Any],
    tensors: Sequence[Sequence[Tensor | None]] = (),
    buffers: Sequence[CriticalBuffer] | None = None,
    steps: Sequence[Tensor] = (),
) -> tuple[Callable[..., None], bool, float | Tensor]:
    """The execution path of ``rule`` for ``group``: ``(kernel, foreach, lr)``.

    ``fused=True`` selects, for the rules that have a native kernel and the default memory options
    (else the multi-tensor path), in this order: the native CPU kernel of
    :mod:`memoptim.optim.native` when it handles ``tensors`` (``params, grads, *state``),
    ``buffers`` and ``steps`` (plain CPU tensors: also under DDP or ZeRO, not for FSDP2's
    DTensors) and is built; else the ``torch.compile``-d per-tensor rule, with the learning
    rate passed as a tensor so schedulers do not trigger recompilation.
    """
    if group.get("fused"):
        from memoptim.optim import native

        native_kernel = getattr(native, rule.__name__, None)
        if native_kernel is None or (buffers is not None and not _fusable_memory(group)):
            # the fused paths implement the paper's rules with the default memory options only
            return rule, True, float(group["lr"])
        if tensors and native.supports(*tensors, buffers=buffers, steps=steps):
            return native_kernel, False, float(group["lr"])
        from memoptim.optim.functional import compiled

        return compiled(rule), False, torch.tensor(float(group["lr"]), dtype=torch.float64)
    foreach = True if group["foreach"] is None else bool(group["foreach"])
    return rule, foreach, float(group["lr"])


def _fusable_memory(group: dict[str, Any]) -> bool:
    """Whether the fused paths (native, compiled) implement this group's memory options."""
    return group.get("aggregation", "capacity") == "capacity" and group.get("policy", "norm") == "norm"


def is_native(kernel: Callable[..., None]) -> bool:
    """Whether ``kernel`` (from :func:`select_kernel`) is a native fused kernel."""
    return getattr(kernel, "__module__", "") == "memoptim.optim.native"


def check_fused_foreach(group: dict[str, Any]) -> None:
    if group.get("fused") and group.get("foreach"):
        raise ValueError("Invalid fused/foreach: fused=True and foreach=True cannot both be set")


def step_tensor(state: dict[str, Any]) -> Tensor:
    """A parameter's step counter, created at 0 on first use (0-d float32 on the CPU, as torch)."""
    if "step" not in state:
        state["step"] = torch.zeros((), dtype=torch.float32)
    return state["step"]


def run_closure(closure: Callable[[], Any] | None) -> Any:
    """Evaluate ``closure`` with gradients enabled (``torch.optim`` convention)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


__all__ = [
    "BaseOptimizer",
    "MemoryOptimizer",
    "ParamsT",
    "check_fused_foreach",
    "is_native",
    "run_closure",
    "select_kernel",
    "step_tensor",
]
