"""Sharpness-aware minimisation as a wrapper around any optimizer (SAM and ASAM)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from memoptim.distributed import abs_max
from memoptim.optim import _validation as V
from memoptim.optim.base import BaseOptimizer
from memoptim.optim.placement import as_real


class SAM(BaseOptimizer):
    r"""Sharpness-aware minimisation (Foret et al. 2021) around a base optimizer.

    One step evaluates the loss twice (``step(closure)``, ``torch.optim`` closure
    convention: the closure zeroes the gradients, computes the loss, calls
    ``backward`` and returns the loss):

    1. gradient :math:`g` at :math:`\theta`;
    2. perturbation :math:`e = \rho\, s^2 g / \|s g\|_2`, the norm taken over all
       parameters together, with :math:`s = |\theta|` for ASAM (``adaptive=True``,
       Kwon et al. 2021) and :math:`s = 1` otherwise;
    3. gradient at :math:`\theta + e`; the parameters are then restored exactly to
       :math:`\theta`;
    4. the base optimizer steps with the gradient of step 3 -- so with a
       memory-augmented base (Adam+SAM+CM) the buffer key is the norm of the
       perturbed-point gradient.

    ``step`` returns the loss of the first evaluation.  For manual loops call
    :meth:`first_step` after the first backward and :meth:`second_step` after the
    second.  SAM shares ``param_groups`` and ``state`` with its base, so LR
    schedulers, ``state_dict`` and ``add_param_group`` work on either.
    ``rho=0`` reproduces the base optimizer exactly (on a deterministic model).

    Args:
        params: the parameters (or param groups) to optimise; may be ``None`` when
            ``base_optimizer`` is an already-built optimizer.
        base_optimizer: an optimizer class, built as ``base_optimizer(params,
            **base_kwargs)``, or an optimizer instance.
        rho: neighbourhood radius :math:`\rho \ge 0` (default ``0.05``).
        adaptive: ASAM's scale-invariant perturbation.
        **base_kwargs: hyperparameters of the base optimizer (class form only).
    """

    def __init__(
        self,
        params: Iterable[Any] | None,
        base_optimizer: type[Optimizer] | Optimizer,
        rho: float = 0.05,
        adaptive: bool = False,
        **base_kwargs: Any,
    ):
        V.check_non_negative("rho", rho)
        if isinstance(base_optimizer, Optimizer):
            if base_kwargs:
                raise TypeError(
                    "SAM: hyperparameters go to the base optimizer's constructor; with an "
                    f"already-built base_optimizer got unexpected {sorted(base_kwargs)}"
                )
            base = base_optimizer
            if params is not None:
                _check_same_params(params, base)
        elif isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer):
            if params is None:
                raise ValueError("SAM: params is required when base_optimizer is a class")
            base = base_optimizer(params, **base_kwargs)
        else:
            raise TypeError(
                f"SAM: base_optimizer must be an optimizer class or instance, got {base_optimizer!r}"
            )
        if isinstance(base, SAM):
            raise TypeError("SAM: the base optimizer cannot itself be SAM")
        defaults = {**base.defaults, "rho": rho, "adaptive": adaptive}
        # Optimizer.__init__ adds the base's group dicts themselves (filling in rho and
        # adaptive); aliasing the list and the state makes both views one object.
        super().__init__(base.param_groups, defaults)
        self.base_optimizer = base
        self.param_groups = base.param_groups
        self.state = base.state
        self._saved: dict[Tensor, Tensor] = {}

    def _validate_group(self, group: dict[str, Any]) -> None:
        V.check_non_negative("rho", group["rho"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not hasattr(self, "base_optimizer"):  # during Optimizer.__init__
            super().add_param_group(param_group)
            return
        param_group.setdefault("rho", self.defaults["rho"])
        param_group.setdefault("adaptive", self.defaults["adaptive"])
        self._validate_group(param_group)
        self.base_optimizer.add_param_group(param_group)

    # ------------------------------------------------------------------ steps
    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        r"""Move to :math:`\theta + e` using the current gradients (saved :math:`\theta` is restored later)."""
        pairs = [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not pairs:
            return
        # complex parameters as their real views (as the base steps them): |theta| elementwise
        real = [(as_real(p), as_real(p.grad)) for _, p in pairs]
        scaled = [gr * pr.abs() if g["adaptive"] else gr for (g, _), (pr, gr) in zip(pairs, real)]
        dtype = torch.float64 if any(pr.dtype == torch.float64 for pr, _ in real) else torch.float32
        device = pairs[0][1].device
        # ||s g|| computed as m * ||s g / m|| with m = max |s g|, so that tiny or huge
        # gradients neither underflow nor overflow: e keeps length rho at any scale.
        amax = torch.stack([abs_max(s).to(device, dtype) for s in scaled]).max()
        inv_m = 1.0 / amax.clamp_min(torch.finfo(dtype).tiny)  # all-zero gradient -> e = 0
        unit = [s * inv_m.to(s.device, s.dtype) for s in scaled]
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(u, dtype=dtype).to(device) for u in unit])
        )
        inv = 1.0 / norm.clamp_min(torch.finfo(dtype).tiny)
        for (group, p), (pr, _), u in zip(pairs, real, unit):
            e = (u * pr.abs() if group["adaptive"] else u) * (inv.to(p.device) * group["rho"])
            if group.get("maximize", False):
                e = -e  # the "worst" neighbour of a maximised objective lies downhill
            self._saved[p] = p.detach().clone()
            pr.add_(e.to(pr.dtype))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore :math:`\\theta` exactly and let the base optimizer step with the current gradients."""
        for p, old in self._saved.items():
            p.copy_(old)
        self._saved.clear()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One SAM step; ``closure`` is required and is evaluated twice."""
        if closure is None:
            raise RuntimeError(
                "SAM.step needs a closure that zeroes the gradients, computes the loss, calls "
                "backward and returns the loss; or call first_step()/second_step() yourself"
            )
        with torch.enable_grad():
            loss = closure()
        self.first_step()
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        settle = getattr(self.base_optimizer, "_settle", None)
        if settle is not None:  # a native step's deferred offer is completed first, as by the base
            settle(p for g in self.param_groups for p in g["params"])
        return super().state_dict()

    def _tag(self) -> dict[str, Any]:
        inner = getattr(self.base_optimizer, "_tag", None)
        name = inner()["optimizer"] if inner else type(self.base_optimizer).__name__
        return {"optimizer": f"SAM[{name}]", "version": 1}

    def _load_checked(self, state_dict: dict[str, Any]) -> None:
        # The base loads (and checks against its own hyperparameters); then re-alias,
        # since loading replaces the base's param_groups and state objects.
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    def __repr__(self) -> str:
        rho, adaptive = self.defaults["rho"], self.defaults["adaptive"]
        return f"SAM(rho={rho}, adaptive={adaptive}, base_optimizer={self.base_optimizer!r})"


def _check_same_params(params: Iterable[Any], base: Optimizer) -> None:
    given: set[int] = set()
    for item in params:
        if isinstance(item, dict):
            given.update(id(p) for p in item["params"])
        elif isinstance(item, tuple):
            given.add(id(item[1]))
        else:
            given.add(id(item))
    held = {id(p) for g in base.param_groups for p in g["params"]}
    if given != held:
        raise ValueError("SAM: params differ from the parameters of the given base_optimizer")
