"""memoptim: memory-augmented, exploration-promoting optimizers for PyTorch.

Optimizers (``torch.optim.Optimizer`` subclasses): :class:`AdamCM`, :class:`AdamCG`,
:class:`SGDCM`, :class:`SGDCG`, :class:`AdaMomentum`, :class:`Lion`, :class:`LionCG`,
:class:`LionCM`, and the :class:`SAM` wrapper.
:func:`create_optimizer` builds any of them (and the ``torch.optim`` baselines) by
the paper's name.  The critical buffer itself is :class:`memoptim.buffer.CriticalBuffer`.
"""

from memoptim.buffer import CriticalBuffer
from memoptim.optim import SAM, SGDCG, SGDCM, AdamCG, AdamCM, AdaMomentum, Lion, LionCG, LionCM
from memoptim.registry import OPTIMIZERS, available_optimizers, create_optimizer

__version__ = "0.1.0"

__all__ = [
    "OPTIMIZERS",
    "SAM",
    "SGDCG",
    "SGDCM",
    "AdaMomentum",
    "AdamCG",
    "AdamCM",
    "CriticalBuffer",
    "Lion",
    "LionCG",
    "LionCM",
    "__version__",
    "available_optimizers",
    "create_optimizer",
]
