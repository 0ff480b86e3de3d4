"""Language modelling on the Brown corpus: what every such task shares (:class:`PerplexityTask`,
:func:`brown_streams`) and ``brown-lm`` (:class:`LanguageModelTask`, a 1-layer LSTM, validation
perplexity; paper analogue: PTB, Table 2).  The transformer on the same data is in :mod:`.gpt`.
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

from memoptim.data import brown as brown_data
from memoptim.experiments.models import LSTMLanguageModel
from memoptim.experiments.tasks.base import Task, _all_reduce_sums, _subset_head, eval_shard


def batchify(stream: np.ndarray | Tensor, batch_size: int) -> Tensor:
    """Cut the id stream into ``batch_size`` contiguous columns: shape ``(len // B, B)``
    (the remainder is dropped), column ``b`` holding the ``b``-th slice of the stream."""
    data = torch.as_tensor(stream, dtype=torch.long)
    n = len(data) // batch_size
    return data[: n * batch_size].view(batch_size, n).t().contiguous()


class PerplexityTask(Task):
    r"""A language-modelling task: metric ``val_perplexity``, :math:`\exp(\bar\ell)` with
    :math:`\bar\ell` the mean next-token cross-entropy over the validation stream (and
    ``test_perplexity`` where a test stream is held).  A subclass says how a stream is cut into
    evaluation batches (:meth:`_nll_sums`); evaluation under :func:`.base.sharded_evaluation`
    sums the ranks' shares."""

    metric = "val_perplexity"
    mode = "min"
    vocab_size: int
    val: Tensor | np.ndarray
    test: Tensor | np.ndarray | None

    def _nll_sums(self, model: nn.Module, stream: Tensor, shard: tuple[int, int] | None) -> tuple[float, int]:
        """(summed next-token NLL, token count) of this rank's share of ``stream``, in eval mode."""
        raise NotImplementedError

    @torch.no_grad()
    def perplexity(self, model: nn.Module, stream: Tensor | np.ndarray) -> tuple[float, float]:
        """(mean next-token NLL, perplexity) of ``stream`` (token ids) in eval mode."""
        was_training = model.training
        model.eval()
        shard = eval_shard()
        total, count = self._nll_sums(model, torch.as_tensor(stream, dtype=torch.long), shard)
        model.train(was_training)
        if shard is not None:
            total, count = _all_reduce_sums(total, count)
        nll = total / max(count, 1)
        return nll, math.exp(min(nll, 700.0))

    def evaluate(self, model: nn.Module, unit: int, epochs: int) -> dict[str, Any]:
        nll, ppl = self.perplexity(model, self.val)
        out: dict[str, Any] = {"val_loss": nll, "val_perplexity": ppl}
        if self.test is not None:
            out["test_perplexity"] = self.perplexity(model, self.test)[1]
        return out


class LanguageModelTask(PerplexityTask):
    """Word-level language modelling with :class:`LSTMLanguageModel`, truncated BPTT (``bptt``
    steps, hidden state carried across chunks within an epoch); the validation stream is read
    whole, in ``eval_batch_size`` contiguous columns."""

    name = "brown-lm"
    default_batch_size = 20
    clip_grad_norm = 1.0

    def __init__(
        self,
        train: np.ndarray | Tensor,
        val: np.ndarray | Tensor,
        test: np.ndarray | Tensor | None,
        vocab_size: int,
        *,
        bptt: int = 35,
        embed_dim: int = 128,
        hidden_dim: int = 128,
        dropout: float = 0.2,
        eval_batch_size: int = 10,
    ) -> None:
        self.train, self.val, self.test = train, val, test
        self.vocab_size, self.bptt = vocab_size, bptt
        self.embed_dim, self.hidden_dim, self.dropout = embed_dim, hidden_dim, dropout
        self.eval_batch_size = eval_batch_size

    def build_model(self) -> nn.Module:
        return LSTMLanguageModel(self.vocab_size, self.embed_dim, self.hidden_dim, self.dropout)

    def num_batches(self, unit: int, epochs: int, batch_size: int) -> int | None:
        return math.ceil((len(self.train) // batch_size - 1) / self.bptt)

    def train_batches(
        self, model: nn.Module, unit: int, epochs: int, seed: int, batch_size: int,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[dict[str, Any]]:
        # Chunks in stream order (the standard PTB recipe); the hidden state is carried across
        # chunks and detached.  ``loss`` stores the new state in the batch dict; when the step
        # evaluates the closure twice (SAM) both evaluations start from the same state.
        # Data-parallel: each rank takes a contiguous share of the columns (its own streams).
        data = batchify(self.train, batch_size)
        if shard is not None:
            data = data.tensor_split(shard[1], dim=1)[shard[0]]
        hidden: tuple[Tensor, Tensor] | None = None
        for i in range(0, len(data) - 1, self.bptt):
            n = min(self.bptt, len(data) - 1 - i)
            batch = {"x": data[i : i + n], "y": data[i + 1 : i + 1 + n], "hidden": hidden}
            yield batch
            h, c = batch["hidden_out"]
            hidden = (h.detach(), c.detach())

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> Tensor:
        logits, hidden = model(batch["x"], batch["hidden"])
        batch.setdefault("hidden_out", hidden)  # state after the first (unperturbed) evaluation
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), batch["y"].reshape(-1))

    def batch_weight(self, batch: dict[str, Any]) -> int:
        return batch["y"].numel()

    def _nll_sums(self, model: nn.Module, stream: Tensor, shard: tuple[int, int] | None) -> tuple[float, int]:
        data = batchify(stream, self.eval_batch_size)
        if shard is not None:
            data = data.tensor_split(shard[1], dim=1)[shard[0]]
        hidden = None
        total, count = 0.0, 0
        for i in range(0, len(data) - 1 if data.shape[1] else 0, self.bptt):
            n = min(self.bptt, len(data) - 1 - i)
            logits, hidden = model(data[i : i + n], hidden)
            y = data[i + 1 : i + 1 + n].reshape(-1)
            total += float(F.cross_entropy(logits.reshape(-1, self.vocab_size), y, reduction="sum"))
            count += y.numel()
        return total, count

    def sharpness_closure(self, model: nn.Module) -> Callable[[], Tensor]:
        data = batchify(self.train, 20)[: self.bptt + 1]
        x, y = data[:-1], data[1:]

        def closure() -> Tensor:
            logits, _ = model(x)
            return F.cross_entropy(logits.reshape(-1, self.vocab_size), y.reshape(-1))

        return closure


def brown_streams(
    root: str | os.PathLike[str] | None = None,
    subset: int | None = None,
    verify: bool = True,
    eval_subset: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(train, val, test, vocab_size)`` of the Brown corpus: vocabulary 10k (built on the full
    training split), files split 80/10/10; ``subset`` keeps the first ``subset`` tokens of the
    training stream, ``eval_subset`` the first tokens of the validation and test streams."""
    c = brown_data.load_brown(root, verify=verify)
    s, e = _subset_head(len(c.train), subset), slice(None, eval_subset)
    return c.train[s], c.val[e], c.test[e], len(c.vocab)


def brown_lm_task(
    root: str | os.PathLike[str] | None = None,
    subset: int | None = None,
    verify: bool = True,
    eval_subset: int | None = None,
    **model_kw: Any,
) -> LanguageModelTask:
    """``brown-lm`` on :func:`brown_streams` (same arguments)."""
    return LanguageModelTask(*brown_streams(root, subset, verify, eval_subset), **model_kw)
