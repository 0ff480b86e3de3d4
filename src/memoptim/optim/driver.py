"""The step protocol, owned here once: every optimizer class runs a base rule through it.

:class:`RuleOptimizer` steps a rule without memory; :class:`MemoryOptimizer` adds the critical
buffer: creating it, the priority keys, the buffer policy's draws, the authors' seeding step,
deferred offers of the native kernels, and the periodic resync of running sums.  A class names
its rule and memory mode (:attr:`RuleOptimizer.rule`, :attr:`RuleOptimizer.memory_mode`); the driver
composes the kernel (:func:`memoptim.optim.memory.kernel`), picks its execution path
(:func:`memoptim.optim.backends.select_kernel`) and calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from memoptim.buffer import PENDING_KEYS, RESYNC_INTERVAL, STATE_KEYS, CriticalBuffer, offer
from memoptim.optim import _validation as V
from memoptim.optim import native
from memoptim.optim.backends import is_native, select_kernel
from memoptim.optim.base import STATE_DICT_TAG, BaseOptimizer, ParamsT, run_closure
from memoptim.optim.keys import grad_norms, keys_dtype, keys_from_norms, local_keys, priority_keys
from memoptim.optim.memory import CRITICAL_MOMENTA, NONE, kernel
from memoptim.optim.placement import as_complex_like, as_real, by_device_and_dtype, place
from memoptim.optim.rules import Rule
from memoptim.optim.rules.ops import on_device, prepare_grads
from memoptim.policy import draws

#: The memory options of every memory-augmented optimizer and their defaults (this project's
#: semantics); the alternatives reproduce the authors' code or serve as ablations.
MEMORY_OPTIONS: dict[str, Any] = {
    "aggregation": "capacity",  # or "filled": divide the buffer sum by the filled slots
    "first_step": "step",  # or "seed": step 1 of critical momenta only seeds the buffer with g_1
    "policy": "norm",  # or "random": a seeded draw replaces; "fifo": the oldest entry (keys decide nothing)
    "replace_prob": 1.0,  # random policy: probability that a full buffer takes the offer
    "policy_seed": 0,  # random policy: seed of the draws (see memoptim.policy)
}


#: Every keyword a memory-augmented optimizer accepts on top of its rule's, with its default.
MEMORY_DEFAULTS: dict[str, Any] = {"buffer_size": 5, "decay": 0.7, "priority": "group", "buffer_dtype": None,
                                   "memory": True, **MEMORY_OPTIONS}


class RuleOptimizer(BaseOptimizer):
    """An optimizer that runs one base rule (:mod:`memoptim.optim.rules`) under one memory mode."""

    rule: ClassVar[Rule]
    memory_mode: ClassVar[str] = NONE

    def __init__(self, params: ParamsT, defaults: dict[str, Any]):
        super().__init__(params, defaults)
        for group in self.param_groups:
            self._validate_group(group)
        # Decided once: groups with neither fused nor foreach set run the native kernel if it is
        # already built for this machine (building is explicit: memoptim build-kernels, or fused=True).
        self._native_default = native.is_built()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_native_default", native.is_built())

    def _rule_for(self, group: dict[str, Any]) -> Rule:
        return self.rule

    def _validate_group(self, group: dict[str, Any]) -> None:
        self._rule_for(group).validate(group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = run_closure(closure)
        self._step_groups()
        return loss

    def _step_groups(self) -> None:
        """The step without the closure: every group's tensors with a gradient, one kernel call
        per group.  The body ``torch.compile(fullgraph=True)`` traces whole: no host read, no
        data-dependent branch, the native kernels as custom operators."""
        for group in self.param_groups:
            rule = self._rule_for(group)
            started = self._started(group)  # before collect creates the counters of fresh tensors
            got = rule.collect(self, group)
            if not got.params:
                continue
            params, states = self._step_group(group, kernel(rule, self.memory_mode), got.params, got.grads,
                                              got.states, got.steps, rule.hyper(group), started)
            rule.store(self, params, states, group)

    def _load_checked(self, state_dict: dict[str, Any]) -> None:
        super()._load_checked(self._placed(state_dict))

    def _placed(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """``state_dict`` with every state tensor on its parameter's device, the step counters
        included, wherever it was written (:func:`memoptim.optim.placement.place`: a one-line
        error if one cannot be): the step then never copies them (see ``step_tensor``)."""
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        by_id = dict(zip(saved_ids, params))
        placed = dict(state_dict)
        placed["state"] = {pid: st if pid not in by_id else
                           {k: place(v, by_id[pid], f"parameter {pid} ({k!r})") for k, v in st.items()}
                           for pid, st in state_dict["state"].items()}
        return placed

    def _started(self, group: dict[str, Any]) -> frozenset[int]:
        """Ids of the step counters that exist before this step (used by the authors' seeding
        step; a host-side fact, so no counter is read)."""
        return frozenset()

    def _step_group(self, group: dict[str, Any], eager: Callable[..., Any], params: list[Tensor],
                    grads: list[Tensor], states: Sequence[list[Any]], steps: list[Tensor],
                    hyper: dict[str, Any], started: frozenset[int] = frozenset(),
                    ) -> tuple[list[Tensor], Sequence[list[Any]]]:
        """One group's step: complex tensors as their real views, and the protocol
        (:meth:`_step_tensors`) once per (device, dtype) bucket (:mod:`memoptim.optim.placement`).  Returns the
        ``params`` and ``states`` the kernel stepped, so the rule can store state it created."""
        complex_ = any(p.is_complex() for p in params)
        if complex_:
            rp, rg = [as_real(p) for p in params], [as_real(g) for g in grads]
            rs: Sequence[list[Any]] = [[as_real(x) for x in xs] for xs in states]
        else:
            rp, rg, rs = params, grads, states
        buckets = by_device_and_dtype(rp)
        if len(buckets) == 1:
            done, out = self._step_tensors(group, eager, rp, rg, rs, steps, hyper, started, owners=params)
        else:
            shared = self._shared_keys(group, rg, buckets)
            done, out = [], [[] for _ in states]
            for b, idx in enumerate(buckets):
                d, s = self._step_tensors(group, eager, _pick(rp, idx), _pick(rg, idx),
                                          [_pick(xs, idx) if len(xs) else xs for xs in rs], _pick(steps, idx),
                                          hyper, started, None if shared is None else shared[b],
                                          owners=_pick(params, idx))
                done += [idx[i] for i in d]
                for acc, xs in zip(out, s):
                    acc.extend(xs)
        stepped = [params[i] for i in done]
        if complex_:
            out = [[as_complex_like(x, p) for x, p in zip(xs, stepped)] if len(xs) else xs for xs in out]
        return stepped, out

    def _shared_keys(self, group: dict[str, Any], grads: list[Tensor],
                     buckets: list[list[int]]) -> list[Tensor] | None:
        """Keys a group spanning several buckets shares across them (none without a buffer)."""
        return None

    def _step_tensors(self, group: dict[str, Any], eager: Callable[..., Any], params: list[Tensor],
                      grads: list[Tensor], states: Sequence[list[Any]], steps: list[Tensor],
                      hyper: dict[str, Any], started: frozenset[int], shared_keys: Tensor | None = None,
                      owners: list[Tensor] | None = None) -> tuple[Sequence[int], Sequence[list[Any]]]:
        """The step of one device's tensors of a group (``owners``: the parameters whose state
        they are, when ``params`` are their real views): the indices stepped and their states."""
        run, foreach, lr = select_kernel(eager, group, (params, grads, *states), steps=steps,
                                         native_default=self._native_default)
        run(params, grads, *states, steps, lr=lr, foreach=foreach, **hyper)
        return range(len(params)), states


class MemoryOptimizer(RuleOptimizer):
    """Base class of the optimizers with a critical buffer.

    Every parameter group carries ``buffer_size`` (capacity :math:`C`), ``decay``
    (:math:`\\lambda`), ``priority`` (``"group"`` or ``"tensor"``), ``buffer_dtype``,
    ``memory`` (``True`` while the buffer is in use; see :meth:`disable_memory`) and the
    memory options of :data:`MEMORY_OPTIONS`.
    """

    #: Keywords of one class only (name -> default), accepted on top of the shared ones.
    _rule_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: ParamsT, defaults: dict[str, Any]):
        super().__init__(params, {"memory": True, **MEMORY_OPTIONS, **defaults})

    def _validate_group(self, group: dict[str, Any]) -> None:
        V.check_memory_group(group)
        super()._validate_group(group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # keys that older pickles may lack
            for name, value in {"foreach": None, "fused": None, "maximize": False, **MEMORY_DEFAULTS,
                                **self._rule_options}.items():
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

    def _buffers(self, group: dict[str, Any], params: list[Tensor],
                 like: list[Tensor] | None = None) -> list[CriticalBuffer] | None:
        """The buffers of ``params`` (created lazily, shaped as ``like``: the tensors the kernel
        steps, e.g. a complex parameter's real view), or ``None`` if the memory is off."""
        if not group["memory"]:
            self._free_buffers(group)
            return None
        capacity = group["buffer_size"]
        out = []
        for p, shaped in zip(params, params if like is None else like):
            state = self.state[p]
            if STATE_KEYS[0] not in state:
                CriticalBuffer.init_state(state, shaped, capacity, group["buffer_dtype"])
            buf = CriticalBuffer.from_state(state, settle=False)  # see _defer
            buf.aggregation, buf.policy = group["aggregation"], group["policy"]
            if buf.capacity != capacity:
                raise ValueError(
                    f"buffer_size of a param group changed from {buf.capacity} to {capacity}; "
                    "the capacity of an existing buffer cannot change"
                )
            out.append(buf)
        return out

    # ------------------------------------------------------------ the step protocol
    def _started(self, group: dict[str, Any]) -> frozenset[int]:
        if group["first_step"] != "seed":
            return frozenset()
        return frozenset(id(st["step"]) for p in group["params"] if "step" in (st := self.state.get(p, {})))

    def _shared_keys(self, group: dict[str, Any], grads: list[Tensor],
                     buckets: list[list[int]]) -> list[Tensor] | None:
        r"""The ``priority="group"`` keys of a group spanning several (device, dtype) buckets, one
        ``(n_b,)`` tensor per bucket: :math:`\sum_b \sum_{i \in b} \|g_i\|_2`, each bucket's
        partial sum computed where its gradients are, in the group's key dtype, then added in the
        order the buckets first appear, on every device (so all see the same key).  ``None``
        otherwise, and under ``ZeroRedundancyOptimizer``, whose keys already sum the whole group
        (:func:`memoptim.optim.keys.priority_keys`)."""
        if (not group["memory"] or group["priority"] != "group" or len(buckets) < 2
                or not local_keys(self, group)):
            return None
        dtype = keys_dtype(grads)
        partial = [grad_norms(_pick(grads, idx), True, dtype).sum() for idx in buckets]
        out = []
        for idx in buckets:
            device = grads[idx[0]].device
            total = partial[0].to(device)
            for x in partial[1:]:
                total = total + x.to(device)
            out.append(total.expand(len(idx)))
        return out

    def _step_tensors(self, group: dict[str, Any], eager: Callable[..., Any], params: list[Tensor],
                      grads: list[Tensor], states: Sequence[list[Any]], steps: list[Tensor],
                      hyper: dict[str, Any], started: frozenset[int], shared_keys: Tensor | None = None,
                      owners: list[Tensor] | None = None) -> tuple[Sequence[int], Sequence[list[Any]]]:
        """One device's tensors of a group.  Order: buffers, execution path, deferral, keys, the
        policy's draws, the authors' seeding step (``first_step="seed"``), the kernel, a deferred
        offer's decision, the periodic resync.  Returns the indices the kernel stepped (all but the
        seeded tensors) and their ``states``, so the rule can store state the kernel created.
        ``shared_keys``: the keys of a group spanning buckets (:meth:`_shared_keys`); ``owners``:
        the parameters whose state this is, when ``params`` are complex parameters' real views."""
        owners = params if owners is None else owners
        buffers = self._buffers(group, owners, params)
        seeding = self._seeding(group, eager, steps, started)
        run, foreach, lr = select_kernel(eager, group, (params, grads, *states), buffers, steps,
                                         self._native_default)
        local = not seeding and shared_keys is None
        pending = self._defer(eager, run, group, owners, buffers) if local else None
        if not local:
            self._settle(owners)
        keys = None
        if buffers is not None and pending is None:
            keys = shared_keys if shared_keys is not None else self._keys(group, grads, True, is_native(run))
            draws(group, buffers, steps)
        all_buffers, all_steps = buffers, steps
        done: Sequence[int] = range(len(params))
        if seeding:
            self._seed_buffers(group, hyper, _pick(params, seeding), _pick(grads, seeding),
                               _pick(steps, seeding), _pick(buffers, seeding), _pick(keys, seeding))
            rest = [i for i in range(len(params)) if i not in set(seeding)]
            done = rest
            params, grads, steps = _pick(params, rest), _pick(grads, rest), _pick(steps, rest)
            buffers, keys = _pick(buffers, rest), _pick(keys, rest)
            states = [_pick(xs, rest) if len(xs) else xs for xs in states]  # amsgrad off: an empty list
        if params:
            norms = run(params, grads, *states, steps, buffers, keys, lr=lr, foreach=foreach,
                        decay=group["decay"], **hyper, **({} if pending is None else {"pending": pending}))
            if pending is not None:
                native.offer_deferred(keys_from_norms(group, grads, norms), buffers, pending, group["decay"])
        self._maybe_resync(all_buffers, all_steps, run)
        return done, states

    def _seeding(self, group: dict[str, Any], eager: Callable[..., Any], steps: list[Tensor],
                 started: frozenset[int]) -> list[int]:
        """Indices of the tensors whose step 1 is the authors' seeding step (critical momenta
        with ``first_step="seed"`` only): those whose step counter this step created
        (:meth:`_started`), decided on the host without reading a counter."""
        if group["first_step"] != "seed" or eager.memory != CRITICAL_MOMENTA:
            return []
        return [i for i, s in enumerate(steps) if id(s) not in started]

    def _seed_buffers(self, group: dict[str, Any], hyper: dict[str, Any], params: list[Tensor],
                      grads: list[Tensor], steps: list[Tensor], buffers: list[CriticalBuffer] | None,
                      keys: Tensor | None) -> None:
        r"""The authors' step 1 of critical momenta: offer :math:`g_1` (after ``maximize`` and L2)
        to the buffer and count the step; :math:`\theta` moves only by decoupled weight decay and
        the momenta stay zero, so the first real step has :math:`t = 2`."""
        g = prepare_grads(params, grads, lr=float(group["lr"]), weight_decay=group["weight_decay"],
                          decoupled=self._rule_for(group).decoupled(hyper), maximize=group["maximize"],
                          foreach=False)
        for s in steps:
            s.add_(1.0)
        if buffers is not None:
            offer(buffers, keys, g, group["decay"])

    # ------------------------------------------------------------ deferred offers
    def _defer(self, eager: Callable[..., Any], run: Callable[..., Any], group: dict[str, Any],
               params: list[Tensor], buffers: list[CriticalBuffer] | None) -> list[Tensor] | None:
        """The pending-offer entries of ``params`` if this step defers its offer, else ``None``.

        The one place deferral is decided.  Deferred: the native kernel runs, it can defer this
        pair (:func:`memoptim.optim.native.defers`: critical momenta), the offered momentum
        outlives the step (:meth:`memoptim.optim.rules.Rule.momentum_state`), and the keys
        depend on this optimizer's gradients only (also under DDP; not group keys under ZeRO).
        Then the kernel's single pass stores the previous step's accepted momentum and returns
        the gradient norms, from which this step's offers are decided -- one pass over the
        gradients fewer, and no separate write of the slot.  Any other path first completes an
        offer left pending by an earlier native step.
        """
        entry = self._rule_for(group).momentum_state(group)
        if (buffers is not None and is_native(run) and native.defers(eager) and entry is not None
                and local_keys(self, group)):
            return [CriticalBuffer.pending_state(self.state[p], entry) for p in params]
        self._settle(params)
        return None

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
              native_norms: bool = False) -> Tensor:
        """Priority keys, one per tensor (:func:`memoptim.optim.keys.priority_keys`);
        ``native_norms``: the norms come from the native kernel's single read of each gradient."""
        return priority_keys(self, group, grads, foreach, native.grad_norms if native_norms else None)

    @staticmethod
    def _maybe_resync(buffers: list[CriticalBuffer] | None, steps: list[Tensor],
                      run: Callable[..., None] | None = None) -> None:
        """Recompute running sums exactly every :data:`RESYNC_INTERVAL` steps (bounded drift).

        Step counters on the CPU (eager) are read there, which waits for nothing; elsewhere, and
        while ``torch.compile`` traces, the choice is made on the device
        (:meth:`memoptim.buffer.CriticalBuffer.resync_where`: the same result, bit for bit, at
        the cost of summing the values every step).  The native kernels resync themselves
        (``run``: the kernel that ran the step)."""
        if buffers is None or (run is not None and is_native(run)):
            return
        if not on_device(steps):
            for b, s in zip(buffers, steps):
                if int(s) % RESYNC_INTERVAL == 0:
                    b.resync()
            return
        for b, s in zip(buffers, steps):
            b.resync_where(torch.remainder(s, RESYNC_INTERVAL) == 0)

    # ------------------------------------------------------------ checkpoints
    def _check_loadable(self, state_dict: dict[str, Any]) -> None:
        self._check_buffers_saved(state_dict)  # first: names the fix for a torch.optim state dict
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

    def _check_buffers_saved(self, state_dict: dict[str, Any]) -> None:
        """``ValueError`` if a parameter of a memory group has state (it was stepped) but no
        critical buffer, as in a ``torch.optim.Adam`` state dict: loading it would keep the
        moments and silently restart every buffer empty.  A fresh optimizer's state dict (no
        state) and groups with ``memory=False`` load as before."""
        tag = state_dict.get(STATE_DICT_TAG)
        if tag is not None and tag.get("optimizer") != self._tag()["optimizer"]:
            return  # written by another memoptim optimizer: the base check says so
        state = state_dict.get("state", {})
        for i, (saved, group) in enumerate(zip(state_dict.get("param_groups", []), self.param_groups)):
            if not (saved.get("memory", True) and group["memory"]):
                continue
            if any(state.get(pid) and STATE_KEYS[1] not in state[pid] for pid in saved["params"]):
                name = type(self).__name__
                raise ValueError(
                    f"param group {i} of the state dict has optimizer state but no critical buffers "
                    f"(e.g. a torch.optim.Adam state dict); {name} cannot resume from it. Load it "
                    f"into the optimizer that wrote it, or start {name} fresh (no load_state_dict)"
                )

    def _optional_keys(self) -> set[str]:
        return super()._optional_keys() | {"memory", "buffer_dtype", *MEMORY_OPTIONS, *self._rule_options}

    def _load_checked(self, state_dict: dict[str, Any]) -> None:
        # torch casts every state tensor but "step" to the parameter's dtype on load; the buffer
        # keeps its own dtypes (float32-or-wider keys and sums, buffer_dtype values, int64 counts
        # and pending slots), so it is set aside and restored after the generic load.
        # A deferred offer is completed at once (settle_state, the native kernels' arithmetic),
        # so no pending entry outlives the load.
        own = (*STATE_KEYS, *PENDING_KEYS)
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        state_dict = self._placed(state_dict)
        state = state_dict["state"]
        kept = {pid: {k: st[k] for k in own if k in st} for pid, st in state.items()}
        stripped = dict(state_dict)
        stripped["state"] = {pid: {k: v for k, v in st.items() if k not in own} for pid, st in state.items()}
        super()._load_checked(stripped)
        for pid, p in zip(saved_ids, params):
            for k, v in kept.get(pid, {}).items():
                self.state[p][k] = v.to(device=p.device, copy=True) if isinstance(v, Tensor) else v
            if PENDING_KEYS[0] in self.state[p]:
                CriticalBuffer.settle_state(self.state[p])


def _pick(xs: Any, idx: list[int]) -> Any:
    """The entries ``idx`` of a per-tensor list or of a ``(N,)`` key tensor (``None`` stays ``None``)."""
    if xs is None:
        return None
    return xs[idx] if isinstance(xs, Tensor) else [xs[i] for i in idx]
