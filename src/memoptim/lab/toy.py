r"""Batched, exactly independent optimisation runs on toy surfaces.

:func:`run_toy` optimises ``N`` starting points at once (one row of ``x0`` per
run) with any optimizer of the registry (:func:`memoptim.create_optimizer`).

**Independence.**  Each run is its own parameter tensor (shape ``(d,)``), and
the surfaces are separable across rows, so ``loss.sum().backward()`` gives each
run exactly its own gradient.  What could couple runs is the optimizer:

* the memory-augmented optimizers are built with ``priority="tensor"``: one
  priority key per tensor, i.e. per run, equal to the run's own
  :math:`\|g\|_2` -- the same key as ``priority="group"`` would give a model
  made of that single tensor (which is what the paper's toy problems are).  In
  ``priority="group"`` mode the key would be the *sum* of the runs' gradient
  norms and all runs would share insert/replace decisions; packing the runs
  into one ``(N, d)`` tensor would do the same even in ``"tensor"`` mode;
* SAM normalises its perturbation over *all* parameters of the optimizer, so
  the SAM variants get one optimizer instance per run, driven through
  :meth:`~memoptim.optim.SAM.first_step` / :meth:`~memoptim.optim.SAM.second_step`
  with a single batched loss evaluation for all runs;
* everything else (Adam, Adam+CG/CM element-wise updates) is per-tensor anyway.

The tests check that a batch reproduces the runs made one at a time.

**Schedule.**  The learning rate of every group is divided by
``lr_drop_factor`` once, before step ``lr_drop_at`` (0-based; the paper: 500
steps, divided by 10 at step 250).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from memoptim.registry import REGISTRY

__all__ = ["MEMORY_OPTIMIZERS", "SAM_OPTIMIZERS", "ToyRun", "run_toy"]

#: Registry names whose optimizer takes the memory options (``adam+cm-nomem`` never fills a buffer
#: but takes the same options), from the registry.
MEMORY_OPTIMIZERS = frozenset(n for n, e in REGISTRY.items() if e.memory)
#: Registry names that wrap their base in SAM (need two loss evaluations per step).
SAM_OPTIMIZERS = frozenset(n for n, e in REGISTRY.items() if e.sam)


@dataclass
class ToyRun:
    """The outcome of :func:`run_toy` for ``N`` runs of ``T`` steps in ``d`` dimensions.

    Attributes:
        optimizer: registry name.
        hyperparameters: as passed to the optimizer (plus ``priority`` where added).
        trajectory: iterates :math:`x_0, \\dots, x_T`, shape ``(T + 1, N, d)``.
        losses: loss of every iterate, shape ``(T + 1, N)``.
        diagnostics: optional per-run buffer statistics recorded every
            ``diagnostics_every`` steps: ``steps`` ``(K,)`` and ``variance``,
            ``cosine``, ``filled``, ``replacements``, ``distance`` of shape ``(K, N)``.
    """

    optimizer: str
    hyperparameters: dict[str, Any]
    trajectory: Tensor
    losses: Tensor
    diagnostics: dict[str, Tensor] = field(default_factory=dict)

    @property
    def final(self) -> Tensor:
        """Final iterates, shape ``(N, d)``."""
        return self.trajectory[-1]

    @property
    def final_loss(self) -> Tensor:
        """Final losses, shape ``(N,)``."""
        return self.losses[-1]


def _build(name: str, params: list[Tensor], hp: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    from memoptim import create_optimizer

    hp = dict(hp)
    key = name.lower()
    if key in MEMORY_OPTIMIZERS and key not in SAM_OPTIMIZERS:
        hp.setdefault("priority", "tensor")
    if key in SAM_OPTIMIZERS:
        return [create_optimizer(key, [p], **hp) for p in params], hp
    return [create_optimizer(key, params, **hp)], hp


def run_toy(
    fn: Callable[[Tensor], Tensor],
    x0: Tensor,
    optimizer: str,
    hyperparameters: dict[str, Any],
    *,
    steps: int = 500,
    lr_drop_at: int | None = 250,
    lr_drop_factor: float = 10.0,
    diagnostics_every: int = 0,
    progress: Any | None = None,
) -> ToyRun:
    """Minimise ``fn`` from every row of ``x0`` with the registry optimizer ``optimizer``.

    Args:
        fn: batched loss ``(N, d) -> (N,)`` with independent rows (e.g. a
            :mod:`memoptim.lab.surfaces` function).
        x0: starting points, shape ``(N, d)``; its dtype is used throughout.
        optimizer: registry name (``adam``, ``adam+cm``, ``adam+sam`` ...).
        hyperparameters: keyword arguments of the optimizer.
        steps: number of optimizer steps :math:`T`.
        lr_drop_at: step before which the learning rate is divided (``None``: never).
        lr_drop_factor: the divisor.
        diagnostics_every: record buffer statistics and distance every so many steps (0: never).
        progress: object with ``update(n)`` (e.g. a ``tqdm`` bar), advanced once per step.
    """
    if x0.dim() != 2:
        raise ValueError("x0 must have shape (N, d)")
    n, _ = x0.shape
    params = [torch.nn.Parameter(x0[i].detach().clone()) for i in range(n)]
    opts, hp = _build(optimizer, params, hyperparameters)
    is_sam = optimizer.lower() in SAM_OPTIMIZERS
    traj = torch.empty((steps + 1, *x0.shape), dtype=x0.dtype)
    losses = torch.empty((steps + 1, n), dtype=x0.dtype)
    diag: dict[str, list[Tensor]] = {}
    record = diagnostics_every > 0 and optimizer.lower() in MEMORY_OPTIMIZERS

    def loss_and_grad() -> Tensor:
        for p in params:
            p.grad = None
        x = torch.stack(params)
        loss = fn(x)
        loss.sum().backward()
        return loss.detach()

    for t in range(steps + 1):
        loss = loss_and_grad()
        traj[t] = torch.stack([p.detach() for p in params])
        losses[t] = loss
        if record and (t % diagnostics_every == 0 or t == steps):
            _record(diag, t, opts, params, x0)
        if t == steps:
            break
        if lr_drop_at is not None and t == lr_drop_at:
            for o in opts:
                for g in o.param_groups:
                    g["lr"] = g["lr"] / lr_drop_factor
        if is_sam:
            for o in opts:
                o.first_step()
            loss_and_grad()
            for o in opts:
                o.second_step()
        else:
            opts[0].step()
        if progress is not None:
            progress.update(1)
    out = {k: torch.stack(v) for k, v in diag.items()}
    return ToyRun(optimizer.lower(), hp, traj, losses, out)


def _record(diag: dict[str, list[Tensor]], t: int, opts: list[Any], params: list[Tensor],
            x0: Tensor) -> None:
    from memoptim.buffer import CriticalBuffer
    from memoptim.lab.diagnostics import buffer_stats

    rows: dict[str, list[float]] = {k: [] for k in
                                    ("variance", "cosine", "filled", "replacements", "distance")}
    for i, p in enumerate(params):
        o = opts[i] if len(opts) > 1 else opts[0]
        state = (getattr(o, "base_optimizer", None) or o).state.get(p, {})
        b = CriticalBuffer.from_state(state)
        if b is None:
            rows["variance"].append(math.nan)
            rows["cosine"].append(math.nan)
            rows["filled"].append(0.0)
            rows["replacements"].append(0.0)
        else:
            s = buffer_stats(b)
            rows["variance"].append(s.variance)
            rows["cosine"].append(s.cosine)
            rows["filled"].append(float(s.filled))
            rows["replacements"].append(float(s.replacements))
        rows["distance"].append(float(torch.linalg.vector_norm(p.detach() - x0[i])))
    diag.setdefault("steps", []).append(torch.tensor(float(t)))
    for k, v in rows.items():
        diag.setdefault(k, []).append(torch.tensor(v, dtype=torch.float64))
