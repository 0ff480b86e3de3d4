"""Hugging Face Transformers: memoptim optimizers in ``transformers.Trainer``.

memoptim's optimizers are ``torch.optim.Optimizer`` subclasses, so the single-pass ones
(Adam+CM, Adam+CG, SGD+CM, SGD+CG, AdaMomentum, the baselines) need no adapter: build the
optimizer and a scheduler yourself and hand both to ``Trainer(optimizers=(optimizer,
scheduler))``.  :func:`trainer_optimizers` does that by registry name.  Checkpoints written by
``Trainer`` (``optimizer.pt``, including the critical buffers) resume with
``trainer.train(resume_from_checkpoint=...)``.

SAM evaluates the loss twice per step, and ``Trainer`` calls ``optimizer.step()`` without a
closure, so SAM needs the :class:`SAMTrainer` subclass (it runs both forward/backward passes in
``training_step``) together with a :class:`TrainerSAM` optimizer (:func:`trainer_optimizers`
builds one for the ``"adam+sam"`` and ``"adam+sam+cm"`` names).

>>> optimizer, scheduler = trainer_optimizers(model, "adam+cm", lr=3e-4,  # doctest: +SKIP
...                                           num_training_steps=1000, num_warmup_steps=100)
>>> trainer = Trainer(model=model, args=args, train_dataset=ds,  # doctest: +SKIP
...                   optimizers=(optimizer, scheduler))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

try:
    import transformers
except ImportError as exc:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "memoptim.integrations.transformers needs Hugging Face Transformers: "
        "pip install 'memoptim[transformers]'"
    ) from exc

import torch
from torch.optim import Optimizer

from memoptim.optim import SAM, AdamCM
from memoptim.registry import create_optimizer

__all__ = ["SAMTrainer", "TrainerSAM", "trainer_optimizers"]


class TrainerSAM(SAM):
    """:class:`memoptim.SAM` whose closure-free ``step()`` finishes a step begun by ``first_step``.

    ``Trainer`` calls ``optimizer.step()`` without a closure; :class:`SAMTrainer` runs the two
    forward/backward passes and :meth:`first_step` in ``training_step``, so the closure-free
    ``step()`` here is :meth:`second_step` (restore the parameters, step the base optimizer).
    Called without a preceding :meth:`first_step` (a plain ``Trainer``) it raises instead of
    silently taking a non-SAM step.  ``step(closure)`` is :meth:`memoptim.SAM.step`; the
    state dict is SAM's, so checkpoints load into either class.
    """

    _perturbed = False

    def first_step(self, zero_grad: bool = False) -> None:
        super().first_step(zero_grad=zero_grad)
        self._perturbed = True

    def second_step(self, zero_grad: bool = False) -> None:
        self._perturbed = False
        super().second_step(zero_grad=zero_grad)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is not None:
            return super().step(closure)
        if not self._perturbed:
            raise RuntimeError(
                "TrainerSAM.step() without a closure only finishes a SAM step begun by "
                "first_step(); train with memoptim.integrations.transformers.SAMTrainer"
            )
        self.second_step()
        return None


class SAMTrainer(transformers.Trainer):
    """``transformers.Trainer`` that drives SAM: two forward/backward passes per optimizer step.

    ``training_step`` computes the gradient at the current parameters, moves to the SAM
    neighbour (:meth:`TrainerSAM.first_step`), and computes the gradient there; ``Trainer`` then
    clips that gradient (``max_grad_norm``) and calls ``optimizer.step()``, which restores the
    parameters and steps the base optimizer.  The logged loss is the first pass's (as
    :meth:`memoptim.SAM.step` returns).  Requires a :class:`TrainerSAM` optimizer passed via
    ``optimizers=`` and ``gradient_accumulation_steps=1`` (SAM perturbs along the full batch
    gradient, which does not exist until the last micro-batch).  Tested on one CPU process.
    """

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any):
        sam = _unwrap(self.optimizer)
        if not isinstance(sam, TrainerSAM):
            raise TypeError(
                "SAMTrainer needs a memoptim.integrations.transformers.TrainerSAM optimizer "
                f"passed as optimizers=(optimizer, scheduler); got {type(sam).__name__}"
            )
        if self.args.gradient_accumulation_steps != 1:
            raise ValueError("SAMTrainer supports gradient_accumulation_steps=1 only")
        loss = super().training_step(model, inputs, *args, **kwargs)
        sam.first_step(zero_grad=True)
        super().training_step(model, inputs, *args, **kwargs)
        return loss


def trainer_optimizers(
    model: torch.nn.Module | Iterable[Any],
    name: str = "adam+cm",
    *,
    num_training_steps: int,
    num_warmup_steps: int = 0,
    scheduler: str = "linear",
    **hyperparameters: Any,
) -> tuple[Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The ``(optimizer, scheduler)`` pair for ``Trainer(optimizers=...)``.

    Args:
        model: the model (its ``parameters()`` are optimised) or parameters / param groups.
        name: a :func:`memoptim.create_optimizer` name (``"adam+cm"``, ``"sgd+cg"``, ...).  The
            SAM names (``"adam+sam"``, ``"adam+sam+cm"``) build a :class:`TrainerSAM`, which must
            be trained with :class:`SAMTrainer`.
        num_training_steps: the scheduler's length: the run's total optimizer steps (when
            resuming, the full run's, not the remaining).
        num_warmup_steps: linear warm-up steps.
        scheduler: a ``transformers.get_scheduler`` name (``"linear"``, ``"cosine"``,
            ``"constant_with_warmup"``, ...).
        **hyperparameters: the optimizer's (``lr``, ``buffer_size``, ``decay``, ``rho``, ...).
    """
    params = model.parameters() if isinstance(model, torch.nn.Module) else model
    key = name.strip().lower()
    if key in ("adam+sam", "adam+sam+cm"):
        base = AdamCM if key == "adam+sam+cm" else torch.optim.Adam
        optimizer: Optimizer = TrainerSAM(params, base, **hyperparameters)
    else:
        optimizer = create_optimizer(name, params, **hyperparameters)
    lr_scheduler = transformers.get_scheduler(
        scheduler, optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps
    )
    return optimizer, lr_scheduler


def _unwrap(optimizer: Optimizer) -> Optimizer:
    """The user's optimizer inside Accelerate's ``AcceleratedOptimizer`` wrapper(s)."""
    while not isinstance(optimizer, SAM) and isinstance(getattr(optimizer, "optimizer", None), Optimizer):
        optimizer = optimizer.optimizer
    return optimizer
