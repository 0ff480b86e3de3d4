r"""A small decoder-only transformer (GPT) for the ``gpt-brown`` language-modelling task.

:class:`GPT` follows GPT-2 (Radford et al. 2019) at CPU scale: token + learned position
embeddings, ``n_layers`` pre-LayerNorm blocks, a final LayerNorm and an output layer tied to the
token embedding (Press & Wolf 2017).  One block, for ``x`` of shape ``(B, T, d)``:

.. math::
    x &\leftarrow x + \mathrm{Drop}(W_o\,\mathrm{Attn}(\mathrm{LN}_1(x))) \\
    x &\leftarrow x + \mathrm{Drop}(W_2\,\mathrm{GELU}(W_1\,\mathrm{LN}_2(x)))

with causal multi-head self-attention (``n_heads`` heads of width ``d / n_heads``,
:math:`\mathrm{softmax}(QK^\top/\sqrt{d_h} + M)V`, :math:`M` masking future positions) and an MLP
of width ``4 d``.  The logits are :math:`\mathrm{LN}_f(x) E^\top` (:math:`E` the token embedding,
no output bias).  Initialisation as GPT-2: normal weights of standard deviation 0.02, the two
projections back into the residual stream scaled by :math:`1/\sqrt{2 L}`, zero biases.

With the defaults (vocabulary 10,000, ``d_model`` 128, 4 heads, 2 layers, context 64) it has
1,684,992 parameters, 1.28 M of them in the tied embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position ``t`` attends to positions ``<= t``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)
                   for z in self.qkv(x).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """One pre-LayerNorm transformer block (see the module docstring)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.proj(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    """Decoder-only transformer language model with a tied embedding.

    ``forward(tokens (B, T))`` with ``T <= context`` returns the logits ``(B, T, vocab_size)`` of
    the next token at every position.
    """

    def __init__(self, vocab_size: int, d_model: int = 128, n_heads: int = 4, n_layers: int = 2,
                 context: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.context = context
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(context, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(self._init)
        for block in self.blocks:  # the residual projections, as GPT-2
            for proj in (block.attn.proj, block.proj):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        t = tokens.shape[1]
        if t > self.context:
            raise ValueError(f"sequence of {t} tokens is longer than the context {self.context}")
        pos = torch.arange(t, device=tokens.device)
        x = self.drop(self.embedding(tokens) + self.position(pos))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.embedding.weight.t()
