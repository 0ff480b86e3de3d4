"""The base update rules, each written once (maths, state, hyperparameters, validation).

A rule knows nothing of critical buffers; :mod:`memoptim.optim.memory` composes it with a
memory mode.  Adding a rule: write a :class:`~memoptim.optim.rules.base.Rule` subclass in a file
of its own, then register the optimizers built from it in :mod:`memoptim.registry`.
"""

from memoptim.optim.rules.adam import ADAM, ADAM_V_FROM_DIRECTION, ADAMOMENTUM, AdamRule
from memoptim.optim.rules.base import NO_MEMORY, Collected, Hooks, Rule, step_tensor
from memoptim.optim.rules.lion import LION, LionRule
from memoptim.optim.rules.sgd import SGD, SGDRule

__all__ = ["ADAM", "ADAMOMENTUM", "ADAM_V_FROM_DIRECTION", "LION", "NO_MEMORY", "SGD", "AdamRule",
           "Collected", "Hooks", "LionRule", "Rule", "SGDRule", "step_tensor"]
