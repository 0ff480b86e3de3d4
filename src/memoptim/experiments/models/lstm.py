"""The LSTM language model of ``brown-lm``.

:class:`LSTMLanguageModel` is the paper's PTB model (section 5.1: "a single-layer LSTM") at CPU
scale: embedding -> dropout -> 1-layer LSTM -> dropout -> linear decoder over the vocabulary,
trained with truncated back-propagation through time.  With ``embed_dim == hidden_dim`` the
decoder can share the embedding matrix (Press & Wolf 2017), off by default.
"""

from __future__ import annotations

from torch import Tensor, nn


class LSTMLanguageModel(nn.Module):
    """Word-level LSTM language model.

    ``forward(tokens (T, B), hidden)`` returns ``(logits (T, B, V), new_hidden)``; ``hidden`` is
    ``None`` (zeros) or the ``(h, c)`` pair from the previous chunk.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 128,
        hidden_dim: int = 128,
        dropout: float = 0.2,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers=1)
        self.decoder = nn.Linear(hidden_dim, vocab_size)
        if tie_weights:
            if embed_dim != hidden_dim:
                raise ValueError("tie_weights needs embed_dim == hidden_dim")
            self.decoder.weight = self.embedding.weight
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if not tie_weights:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(
        self, tokens: Tensor, hidden: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, new_hidden = self.lstm(self.drop(self.embedding(tokens)), hidden)
        return self.decoder(self.drop(out)), new_hidden
