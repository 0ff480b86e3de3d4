"""Optimizer classes (thin) and their functional update rules (:mod:`memoptim.optim.functional`)."""

from memoptim.optim.adam import AdamCG, AdamCM
from memoptim.optim.adamomentum import AdaMomentum
from memoptim.optim.base import BaseOptimizer, MemoryOptimizer
from memoptim.optim.sam import SAM
from memoptim.optim.sgd import SGDCG, SGDCM

__all__ = ["SAM", "SGDCG", "SGDCM", "AdaMomentum", "AdamCG", "AdamCM", "BaseOptimizer",
           "MemoryOptimizer"]
