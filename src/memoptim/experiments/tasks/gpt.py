r"""Transformer language modelling: ``gpt-brown`` (:class:`GPTLanguageModelTask`).

The data and vocabulary of ``brown-lm`` (:func:`memoptim.experiments.tasks.brown_lm_task`), the
model a small decoder-only GPT (:class:`memoptim.experiments.models.GPT`: pre-LayerNorm, 2 layers,
``d_model`` 128, 4 heads, context 64, tied embedding, 1.68 M parameters), trained as
transformers are trained:

* decoupled weight decay 0.1 on the weight matrices, none on biases, norms and embeddings
  (:func:`memoptim.experiments.recipe.decay_groups`; a ``weight_decay`` hyperparameter replaces
  the 0.1);
* linear warm-up over 5% of the steps, then cosine decay to 10% of ``lr`` (the task's default
  schedule, ``"warmup-cosine"``, :func:`memoptim.experiments.recipe.warmup_cosine`);
* gradients clipped to total norm 1.0.

Batches: an epoch cuts the training stream into :math:`n = \lfloor (N - 1)/T \rfloor - 1`
blocks of :math:`T + 1` tokens (context :math:`T`, overlapping by one token: inputs and their
next-token targets) starting at a random offset in :math:`[0, T)`, and visits them in a random
order; offset and order are a pure function of ``(seed, epoch)``.  Metric ``val_perplexity``:
``exp`` of the mean next-token cross-entropy over the validation stream, cut into consecutive
blocks of :math:`T` predicted tokens (each block sees only its own past).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memoptim.experiments.models import GPT
from memoptim.experiments.recipe import decay_groups
from memoptim.experiments.tasks.base import _generator
from memoptim.experiments.tasks.language import PerplexityTask, brown_streams


class GPTLanguageModelTask(PerplexityTask):
    """Next-token prediction with :class:`~memoptim.experiments.models.GPT` (module docstring)."""

    name = "gpt-brown"
    default_batch_size = 16
    default_schedule = "warmup-cosine"
    clip_grad_norm = 1.0
    #: decoupled weight decay of the weight matrices unless the run sets ``weight_decay``
    weight_decay = 0.1

    def __init__(
        self,
        train: np.ndarray | Tensor,
        val: np.ndarray | Tensor,
        test: np.ndarray | Tensor | None,
        vocab_size: int,
        *,
        context: int = 64,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        dropout: float = 0.1,
        eval_batch_size: int = 64,
    ) -> None:
        self.train = torch.as_tensor(train, dtype=torch.long)
        self.val = torch.as_tensor(val, dtype=torch.long)
        self.test = None if test is None else torch.as_tensor(test, dtype=torch.long)
        self.vocab_size, self.context = vocab_size, context
        self.model_kw = {"d_model": d_model, "n_heads": n_heads, "n_layers": n_layers, "dropout": dropout}
        self.eval_batch_size = eval_batch_size
        if self.blocks < 1:
            raise ValueError(f"{len(self.train)} training tokens are too few for context {context}")

    @property
    def blocks(self) -> int:
        """Training blocks per epoch, :math:`\\lfloor (N - 1)/T \\rfloor - 1` (any offset fits)."""
        return (len(self.train) - 1) // self.context - 1

    def build_model(self) -> nn.Module:
        return GPT(self.vocab_size, context=self.context, **self.model_kw)

    def param_groups(self, model: nn.Module, weight_decay: float | None) -> Any:
        return decay_groups(model, self.weight_decay if weight_decay is None else float(weight_decay))

    def num_batches(self, unit: int, epochs: int, batch_size: int) -> int | None:
        return math.ceil(self.blocks / batch_size)

    def train_batches(
        self, model: nn.Module, unit: int, epochs: int, seed: int, batch_size: int,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        g = _generator(seed, unit)
        offset = int(torch.randint(0, self.context, (), generator=g))
        starts = offset + torch.randperm(self.blocks, generator=g) * self.context
        span = torch.arange(self.context + 1)
        for i in range(0, self.blocks, batch_size):
            s = starts[i : i + batch_size]
            if shard is not None:
                s = s.tensor_split(shard[1])[shard[0]]
            seq = self.train[s.unsqueeze(1) + span]
            yield seq[:, :-1], seq[:, 1:]

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return F.cross_entropy(model(x).reshape(-1, self.vocab_size), y.reshape(-1))

    def batch_weight(self, batch: tuple[Tensor, Tensor]) -> int:
        return batch[1].numel()

    def _nll_sums(self, model: nn.Module, stream: Tensor, shard: tuple[int, int] | None) -> tuple[float, int]:
        # Consecutive blocks of ``context`` predicted tokens, the last one shorter.
        t = self.context
        starts = torch.arange(0, max(len(stream) - 1, 0), t)
        if shard is not None:
            starts = starts.tensor_split(shard[1])[shard[0]]
        full = starts[starts + t + 1 <= len(stream)]
        total, count = 0.0, 0
        chunks = [full[i : i + self.eval_batch_size] for i in range(0, len(full), self.eval_batch_size)]
        chunks += [s.view(1) for s in starts[len(full):]]  # the short last block, if any
        for s in chunks:
            n = min(t, len(stream) - 1 - int(s[0]))
            seq = stream[s.unsqueeze(1) + torch.arange(n + 1)]
            logits = model(seq[:, :-1])
            total += float(F.cross_entropy(logits.reshape(-1, self.vocab_size), seq[:, 1:].reshape(-1),
                                           reduction="sum"))
            count += seq[:, 1:].numel()
        return total, count

    def sharpness_closure(self, model: nn.Module) -> Callable[[], Tensor]:
        seq = self.train[: 16 * self.context + 1]
        n = (len(seq) - 1) // self.context
        x = seq[: n * self.context].view(n, self.context)
        y = seq[1 : n * self.context + 1].view(n, self.context)
        return lambda: F.cross_entropy(model(x).reshape(-1, self.vocab_size), y.reshape(-1))


def gpt_brown_task(
    root: str | os.PathLike[str] | None = None,
    subset: int | None = None,
    verify: bool = True,
    eval_subset: int | None = None,
    **model_kw: Any,
) -> GPTLanguageModelTask:
    """``gpt-brown`` on the streams and vocabulary of ``brown-lm``
    (:func:`memoptim.experiments.tasks.language.brown_streams`, same arguments)."""
    return GPTLanguageModelTask(*brown_streams(root, subset, verify, eval_subset), **model_kw)
