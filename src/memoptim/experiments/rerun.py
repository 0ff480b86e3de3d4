"""Re-run a finished run directory from its recorded configuration and compare the results.

A run directory of :func:`memoptim.experiments.train.train` records everything that shapes the
run in ``config.json`` (task, optimizer, hyperparameters, epochs, seed, batch size, schedule,
subsets, diagnostics).  :func:`rerun` trains that configuration again into a fresh directory and
:func:`compare_runs` compares the two: every per-epoch metric of ``metrics.jsonl`` and every
value of ``summary.json`` must be equal, bit for bit (the JSON numbers are compared as parsed,
so a float that differs in its last bit is a difference); only wall-clock times
(:data:`TIMING_KEYS`) are ignored.

The study's runs took one torch thread and the multi-tensor path (``MEMOPTIM_NATIVE=0``), so
:func:`rerun` sets the same by default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Keys whose values are wall-clock times, which no two runs share.
TIMING_KEYS = frozenset({"time", "elapsed"})
#: Summary keys that restate the configuration (compared through ``config.json``'s equality).
_RESTATED = frozenset({"config", "resolved"})


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], where: str, skip: frozenset[str]) -> list[str]:
    out = []
    for key in sorted((set(a) | set(b)) - skip):
        if key not in a or key not in b:
            out.append(f"{where}: {key} only in the {'rerun' if key in b else 'original'}")
        elif a[key] != b[key]:
            out.append(f"{where}: {key} {a[key]!r} != {b[key]!r}")
    return out


def compare_runs(original: str | os.PathLike[str], again: str | os.PathLike[str]) -> list[str]:
    """The differences between two run directories (empty: identical apart from timings): the
    configuration, every epoch's metrics and the summary's values."""
    a, b = Path(original), Path(again)
    out = _diff(json.loads((a / "config.json").read_text()), json.loads((b / "config.json").read_text()),
                "config.json", frozenset({"resolved"}))
    ma, mb = _lines(a / "metrics.jsonl"), _lines(b / "metrics.jsonl")
    if len(ma) != len(mb):
        out.append(f"metrics.jsonl: {len(ma)} epochs != {len(mb)}")
    for i, (x, y) in enumerate(zip(ma, mb), start=1):
        out += _diff(x, y, f"metrics.jsonl epoch {i}", TIMING_KEYS)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    out += _diff(sa, sb, "summary.json", TIMING_KEYS | _RESTATED)
    return out


def rerun(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, threads: int = 1,
          native: bool = False, data_root: str | os.PathLike[str] | None = None,
          sharpness_iters: int = 20, verify_data: bool = True) -> list[str]:
    """Train ``run_dir``'s configuration again into ``out`` (which must hold no finished run) and
    return :func:`compare_runs`'s differences.

    Args:
        threads: torch intra-op threads (the study's: 1).
        native: allow the native CPU kernel (the study's runs took the multi-tensor path).
        data_root: dataset directory override.
        sharpness_iters: the sharpness diagnostic's budget, for runs with diagnostics (it is not
            recorded in ``config.json``; the study's Fashion-MNIST runs used 10).
        verify_data: verify the dataset checksums.
    """
    import torch

    from memoptim.experiments.train import train

    src, dst = Path(run_dir), Path(out)
    if not (src / "config.json").exists() or not (src / "summary.json").exists():
        raise FileNotFoundError(f"{src} is not a finished run directory (config.json and summary.json)")
    if (dst / "summary.json").exists() or (dst / "checkpoint.pt").exists():
        raise FileExistsError(f"{dst} already holds a run; give a fresh --out")
    c = json.loads((src / "config.json").read_text())
    before = (os.environ.get("MEMOPTIM_NATIVE"), torch.get_num_threads())
    try:  # the study's conditions, for this run only
        if not native:
            os.environ["MEMOPTIM_NATIVE"] = "0"
        torch.set_num_threads(threads)
        train(c["task"], c["optimizer"], c["hyperparameters"], int(c["epochs"]), int(c["seed"]), dst,
              batch_size=c.get("batch_size"), schedule=c.get("schedule", "auto"), subset=c.get("subset"),
              eval_subset=c.get("eval_subset"), diagnostics=bool(c.get("diagnostics", False)),
              sharpness_iters=sharpness_iters, data_root=data_root, verify_data=verify_data,
              keep_checkpoint=False)  # fmt: skip
    finally:
        if before[0] is None:
            os.environ.pop("MEMOPTIM_NATIVE", None)
        else:
            os.environ["MEMOPTIM_NATIVE"] = before[0]
        torch.set_num_threads(before[1])
    return compare_runs(src, dst)


__all__ = ["TIMING_KEYS", "compare_runs", "rerun"]
