"""Optimizer classes (thin: a base rule, a memory mode, defaults) and what they are built from.

* :mod:`memoptim.optim.rules`: the base update rules, each written once;
* :mod:`memoptim.optim.memory`: the memory modes and their composition with a rule;
* :mod:`memoptim.optim.functional`: the composed kernels, by name;
* :mod:`memoptim.optim.backends` and :mod:`memoptim.optim.native`: the execution paths;
* :mod:`memoptim.optim.driver`: the step protocol every class runs;
* :mod:`memoptim.optim.keys`: the buffers' priority keys.
"""

from memoptim.optim.adam import AdamCG, AdamCM
from memoptim.optim.adamomentum import AdaMomentum
from memoptim.optim.base import BaseOptimizer
from memoptim.optim.driver import MemoryOptimizer, RuleOptimizer
from memoptim.optim.lion import Lion, LionCG, LionCM
from memoptim.optim.sam import SAM
from memoptim.optim.sgd import SGDCG, SGDCM

__all__ = ["SAM", "SGDCG", "SGDCM", "AdaMomentum", "AdamCG", "AdamCM", "BaseOptimizer", "Lion", "LionCG",
           "LionCM", "MemoryOptimizer", "RuleOptimizer"]
