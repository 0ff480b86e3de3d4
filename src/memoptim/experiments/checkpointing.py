"""The files of a training run's directory and how they are written so that a run can resume.

:func:`memoptim.experiments.train.train` writes ``config.json``, ``metrics.jsonl``,
``checkpoint.pt`` and ``summary.json`` (see that module for their contents).  Whole files are
written atomically (a temporary file, ``fsync``, then ``os.replace``), so a run killed while
writing leaves the previous version intact; metrics lines are appended and synced one by one, and
:func:`read_metrics` ignores an incomplete trailing line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
FORMAT_VERSION = 1


def json_safe(value: Any) -> Any:
    """JSON-safe copy: non-finite floats -> None, tensors -> Python numbers, tuples -> lists."""
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def atomic_write_bytes(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Replace ``path`` by what ``write`` writes to an open binary file, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text``, atomically."""
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def append_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` to the JSON-lines file ``path`` and sync it to disk."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The metrics lines of a run directory (an incomplete trailing line is ignored)."""
    path = Path(out_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


class CheckpointError(ValueError):
    """A run's checkpoint cannot be read; the message names the file and how to start over."""


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save`` of ``state`` to ``path``, atomically."""
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` of a run checkpoint, or :class:`CheckpointError` if it is unreadable.

    Checkpoints are written atomically, so a killed run leaves its previous one intact; an
    unreadable one was damaged afterwards (a truncated copy, a full disk)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        raise CheckpointError(
            f"cannot resume from {path}: the checkpoint is unreadable ({type(exc).__name__}); delete it "
            f"to start this run over, or choose another output directory"
        ) from exc
    if not isinstance(checkpoint, dict) or "config" not in checkpoint:
        raise CheckpointError(f"cannot resume from {path}: it is not a memoptim run checkpoint; delete "
                              "it to start this run over, or choose another output directory")
    return checkpoint
