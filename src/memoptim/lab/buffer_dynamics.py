r"""Buffer dynamics in real training: is the critical buffer a priority queue or a sliding window?

:class:`BufferDynamics` observes a memory optimizer from outside (it only reads
``optimizer.state`` after every step) and tracks, per buffer, the step at which each slot's entry
was stored.  Time is the tensor's own step count ``state["step"]`` (a tensor without a gradient
in a step is not offered anything and its buffer does not age).  Pooled over all buffers and all
observed steps, a *full step* is a buffer's step that began with every slot filled; over full
steps:

* ``buffer_replacement_rate`` -- the share of full steps on which the offer replaced an entry
  (the buffer's ``critical_replacements`` count moved);
* ``buffer_oldest_share`` -- the share of those replacements that evicted the *oldest* entry
  (the one stored longest ago); a FIFO buffer gives 1;
* ``buffer_mean_age`` -- the mean age :math:`s - s_j` of the entries after the step
  (:math:`s` the step, :math:`s_j` the step at which slot :math:`j`'s entry was stored, 0 for
  this step's); ``buffer_fifo_age`` is what a FIFO window of the same capacity gives,
  :math:`(C - 1)/2` (ages :math:`0, 1, ..., C - 1`);
* ``buffer_mean_lifetime`` -- the mean of :math:`s - s_j` over evicted entries (how many steps
  an entry stayed); ``buffer_fifo_lifetime`` is a FIFO window's, :math:`C`.  With a replacement on
  every step any policy averages :math:`C` (one entry in and one out per step); it tells
  policies apart when the replacement rate is below 1;
* ``buffer_key_cv`` and ``buffer_key_ratio`` -- the spread of the entries' keys as offered (the
  gradient norms, before any decay: a stored key divided by :math:`\lambda^{s - s_j + 1}`) after
  the step: the coefficient of variation :math:`\sigma/\mu` (population :math:`\sigma`) and
  :math:`\max/\min`, averaged over full steps (the ratio over those with :math:`\min > 0`).
  Small values mean the decay, not the gradient norm, decides which entry goes;
* ``buffer_full_steps`` -- the number of full steps observed (buffers times steps).

The values are over the run so far (a run's last metrics line is the whole run).  A replaced slot
is the one whose key is not the previous key times :math:`\lambda`; an entry whose storing step
is unknown (a run resumed from a checkpoint written without this observer) is left out of the
age, lifetime and oldest-eviction statistics until it is replaced.  Reading the keys copies them
to the host, once per buffer and step: a diagnostic's cost, never the optimizer's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["BufferDynamics"]

_COUNTS = ("full_steps", "replacements", "known_replacements", "oldest", "age_sum", "age_n", "fifo_age_sum",
           "lifetime_sum", "evictions", "fifo_lifetime_sum", "spread_n", "cv_sum", "ratio_sum", "ratio_n")


@dataclass
class _Track:
    """One buffer as last observed: its keys (a copy), the step each slot's entry was stored at
    and its key as offered (``None``: free or unknown), its replacement count and its step count."""

    keys: Tensor
    born: list[int | None]
    offered: list[float | None]
    replacements: int
    step: int


@dataclass
class BufferDynamics:
    """Observer of the critical buffers of ``optimizer`` (see the module docstring).

    Call :meth:`observe` after every ``optimizer.step()``; :meth:`metrics` gives the statistics;
    :meth:`state_dict` / :meth:`load_state_dict` carry them across a checkpoint.
    """

    optimizer: Any
    counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_COUNTS, 0))
    tracks: dict[int, _Track] = field(default_factory=dict)

    @staticmethod
    def applies(optimizer: Any) -> bool:
        """Whether ``optimizer`` has critical buffers to observe (a memory optimizer, also under SAM)."""
        return any("buffer_size" in g and g.get("memory", True) for g in optimizer.param_groups)

    def _buffers(self) -> list[tuple[int, dict[str, Any], float]]:
        """``(index, state, decay)`` of every parameter holding a buffer (index: position in the
        optimizer's parameter order, which a checkpoint keeps)."""
        out, i = [], 0
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                state = self.optimizer.state.get(p)
                if state is not None and "critical_keys" in state:
                    out.append((i, state, float(group["decay"])))
                i += 1
        return out

    def observe(self) -> None:
        """Record the step just taken: compare every buffer with its last observation."""
        seen = set()
        for i, state, decay in self._buffers():
            seen.add(i)
            keys, track = state["critical_keys"], self.tracks.get(i)
            step = int(state["step"]) if "step" in state else (track.step + 1 if track else 1)
            if track is None:
                if step > 1:  # attached late (resumed without a track): storing steps unknown
                    self.tracks[i] = _Track(keys.clone(), [None] * keys.numel(), [None] * keys.numel(),
                                            int(state["critical_replacements"]), step)
                    continue
                track = _Track(torch.full_like(keys, -math.inf), [None] * keys.numel(), [None] * keys.numel(),
                               0, 0)
            if step != track.step:  # else: no gradient, no offer this step
                self.tracks[i] = self._advance(track, state, decay, step)
        for i in set(self.tracks) - seen:  # memory switched off: the buffer is gone
            del self.tracks[i]

    def _advance(self, track: _Track, state: dict[str, Any], decay: float, step: int) -> _Track:
        keys, c = state["critical_keys"], self.counts
        changed = [j for j, x in enumerate((keys != track.keys * decay).tolist()) if x]
        replacements = int(state["critical_replacements"])
        born, offered, now = list(track.born), list(track.offered), keys.tolist()
        full = bool(torch.isfinite(track.keys).all())
        if full:
            c["full_steps"] += 1
            if replacements > track.replacements and changed:
                c["replacements"] += 1
                j = changed[0]
                if None not in born:
                    c["known_replacements"] += 1
                    c["oldest"] += born[j] == min(born)  # type: ignore[type-var]
                    c["lifetime_sum"] += step - born[j]  # type: ignore[operator]
                    c["evictions"] += 1
                    c["fifo_lifetime_sum"] += len(born)
        for j in changed:
            born[j], offered[j] = step, now[j] / decay  # a key is decayed once in the step storing it
        if full:
            self._spread(offered, born, step)
        return _Track(keys.clone(), born, offered, replacements, step)

    def _spread(self, offered: list[float | None], born: list[int | None], step: int) -> None:
        """Entry ages and the spread of the offered keys of a full buffer after its step."""
        c, n = self.counts, len(born)
        if None not in born:
            c["age_sum"] += sum(step - b for b in born)  # type: ignore[operator]
            c["age_n"] += n
            c["fifo_age_sum"] += n * (n - 1) / 2
        if None in offered:
            return
        keys: list[float] = offered  # type: ignore[assignment]
        c["spread_n"] += 1
        mean = sum(keys) / n
        if mean > 0:
            c["cv_sum"] += math.sqrt(sum((k - mean) ** 2 for k in keys) / n) / mean
        if min(keys) > 0:
            c["ratio_sum"] += max(keys) / min(keys)
            c["ratio_n"] += 1

    def metrics(self) -> dict[str, float | int | None]:
        """The statistics over the run so far (``None`` where nothing was observed yet)."""
        c = self.counts

        def ratio(a: str, b: str) -> float | None:
            return c[a] / c[b] if c[b] else None

        return {
            "buffer_full_steps": int(c["full_steps"]),
            "buffer_replacement_rate": ratio("replacements", "full_steps"),
            "buffer_oldest_share": ratio("oldest", "known_replacements"),
            "buffer_mean_age": ratio("age_sum", "age_n"),
            "buffer_fifo_age": ratio("fifo_age_sum", "age_n"),
            "buffer_mean_lifetime": ratio("lifetime_sum", "evictions"),
            "buffer_fifo_lifetime": ratio("fifo_lifetime_sum", "evictions"),
            "buffer_key_cv": ratio("cv_sum", "spread_n"),
            "buffer_key_ratio": ratio("ratio_sum", "ratio_n"),
        }

    def state_dict(self) -> dict[str, Any]:
        """The counts and every buffer's track (plain tensors, numbers and lists)."""
        return {"counts": dict(self.counts),
                "tracks": {i: {"keys": t.keys.clone(), "born": [-1 if b is None else b for b in t.born],
                               "offered": [math.nan if k is None else k for k in t.offered],
                               "replacements": t.replacements, "step": t.step}
                           for i, t in self.tracks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = {**dict.fromkeys(_COUNTS, 0), **state["counts"]}
        self.tracks = {int(i): _Track(t["keys"].clone(), [None if b < 0 else int(b) for b in t["born"]],
                                      [None if math.isnan(k) else float(k)
                                       for k in t.get("offered", [math.nan] * len(t["born"]))],
                                      int(t["replacements"]), int(t["step"]))
                       for i, t in state["tracks"].items()}
