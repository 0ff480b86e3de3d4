"""AdaMomentum (AdaM3): Adam whose second moment is built from the momentum."""

from __future__ import annotations

from torch import Tensor

from memoptim.optim.base import ParamsT
from memoptim.optim.driver import RuleOptimizer
from memoptim.optim.rules import ADAMOMENTUM


class AdaMomentum(RuleOptimizer):
    r"""AdaMomentum (Wang et al., "Rethinking Adam", arXiv 2106.11514; AdaM3, ICDM 2023).

    The second moment estimates the square of the *momentum* rather than of the
    gradient, with :math:`\epsilon` kept inside it (and stored) and none outside
    the square root -- the authors' published rule:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) m_t^2 + \epsilon \\
        \theta_t &= \theta_{t-1}(1-\mathrm{lr}\,wd) - \frac{\mathrm{lr}}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t}}

    Args:
        params: parameters or param-group dicts.
        lr: learning rate (default ``1e-3``).
        betas: :math:`(\beta_1, \beta_2)` in ``[0, 1)`` (default ``(0.9, 0.999)``).
        eps: :math:`\epsilon` added to :math:`v_t` every step (default ``1e-16``, the
            authors'; their CIFAR runs used ``1e-8`` with L2 weight decay).
        weight_decay: :math:`wd \ge 0` (default 0).
        amsgrad: use :math:`\max(v_{\max}, v_t)` (after adding :math:`\epsilon`).
        decoupled_weight_decay: ``True`` (default, as the authors' code): decoupled;
            ``False``: L2, :math:`g \leftarrow g + wd\,\theta`.
        maximize: maximise the objective.
        foreach: use the multi-tensor kernels (``None``: yes).
        fused: the native CPU kernel, else the ``torch.compile``-d rule (see :class:`memoptim.AdamCM`).
    """

    rule = ADAMOMENTUM

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        decoupled_weight_decay: bool = True,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)
