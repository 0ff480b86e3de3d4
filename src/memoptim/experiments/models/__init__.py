"""CPU-sized models for the real-data benchmarks, one module each.

* :class:`SmallResNet` (:mod:`.resnet`) -- the residual CNN of the image tasks;
* :class:`LSTMLanguageModel` (:mod:`.lstm`) -- the one-layer LSTM of ``brown-lm``;
* :class:`GPT` (:mod:`.gpt`) -- the small decoder-only transformer of ``gpt-brown``.
"""

from memoptim.experiments.models.gpt import GPT
from memoptim.experiments.models.lstm import LSTMLanguageModel
from memoptim.experiments.models.resnet import BasicBlock, SmallResNet

__all__ = ["GPT", "BasicBlock", "LSTMLanguageModel", "SmallResNet"]
