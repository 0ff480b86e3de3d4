"""Per-epoch training diagnostics (paper Fig. 8 analogue): sharpness, distance travelled and the
critical buffer's variance / agreement; optionally the m-sharpness of paper eq. 15 (Fig. 19).

Thin glue over the exploration lab: :func:`memoptim.lab.sharpness.top_hessian_eigenvalue`
(sharpness = largest Hessian eigenvalue :math:`h_{\\max}` of the training loss on a fixed batch,
by power iteration on Hessian-vector products), :class:`memoptim.lab.diagnostics.DistanceTracker`
(:math:`\\|\\theta_t - \\theta_0\\|_2`) and :func:`memoptim.lab.diagnostics.joint_buffer_stats`
(buffer variance and the mean cosine similarity between the highest-priority item and the other
items, the paper's "agreement") and, when asked for, :func:`memoptim.lab.sharpness.m_sharpness`
(the mean over a fixed set of training mini-batches of size :math:`m` of the loss rise at SAM's
first-order worst-case perturbation of radius :math:`r`).  Everything is computed without
touching the global RNG, the gradients or the model's train/eval mode, so switching diagnostics
on does not change training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from memoptim.experiments.tasks import Task


class TrainingDiagnostics:
    """Compute the diagnostics of ``model`` / ``optimizer`` at the end of every epoch.

    Args:
        sharpness_iters: power-iteration budget (HVPs) for the top Hessian eigenvalue;
            0 disables sharpness (the costly part: one double-backward pass per iteration).
        m_sharpness_batches: number of fixed training mini-batches over which the m-sharpness
            (paper eq. 15) is averaged; 0 (default) disables it.
        m_sharpness_batch_size: their size :math:`m` (the paper: the training batch size);
            default the task's batch size.
        m_sharpness_rho: the radius :math:`r` of the perturbation ball (the paper's 0.05).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any,
        task: Task,
        *,
        sharpness_iters: int = 20,
        m_sharpness_batches: int = 0,
        m_sharpness_batch_size: int | None = None,
        m_sharpness_rho: float = 0.05,
    ) -> None:
        from memoptim.lab.diagnostics import DistanceTracker

        if m_sharpness_batches < 0:
            raise ValueError("m_sharpness_batches must be >= 0")
        self.model, self.optimizer, self.task = model, optimizer, task
        self.sharpness_iters = sharpness_iters
        self.m_sharpness_batches = m_sharpness_batches
        self.m_sharpness_batch_size = m_sharpness_batch_size or task.default_batch_size
        self.m_sharpness_rho = m_sharpness_rho
        self.tracker = DistanceTracker(p for p in model.parameters() if p.requires_grad)

    def state_dict(self) -> dict[str, Any]:
        """The initial parameters :math:`\\theta_0` (needed to resume the distance curve)."""
        return {"initial": [t.clone() for t in self.tracker.initial]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.initial = [t.clone() for t in state["initial"]]

    def __call__(self) -> dict[str, Any]:
        from memoptim.lab.diagnostics import joint_buffer_stats

        out: dict[str, Any] = {"distance": self.tracker.distance()}
        if self.sharpness_iters > 0:
            out["sharpness"] = self.sharpness()
        if self.m_sharpness_batches > 0:
            out["m_sharpness"] = self.m_sharpness()
        stats = joint_buffer_stats(self.optimizer)
        if stats is not None:
            out["buffer_variance"] = stats.variance
            out["buffer_agreement"] = stats.cosine
            out["buffer_filled"] = stats.filled
        return out

    def sharpness(self) -> float:
        """Top Hessian eigenvalue of the training loss on the task's fixed sharpness batch,
        in eval mode (batch-norm running statistics, no dropout)."""
        from memoptim.lab.sharpness import top_hessian_eigenvalue

        was_training = self.model.training
        self.model.eval()
        try:
            gen = torch.Generator().manual_seed(0)
            value = top_hessian_eigenvalue(
                self.task.sharpness_closure(self.model),
                self.model,
                iters=self.sharpness_iters,
                tol=1e-3,
                generator=gen,
            )
        except RuntimeError as exc:  # e.g. an op without double backward
            print(f"[memoptim] sharpness not computed: {exc}")
            value = math.nan
        finally:
            self.model.train(was_training)
        return value

    def _m_sharpness_closures(self) -> Iterator[Callable[[], torch.Tensor]]:
        """Loss closures of the first ``m_sharpness_batches`` mini-batches of one fixed batch
        order (the task's batches of unit 0 with seed 0: the same in every run and epoch).
        Yielded lazily: a task whose batches depend on the previous batch's loss evaluation
        (the language model's carried hidden state) gets it before the next batch is drawn."""
        batches = self.task.train_batches(self.model, 0, 1, 0, self.m_sharpness_batch_size)
        for i, batch in enumerate(batches):
            if i >= self.m_sharpness_batches:
                break
            yield lambda batch=batch: self.task.loss(self.model, batch)

    def m_sharpness(self) -> float:
        """m-sharpness (paper eq. 15, Foret et al. 2021) of the training loss, in eval mode
        (batch-norm running statistics, no dropout): the mean over the fixed mini-batches of
        :meth:`_m_sharpness_closures` of :math:`L_M(\\theta + \\epsilon) - L_M(\\theta)` with
        :math:`\\epsilon = r\\, g_M / \\|g_M\\|` (one ascent step, SAM's first-order solution of
        the inner maximisation).  The parameters are restored exactly; gradients untouched."""
        from memoptim.lab.sharpness import m_sharpness

        was_training = self.model.training
        self.model.eval()
        try:
            value = m_sharpness(
                self.model,
                self._m_sharpness_closures(),
                rho=self.m_sharpness_rho,
                generator=torch.Generator().manual_seed(0),
            )
        except RuntimeError as exc:
            print(f"[memoptim] m-sharpness not computed: {exc}")
            value = math.nan
        finally:
            self.model.train(was_training)
        return value
