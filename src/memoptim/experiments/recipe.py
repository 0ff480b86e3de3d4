r"""How a task trains besides its optimizer: learning-rate schedules and weight-decay groups.

Schedules (the ``schedule`` of :func:`memoptim.experiments.train.train`), as multipliers of each
parameter group's base learning rate:

* ``"step"`` (the paper's, section 5): epochs :math:`\lfloor E/2 \rfloor + 1 .. E` run at
  ``lr / 10`` (no decay when :math:`E = 1`) -- :func:`lr_factor`;
* ``"constant"``: ``lr`` throughout;
* ``"warmup-cosine"`` (the transformer recipe), per optimizer step :math:`s = 0 .. S-1` of a run of
  :math:`S` steps, with :math:`W = \max(1, \mathrm{round}(0.05 S))` warm-up steps and a final
  factor :math:`f = 0.1` -- :func:`warmup_cosine`:

  .. math::
      \mathrm{factor}(s) = \begin{cases} (s + 1) / W & s < W \\
      f + (1 - f)\,\tfrac12\,\bigl(1 + \cos(\pi\,(s - W) / (S - W))\bigr) & s \ge W \end{cases}

  a linear warm-up to ``lr`` then a cosine decay towards ``f lr`` (reached after the last step).

Weight-decay groups (:func:`decay_groups`): decoupled weight decay on the weight matrices only,
none on biases, normalisation parameters and embeddings (also a tied output layer), as
transformers are trained (GPT-2, nanoGPT).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

#: Every schedule name; :data:`PER_STEP` change the learning rate at every optimizer step.
SCHEDULES = ("step", "constant", "warmup-cosine")
PER_STEP = ("warmup-cosine",)
WARMUP_FRACTION, FINAL_FACTOR = 0.05, 0.1


def lr_factor(unit: int, units: int, schedule: str) -> float:
    """Multiplier of the base LR in epoch ``unit`` (0-based) of ``units``; 1 for a per-step
    schedule (:func:`step_factor` sets it at every step)."""
    if schedule == "constant" or schedule in PER_STEP:
        return 1.0
    if schedule == "step":
        return 0.1 if units >= 2 and unit >= units // 2 else 1.0
    raise ValueError(f"unknown schedule {schedule!r} ({' | '.join(SCHEDULES)})")


def warmup_cosine(step: int, total: int, warmup: float = WARMUP_FRACTION, final: float = FINAL_FACTOR) -> float:
    """The ``"warmup-cosine"`` factor of optimizer step ``step`` (0-based) of ``total`` (module doc)."""
    w = max(1, round(warmup * total))
    if step < w:
        return (step + 1) / w
    progress = (step - w) / max(1, total - w)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def step_factor(schedule: str, step: int, total: int) -> float | None:
    """The factor of a per-step ``schedule`` at ``step`` of ``total``, ``None`` for epoch schedules."""
    return warmup_cosine(step, total) if schedule == "warmup-cosine" else None


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups of ``model``: its weight matrices (``dim >= 2``, not embeddings) with
    ``weight_decay``, everything else (biases, norms, embeddings, a tied layer) with none.  Each
    parameter appears once, in ``named_parameters`` order."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, rest = [], []
    for _, p in model.named_parameters():  # shared (tied) parameters are listed once
        (decay if p.dim() >= 2 and id(p) not in embeddings else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def set_lrs(optimizer: Any, base_lrs: list[float], factor: float) -> None:
    """Set every parameter group's learning rate to its base learning rate times ``factor``."""
    for group, lr0 in zip(optimizer.param_groups, base_lrs, strict=True):
        group["lr"] = lr0 * factor
