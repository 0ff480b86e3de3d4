r"""Slow, obviously-correct reference implementations, written straight from the rules of ``docs/semantics.md``.

Source: the project's semantics document ``docs/semantics.md`` (the normative update rules
as this project implements them) and the paper's equations (critical momenta, TMLR 2024:
eqs. 3-8 and 10, Algorithm 1); Lion from Chen et al. 2023, "Symbolic Discovery of
Optimization Algorithms" (with decoupled weight decay).  This module deliberately does
**not** import :mod:`memoptim`: it is the independent yardstick the equivalence tests hold
the library against.

Design rules (chosen for auditability, not speed):

* every tensor is float64 and handled one at a time in a plain Python loop;
* the critical buffer is a Python list of ``[key, value_copy]`` slots, keys are Python
  floats, and the aggregate is recomputed by explicitly summing the slots every step (no
  running sums, no clever indexing);
* parameters are owned by the reference (``ref.params[group][tensor]``) and updated
  functionally; gradients are passed in explicitly (``None`` means "no gradient": the
  tensor is skipped, gets no state and is not counted in its group's priority key).

Rules implemented (from ``docs/semantics.md``, quoted loosely):

* priority ``"group"``: one key per group and step, the sum over the group's tensors with
  a gradient of each ``||g||_2``; ``"tensor"``: each tensor's own ``||g||_2``;
* the key comes from the raw gradient, before ``maximize`` and weight decay;
* ``aggregation="capacity"`` (default): ``aggr(x, B) = x + sum(B) / C`` (capacity ``C``);
  ``aggregation="filled"`` (the authors' code): ``aggr(x, B) = x + sum(B) / n`` with ``n``
  the number of filled slots; either way the empty buffer gives ``aggr(x, B) = x``;
* per step: aggregate with the old buffer, then offer ``(key, copy of value)``; a
  non-finite key is never inserted; while a slot is free the value goes into the first
  free slot; when the buffer is full, ``policy="norm"`` (default) replaces the first slot
  holding the minimum key if and only if ``key > min(keys)`` (ties do not replace), and
  ``policy="random"`` replaces slot ``j`` with probability ``replace_prob``, ``(u, j)``
  drawn from a generator seeded with ``policy_seed * 1_000_003 + t`` (:func:`random_draw`),
  and ``policy="fifo"`` replaces the entry stored longest ago (every finite key is accepted);
  then multiply every stored key by ``decay`` (also a key inserted this step);
* ``first_step="seed"`` (the authors' critical-momenta code; AdamCM, SGDCM and LionCM
  only, a no-op for the critical-gradient rules): a tensor's first step only counts the
  step, applies the decoupled weight decay of AdamCM / LionCM, and offers the (maximize'd,
  L2-decayed) gradient to the buffer; the moments / the momentum buffer are not touched;
* AdamCM ``second_moment="aggregate"`` (default, ``v`` tracks ``aggr(m, B)^2``) or
  ``"gradient"`` (``v`` tracks ``g^2`` as in Adam);
* Lion: the step direction is the sign (``sign(0) = 0``) of the interpolation
  ``c = b1 m + (1 - b1) g``, ``theta <- theta - lr (sign(c) + wd theta)`` (decoupled weight
  decay), then ``m = b2 m + (1 - b2) g``; ``lr >= 0``, ``wd >= 0`` and both betas in
  ``[0, 1)`` are enforced;
* LionCG: ``g`` replaced by ``aggr(g, B)`` in both ``c`` and ``m``, then offer ``g``;
  LionCM: the buffer holds ``c`` (what ``m_t`` is for AdamCM), the step is
  ``sign(aggr(c, B))``, ``m`` tracks the plain ``g``, then offer ``c``;
* memory switched off (``memory=False``, ``group["memory"] = False`` or
  :meth:`disable_memory`): the buffer is dropped and behaves as empty forever.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = [
    "AGGREGATIONS",
    "FIRST_STEPS",
    "POLICIES",
    "REFERENCES",
    "SECOND_MOMENTS",
    "RefAdaMomentum",
    "RefAdamCG",
    "RefAdamCM",
    "RefBuffer",
    "RefLion",
    "RefLionCG",
    "RefLionCM",
    "RefSAM",
    "RefSGDCG",
    "RefSGDCM",
    "flat_params",
    "grad_stream",
    "make_groups",
    "norm2",
    "random_draw",
]

DTYPE = torch.float64
Grads = Sequence[Sequence[Tensor | None]]

# Keywords the optimizers accept that do not change the mathematics.
_IGNORED = ("foreach", "buffer_dtype", "fused")


def norm2(x: Tensor) -> float:
    """``||x||_2`` as a Python float, computed the obvious way."""
    x = x.to(DTYPE)
    return math.sqrt(float((x * x).sum()))


# --------------------------------------------------------------------------- critical buffer
AGGREGATIONS = ("capacity", "filled")
POLICIES = ("norm", "random", "fifo")
FIRST_STEPS = ("step", "seed")
SECOND_MOMENTS = ("aggregate", "gradient")


def random_draw(policy_seed: int, step: int, capacity: int) -> tuple[float, int]:
    """The ``policy="random"`` draw of a full buffer at a tensor's (1-based, already
    incremented) step ``step``: a fresh CPU generator seeded ``policy_seed * 1_000_003 +
    step``, then first ``u ~ U[0, 1)`` (float64), then the slot ``j ~ U{0, ..., C - 1}``."""
    gen = torch.Generator().manual_seed(policy_seed * 1_000_003 + step)
    u = torch.rand((), generator=gen, dtype=torch.float64).item()
    j = int(torch.randint(0, capacity, (), generator=gen))
    return u, j


class RefBuffer:
    """The critical buffer of one tensor: a list of ``[key, value]`` slots in slot order."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.slots: list[list[Any]] = []  # each slot: [key (float), value (Tensor copy)]
        self.stored_at: list[int] = []  # per slot: the number of the offer it holds (its age)
        self.offers = 0  # finite offers so far
        self.replacements = 0

    @property
    def keys(self) -> list[float]:
        return [k for k, _ in self.slots]

    @property
    def values(self) -> list[Tensor]:
        return [v for _, v in self.slots]

    def total(self, like: Tensor) -> Tensor:
        total = torch.zeros_like(like, dtype=DTYPE)
        for _, value in self.slots:
            total = total + value
        return total

    def aggregate(self, x: Tensor, aggregation: str = "capacity") -> Tensor:
        """Paper eq. 6: ``x + (1/C) * sum(B)`` (``"capacity"``) or, as in the authors' code,
        ``x + (1/n) * sum(B)`` with ``n`` filled slots (``"filled"``); empty buffer: ``x``."""
        if not self.slots:
            return x
        if aggregation == "capacity":
            divisor = self.capacity
        elif aggregation == "filled":
            divisor = len(self.slots)
        else:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        return x + self.total(x) / divisor

    def offer(
        self,
        key: float,
        value: Tensor,
        decay: float,
        *,
        policy: str = "norm",
        replace_prob: float = 1.0,
        policy_seed: int = 0,
        step: int | None = None,
    ) -> None:
        """Algorithm 1: insert while a slot is free; when full, replace-if-larger
        (``"norm"``), a random slot with probability ``replace_prob`` (``"random"``) or the
        slot whose entry was stored longest ago (``"fifo"``); then decay every key."""
        if math.isfinite(key):
            self.offers += 1
            if len(self.slots) < self.capacity:
                self.slots.append([key, value.detach().clone()])
                self.stored_at.append(self.offers)
            elif policy == "norm":
                smallest = min(self.keys)
                if key > smallest:
                    index = self.keys.index(smallest)  # the first slot holding the minimum
                    self.slots[index] = [key, value.detach().clone()]
                    self.stored_at[index] = self.offers
                    self.replacements += 1
            elif policy == "random":
                assert step is not None, "the random policy draws from the tensor's step"
                u, index = random_draw(policy_seed, step, self.capacity)
                if u < replace_prob:
                    self.slots[index] = [key, value.detach().clone()]
                    self.stored_at[index] = self.offers
                    self.replacements += 1
            elif policy == "fifo":
                index = self.stored_at.index(min(self.stored_at))  # the oldest entry
                self.slots[index] = [key, value.detach().clone()]
                self.stored_at[index] = self.offers
                self.replacements += 1
            else:
                raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        for slot in self.slots:
            slot[0] = slot[0] * decay


# --------------------------------------------------------------------------- base class
class _Reference:
    """Owns float64 copies of the parameters, per-group hyperparameters and per-tensor state."""

    defaults: ClassVar[dict[str, Any]] = {}
    uses_memory: ClassVar[bool] = False

    def __init__(self, groups: Sequence[dict[str, Any]] | Sequence[Tensor], **hyper: Any):
        for name in _IGNORED:
            hyper.pop(name, None)
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown hyperparameters {sorted(unknown)}")
        if groups and isinstance(groups[0], Tensor):
            groups = [{"params": list(groups)}]
        self.groups: list[dict[str, Any]] = []
        self.params: list[list[Tensor]] = []
        for group in groups:
            settings = dict(self.defaults)
            settings.update(hyper)
            for name, value in group.items():
                if name == "params" or name in _IGNORED:
                    continue
                if name not in self.defaults:
                    raise TypeError(f"unknown group hyperparameter {name!r}")
                settings[name] = value
            if self.uses_memory:
                settings.setdefault("memory", True)
            _validate(settings)
            self.groups.append(settings)
            self.params.append([p.detach().to(DTYPE).clone() for p in group["params"]])
        self.state: dict[tuple[int, int], dict[str, Any]] = {}

    # -- helpers -------------------------------------------------------------------------
    def disable_memory(self) -> None:
        """Switch the memory off in every group: the buffer is empty from now on."""
        for group in self.groups:
            group["memory"] = False
        for state in self.state.values():
            state.pop("buffer", None)

    def buffer(self, gi: int, pi: int) -> RefBuffer | None:
        return self.state.get((gi, pi), {}).get("buffer")

    def _keys(self, group: dict[str, Any], grads: Sequence[Tensor | None]) -> list[float | None]:
        """Priority key of every tensor of the group (``None`` where there is no gradient)."""
        norms = [None if g is None else norm2(g) for g in grads]
        if group["priority"] == "tensor":
            return norms
        if group["priority"] != "group":
            raise ValueError(group["priority"])
        group_key = 0.0
        for n in norms:
            if n is not None:
                group_key = group_key + n
        return [None if n is None else group_key for n in norms]

    @staticmethod
    def _direction(group: dict[str, Any], p: Tensor, g: Tensor, coupled: bool) -> Tensor:
        """``maximize`` then coupled (L2) weight decay, as ``torch.optim`` does."""
        if group.get("maximize", False):
            g = -g
        if coupled and group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        return g

    def step(self, grads: Grads) -> None:
        """One optimizer step with the given gradients (nested like ``params``)."""
        assert len(grads) == len(self.params)
        for gi, (group, params, group_grads) in enumerate(
            zip(self.groups, self.params, grads, strict=True)
        ):
            group_grads = [None if g is None else g.detach().to(DTYPE).clone() for g in group_grads]
            assert len(group_grads) == len(params)
            memory = self.uses_memory and group["memory"]
            if self.uses_memory and not memory:
                for pi in range(len(params)):
                    self.state.get((gi, pi), {}).pop("buffer", None)
            keys = self._keys(group, group_grads) if memory else [None] * len(params)
            for pi, (p, g) in enumerate(zip(params, group_grads, strict=True)):
                if g is None:
                    continue
                state = self.state.setdefault((gi, pi), {})
                if not state:
                    self._init_state(state, p)
                    if memory:
                        state["buffer"] = RefBuffer(group["buffer_size"])
                elif memory and "buffer" not in state:
                    state["buffer"] = RefBuffer(group["buffer_size"])
                state["step"] += 1
                buf = state.get("buffer") if memory else None
                params[pi] = self._update(group, state, p, g, buf, keys[pi])

    def _init_state(self, state: dict[str, Any], p: Tensor) -> None:
        raise NotImplementedError

    def _update(
        self,
        group: dict[str, Any],
        state: dict[str, Any],
        p: Tensor,
        g: Tensor,
        buf: RefBuffer | None,
        key: float | None,
    ) -> Tensor:
        raise NotImplementedError


def _validate(settings: dict[str, Any]) -> None:
    """The choices of the memory variants (only where the rule has the hyperparameter)."""
    choices = {
        "aggregation": AGGREGATIONS,
        "first_step": FIRST_STEPS,
        "policy": POLICIES,
        "second_moment": SECOND_MOMENTS,
    }
    for name, allowed in choices.items():
        if name in settings and settings[name] not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {settings[name]!r}")
    if "replace_prob" in settings and not 0.0 <= settings["replace_prob"] <= 1.0:
        raise ValueError(f"replace_prob must be in [0, 1], got {settings['replace_prob']!r}")


def _aggr(buf: RefBuffer | None, x: Tensor, group: dict[str, Any]) -> Tensor:
    return x if buf is None else buf.aggregate(x, group["aggregation"])


def _offer(
    buf: RefBuffer | None, key: float | None, value: Tensor, group: dict[str, Any], step: int
) -> None:
    if buf is not None:
        assert key is not None
        buf.offer(key, value, group["decay"], policy=group["policy"],
                  replace_prob=group["replace_prob"], policy_seed=group["policy_seed"], step=step)


def _seeding(group: dict[str, Any], state: dict[str, Any]) -> bool:
    """``first_step="seed"`` and this is the tensor's first step (its count just became 1)."""
    return group["first_step"] == "seed" and state["step"] == 1


# Hyperparameters of every memory rule (defaults: the paper's rule as docs/semantics.md states it).
_MEMORY_DEFAULTS: dict[str, Any] = {
    "buffer_size": 5,
    "decay": 0.7,
    "priority": "group",
    "memory": True,
    "aggregation": "capacity",
    "first_step": "step",
    "policy": "norm",
    "replace_prob": 1.0,
    "policy_seed": 0,
}


# --------------------------------------------------------------------------- Adam family
_ADAM_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "amsgrad": False,
    "decoupled_weight_decay": True,
    "maximize": False,
    **_MEMORY_DEFAULTS,
}


class _RefAdamBase(_Reference):
    def _init_state(self, state: dict[str, Any], p: Tensor) -> None:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
        state["max_exp_avg_sq"] = torch.zeros_like(p)

    @staticmethod
    def _adam_step(
        group: dict[str, Any], state: dict[str, Any], p: Tensor, numerator: Tensor
    ) -> Tensor:
        """``theta - lr * (n / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`` (eq. 7), decoupled wd first."""
        beta1, beta2 = group["betas"]
        t = state["step"]
        v = state["exp_avg_sq"]
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.maximum(state["max_exp_avg_sq"], v)
            v = state["max_exp_avg_sq"]
        if group["decoupled_weight_decay"]:
            p = p * (1 - group["lr"] * group["weight_decay"])
        m_hat = numerator / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        return p - group["lr"] * m_hat / (torch.sqrt(v_hat) + group["eps"])


class RefAdamCM(_RefAdamBase):
    """Adam+CM (spec; paper eqs. 4-7)::

        m_t = b1 m + (1 - b1) g;  a_t = aggr(m_t, B)
        v_t = b2 v + (1 - b2) a_t^2   (second_moment="aggregate", default)
        v_t = b2 v + (1 - b2) g_t^2   (second_moment="gradient")
        theta <- theta (1 - lr wd);  theta <- theta - lr (a_t / bc1) / (sqrt(v_t / bc2) + eps)
        offer (key, m_t)

    ``first_step="seed"``: at t = 1 only ``theta <- theta (1 - lr wd)`` (decoupled) and
    offer (key, g_1); m, v stay zero; later steps use the true t (the first real one is 2).
    """

    defaults: ClassVar[dict[str, Any]] = {**_ADAM_DEFAULTS, "second_moment": "aggregate"}
    uses_memory = True

    def _update(self, group, state, p, g, buf, key):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        g = self._direction(group, p, g, coupled=not group["decoupled_weight_decay"])
        if _seeding(group, state):
            if group["decoupled_weight_decay"]:
                p = p * (1 - group["lr"] * group["weight_decay"])
            _offer(buf, key, g, group, state["step"])
            return p
        m = beta1 * state["exp_avg"] + (1 - beta1) * g
        a = _aggr(buf, m, group)
        state["exp_avg"] = m
        s = a if group["second_moment"] == "aggregate" else g
        state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1 - beta2) * s * s
        new_p = self._adam_step(group, state, p, a)
        _offer(buf, key, m, group, state["step"])
        return new_p


class RefAdamCG(_RefAdamBase):
    """Adam+CG (spec; paper eq. 3)::

        ghat = aggr(g, B);  m = b1 m + (1 - b1) ghat;  v = b2 v + (1 - b2) ghat^2
        Adam step (decoupled wd by default);  offer (key, g)
    """

    defaults = _ADAM_DEFAULTS
    uses_memory = True

    def _update(self, group, state, p, g, buf, key):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        g = self._direction(group, p, g, coupled=not group["decoupled_weight_decay"])
        ghat = _aggr(buf, g, group)  # first_step="seed" changes nothing here (step 1 is a step)
        state["exp_avg"] = beta1 * state["exp_avg"] + (1 - beta1) * ghat
        state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1 - beta2) * ghat * ghat
        new_p = self._adam_step(group, state, p, state["exp_avg"])
        _offer(buf, key, g, group, state["step"])
        return new_p


class RefAdaMomentum(_Reference):
    """AdaMomentum / AdaM3 (spec)::

        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) m^2 + eps   (eps stays in the state)
        theta <- theta (1 - lr wd);  theta <- theta - (lr / bc1) m / (sqrt(v) / sqrt(bc2))
    """

    defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-16,
        "weight_decay": 0.0,
        "amsgrad": False,
        "decoupled_weight_decay": True,
        "maximize": False,
    }

    def _init_state(self, state: dict[str, Any], p: Tensor) -> None:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p)
        state["exp_avg_sq"] = torch.zeros_like(p)
        state["max_exp_avg_sq"] = torch.zeros_like(p)

    def _update(self, group, state, p, g, buf, key):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        t = state["step"]
        g = self._direction(group, p, g, coupled=not group["decoupled_weight_decay"])
        m = beta1 * state["exp_avg"] + (1 - beta1) * g
        v = beta2 * state["exp_avg_sq"] + (1 - beta2) * m * m + group["eps"]
        state["exp_avg"], state["exp_avg_sq"] = m, v
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.maximum(state["max_exp_avg_sq"], v)
            v = state["max_exp_avg_sq"]
        if group["decoupled_weight_decay"]:
            p = p * (1 - group["lr"] * group["weight_decay"])
        return p - (group["lr"] / (1 - beta1**t)) * m / (torch.sqrt(v) / math.sqrt(1 - beta2**t))


# --------------------------------------------------------------------------- SGD family
_SGD_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "momentum": 0.9,
    "dampening": 0.0,
    "weight_decay": 0.0,
    "maximize": False,
    **_MEMORY_DEFAULTS,
}


class _RefSGDBase(_Reference):
    uses_memory = True

    def _init_state(self, state: dict[str, Any], p: Tensor) -> None:
        state["step"] = 0
        state["momentum_buffer"] = None

    @staticmethod
    def _heavy_ball(group: dict[str, Any], state: dict[str, Any], x: Tensor) -> Tensor:
        """torch.optim.SGD momentum: seeded with ``x_1``, then ``mu b + (1 - dampening) x``."""
        mu = group["momentum"]
        if mu == 0:
            return x
        if state["momentum_buffer"] is None:
            state["momentum_buffer"] = x.clone()
        else:
            state["momentum_buffer"] = mu * state["momentum_buffer"] + (1 - group["dampening"]) * x
        return state["momentum_buffer"]


class RefSGDCM(_RefSGDBase):
    """SGD+CM (spec; paper eqs. 4, 8): ``g += wd theta; m = heavy ball(g);
    theta -= lr aggr(m, B); offer (key, m)``.

    ``first_step="seed"``: at t = 1 only offer (key, g_1); theta and the momentum buffer
    (still ``None``: step 2 seeds it with g_2) are not touched."""

    defaults = _SGD_DEFAULTS

    def _update(self, group, state, p, g, buf, key):  # type: ignore[no-untyped-def]
        g = self._direction(group, p, g, coupled=True)
        if _seeding(group, state):
            _offer(buf, key, g, group, state["step"])
            return p
        m = self._heavy_ball(group, state, g)
        new_p = p - group["lr"] * _aggr(buf, m, group)
        _offer(buf, key, m, group, state["step"])
        return new_p


class RefSGDCG(_RefSGDBase):
    """SGD+CG (spec; paper eq. 10): ``g += wd theta; ghat = aggr(g, B);
    b = heavy ball(ghat); theta -= lr b; offer (key, g)``."""

    defaults: ClassVar[dict[str, Any]] = {**_SGD_DEFAULTS, "momentum": 0.0}

    def _update(self, group, state, p, g, buf, key):  # type: ignore[no-untyped-def]
        g = self._direction(group, p, g, coupled=True)
        # first_step="seed" changes nothing here (the authors' step 1 is an ordinary step)
        direction = self._heavy_ball(group, state, _aggr(buf, g, group))
        new_p = p - group["lr"] * direction
        _offer(buf, key, g, group, state["step"])
        return new_p


# --------------------------------------------------------------------------- Lion family
_LION_DEFAULTS: dict[str, Any] = {
    "lr": 1e-4,
    "betas": (0.9, 0.99),
    "weight_decay": 0.0,
    "maximize": False,
}


def _validate_lion(settings: dict[str, Any]) -> None:
    """Lion's ranges: ``lr >= 0``, ``weight_decay >= 0``, both betas in ``[0, 1)``."""
    if not settings["lr"] >= 0.0:  # also refuses NaN
        raise ValueError(f"lr must be >= 0, got {settings['lr']!r}")
    if not settings["weight_decay"] >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {settings['weight_decay']!r}")
    betas = settings["betas"]
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")


class _RefLionBase(_Reference):
    def __init__(self, groups: Sequence[dict[str, Any]] | Sequence[Tensor], **hyper: Any):
        super().__init__(groups, **hyper)
        for settings in self.groups:
            _validate_lion(settings)

    def _init_state(self, state: dict[str, Any], p: Tensor) -> None:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(p)

    @staticmethod
    def _lion_step(group: dict[str, Any], p: Tensor, direction: Tensor) -> Tensor:
        """``theta - lr * (sign(direction) + wd * theta)`` (``torch.sign``: ``sign(0) = 0``)."""
        return p - group["lr"] * (torch.sign(direction) + group["weight_decay"] * p)


class RefLion(_RefLionBase):
    """Lion (Chen et al. 2023, decoupled weight decay)::

        c = b1 m + (1 - b1) g;  theta <- theta - lr (sign(c) + wd theta);  m = b2 m + (1 - b2) g
    """

    defaults = _LION_DEFAULTS

    def _update(self, group, state, p, g, buf, key):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        g = self._direction(group, p, g, coupled=False)
        m = state["exp_avg"]
        c = beta1 * m + (1 - beta1) * g
        new_p = self._lion_step(group, p, c)
        state["exp_avg"] = beta2 * m + (1 - beta2) * g
        return new_p


class RefLionCG(_RefLionBase):
    """Lion+CG::

        ghat = aggr(g, B);  c = b1 m + (1 - b1) ghat;  theta <- theta - lr (sign(c) + wd theta)
        m = b2 m + (1 - b2) ghat;  offer (key, g)
    """

    defaults: ClassVar[dict[str, Any]] = {**_LION_DEFAULTS, **_MEMORY_DEFAULTS}
    uses_memory = True

    def _update(self, group, state, p, g, buf, key):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        g = self._direction(group, p, g, coupled=False)
        ghat = _aggr(buf, g, group)  # first_step="seed" changes nothing here (step 1 is a step)
        m = state["exp_avg"]
        c = beta1 * m + (1 - beta1) * ghat
        new_p = self._lion_step(group, p, c)
        state["exp_avg"] = beta2 * m + (1 - beta2) * ghat
        _offer(buf, key, g, group, state["step"])
        return new_p


class RefLionCM(_RefLionBase):
    """Lion+CM (the buffer holds the interpolation ``c``, Lion's counterpart of Adam+CM's m_t)::

        c = b1 m + (1 - b1) g;  theta <- theta - lr (sign(aggr(c, B)) + wd theta)
        m = b2 m + (1 - b2) g;  offer (key, c)

    ``first_step="seed"``: at t = 1 only ``theta <- theta - lr wd theta`` and offer (key, g_1);
    m stays zero.
    """

    defaults: ClassVar[dict[str, Any]] = {**_LION_DEFAULTS, **_MEMORY_DEFAULTS}
    uses_memory = True

    def _update(self, group, state, p, g, buf, key):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        g = self._direction(group, p, g, coupled=False)
        if _seeding(group, state):
            p = p - group["lr"] * group["weight_decay"] * p
            _offer(buf, key, g, group, state["step"])
            return p
        m = state["exp_avg"]
        c = beta1 * m + (1 - beta1) * g
        new_p = self._lion_step(group, p, _aggr(buf, c, group))
        state["exp_avg"] = beta2 * m + (1 - beta2) * g
        _offer(buf, key, c, group, state["step"])
        return new_p


# --------------------------------------------------------------------------- SAM
GradFn = Callable[[list[list[Tensor]]], tuple[float, list[list[Tensor | None]]]]


class RefSAM:
    """SAM / ASAM around any reference base (spec, "SAM")::

        g = grad(theta);  s = |theta| (adaptive) or 1;  e = rho s^2 g / ||s g||_2 (all tensors)
        theta <- theta + e;  g' = grad(theta);  theta <- theta - e;  base.step(g')

    ``grad_fn(params)`` returns ``(loss, grads)`` at the given (nested) parameters.
    """

    def __init__(self, base: _Reference, rho: float = 0.05, adaptive: bool = False):
        self.base = base
        self.rho = rho
        self.adaptive = adaptive

    @property
    def params(self) -> list[list[Tensor]]:
        return self.base.params

    def perturbation(self, grads: Grads) -> list[list[Tensor | None]]:
        """``e`` for every tensor with a gradient (``None`` elsewhere)."""
        params = self.base.params
        squares = 0.0
        for group_params, group_grads in zip(params, grads, strict=True):
            for p, g in zip(group_params, group_grads, strict=True):
                if g is not None:
                    sg = (p.abs() if self.adaptive else torch.ones_like(p)) * g.to(DTYPE)
                    squares = squares + float((sg * sg).sum())
        norm = math.sqrt(squares)
        out: list[list[Tensor | None]] = []
        for group_params, group_grads in zip(params, grads, strict=True):
            row: list[Tensor | None] = []
            for p, g in zip(group_params, group_grads, strict=True):
                if g is None:
                    row.append(None)
                    continue
                s = p.abs() if self.adaptive else torch.ones_like(p)
                row.append(self.rho * s * s * g.to(DTYPE) / norm)
            out.append(row)
        return out

    def step(self, grad_fn: GradFn) -> float:
        loss, grads = grad_fn(self.base.params)
        e = self.perturbation(grads)
        params = self.base.params
        for gi, row in enumerate(e):
            for pi, ep in enumerate(row):
                if ep is not None:
                    params[gi][pi] = params[gi][pi] + ep
        _, perturbed_grads = grad_fn(params)
        for gi, row in enumerate(e):
            for pi, ep in enumerate(row):
                if ep is not None:
                    params[gi][pi] = params[gi][pi] - ep
        self.base.step(perturbed_grads)
        return loss


REFERENCES: dict[str, type[_Reference]] = {
    "AdamCM": RefAdamCM,
    "AdamCG": RefAdamCG,
    "SGDCM": RefSGDCM,
    "SGDCG": RefSGDCG,
    "AdaMomentum": RefAdaMomentum,
    "Lion": RefLion,
    "LionCG": RefLionCG,
    "LionCM": RefLionCM,
}


# --------------------------------------------------------------------------- test harness
def make_groups(
    shapes: Sequence[Sequence[tuple[int, ...]]],
    seed: int,
    noncontiguous: Sequence[Sequence[bool]] | None = None,
    dtype: torch.dtype = DTYPE,
) -> list[list[Tensor]]:
    """Leaf parameters (``requires_grad=True``) for each group of shapes, deterministic in ``seed``.

    Where ``noncontiguous`` is set (and the tensor has at least one element) the parameter
    is a strided view of a larger leaf: a transpose for 2-d and higher, a ``::2`` slice else.
    """
    gen = torch.Generator().manual_seed(seed)
    groups: list[list[Tensor]] = []
    for gi, group_shapes in enumerate(shapes):
        row = []
        for pi, shape in enumerate(group_shapes):
            nc = bool(noncontiguous and noncontiguous[gi][pi])
            row.append(_tensor(shape, gen, nc, dtype).requires_grad_(True))
        groups.append(row)
    return groups


def _tensor(
    shape: Sequence[int], gen: torch.Generator, nc: bool, dtype: torch.dtype, scale: float = 1.0
) -> Tensor:
    shape = tuple(shape)
    if not nc or len(shape) == 0:
        return (torch.randn(shape, generator=gen, dtype=DTYPE) * scale).to(dtype)
    if len(shape) >= 2:
        big = torch.randn((*shape[:-2], shape[-1], shape[-2]), generator=gen, dtype=DTYPE)
        out = (big * scale).to(dtype).transpose(-1, -2)
    else:
        out = (torch.randn((2 * shape[0],), generator=gen, dtype=DTYPE) * scale).to(dtype)[::2]
    assert out.shape == shape
    return out.detach()


def grad_stream(
    shapes: Sequence[Sequence[tuple[int, ...]]],
    seed: int,
    step: int,
    none_prob: float = 0.0,
    noncontiguous: Sequence[Sequence[bool]] | None = None,
    dtype: torch.dtype = DTYPE,
) -> list[list[Tensor | None]]:
    """Deterministic gradients for one step: normal noise times a per-step and per-tensor
    log-uniform scale (so that norms vary and buffer replacements happen); with probability
    ``none_prob`` a tensor gets no gradient this step.  With ``noncontiguous`` given, a
    gradient is strided where its parameter is on even steps and the other way round on odd
    steps."""
    gen = torch.Generator().manual_seed(seed * 100_003 + step)
    step_scale = math.exp(float(torch.empty(()).uniform_(-1.0, 1.0, generator=gen)))
    grads: list[list[Tensor | None]] = []
    for gi, group_shapes in enumerate(shapes):
        row: list[Tensor | None] = []
        for pi, shape in enumerate(group_shapes):
            drop = float(torch.rand((), generator=gen)) < none_prob
            scale = math.exp(float(torch.empty(()).uniform_(-0.5, 0.5, generator=gen)))
            # the gradient's layout alternates per step, independently of the parameter's
            nc = bool(noncontiguous and noncontiguous[gi][pi]) != bool(step % 2)
            g = _tensor(shape, gen, nc, dtype, step_scale * scale)
            row.append(None if drop else g)
        grads.append(row)
    return grads


def flat_params(groups: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    return [p for row in groups for p in row]
