"""Per-epoch training diagnostics (paper Fig. 8 analogue): sharpness, distance travelled and the
critical buffer's variance / agreement.

Thin glue over the exploration lab: :func:`memoptim.lab.sharpness.top_hessian_eigenvalue`
(sharpness = largest Hessian eigenvalue :math:`h_{\\max}` of the training loss on a fixed batch,
by power iteration on Hessian-vector products), :class:`memoptim.lab.diagnostics.DistanceTracker`
(:math:`\\|\\theta_t - \\theta_0\\|_2`) and :func:`memoptim.lab.diagnostics.joint_buffer_stats`
(buffer variance and the mean cosine similarity between the highest-priority item and the other
items, the paper's "agreement").  Everything is computed without touching the global RNG, the
gradients or the model's train/eval mode, so switching diagnostics on does not change training.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from memoptim.experiments.tasks import Task


class TrainingDiagnostics:
    """Compute the diagnostics of ``model`` / ``optimizer`` at the end of every epoch.

    Args:
        sharpness_iters: power-iteration budget (HVPs) for the top Hessian eigenvalue;
            0 disables sharpness (the costly part: one double-backward pass per iteration).
    """

    def __init__(
        self, model: nn.Module, optimizer: Any, task: Task, *, sharpness_iters: int = 20
    ) -> None:
        from memoptim.lab.diagnostics import DistanceTracker

        self.model, self.optimizer, self.task = model, optimizer, task
        self.sharpness_iters = sharpness_iters
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
