"""Running and finding the runs of the artifacts: one directory per run,
``<out>/<artifact>/<optimizer>/<config-slug>/seed<k>``, trained through
:func:`memoptim.experiments.train.train` unless its ``summary.json`` exists, with the CPU / wall
seconds it took kept in ``cost.json`` beside it."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memoptim.experiments.paper_figures.scale import ARTIFACTS, TASK, Scale, fmt
from memoptim.experiments.tasks import Task, build_task
from memoptim.experiments.train import SUMMARY, read_metrics, train

COST = "cost.json"


def config_slug(batch_size: int, hyperparameters: Mapping[str, Any]) -> str:
    """Directory name of a configuration, e.g. ``bs64-C5-lr0.001`` (``C`` = ``buffer_size``)."""
    short = {"buffer_size": "C"}
    parts = [f"bs{batch_size}"]
    for k in sorted(hyperparameters):
        v = hyperparameters[k]
        parts.append(f"{short.get(k, k)}{fmt(v) if isinstance(v, float) else v}")
    return "-".join(parts)



@dataclass
class Run:
    """One finished run: its seed, metrics lines and summary."""

    seed: int
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]

    @property
    def best_accuracy(self) -> float:
        """Best validation accuracy (%), NaN if none."""
        v = self.summary.get("best_val_accuracy")
        return math.nan if v is None else float(v)

    def curve(self, key: str) -> list[float]:
        """The per-epoch values of a metrics key (NaN where missing)."""
        return [math.nan if m.get(key) is None else float(m[key]) for m in self.metrics]

    def final(self, key: str) -> float:
        """The last epoch's value of a metrics key (NaN if missing)."""
        c = self.curve(key)
        return c[-1] if c else math.nan


class Runner:
    """Runs (or finds) the runs of the artifacts; builds each task subset once."""

    def __init__(
        self,
        out: str | os.PathLike[str],
        scale: Scale,
        *,
        progress: bool = True,
        data_root: str | os.PathLike[str] | None = None,
        verify_data: bool = True,
    ) -> None:
        self.out, self.scale, self.progress = Path(out), scale, progress
        self.data_root, self.verify_data = data_root, verify_data
        self._task: Task | None = None
        self.trained = 0
        self.skipped = 0

    def log(self, message: str) -> None:
        """Print a ``[paper-figures]`` line on stdout (unless ``progress`` is off)."""
        if self.progress:
            print(f"[paper-figures] {message}", flush=True)

    def task(self) -> Task:
        """The Fashion-MNIST subset of the scale (built on first use, then shared by every run)."""
        if self._task is None:
            s = self.scale
            self._task = build_task(TASK, subset=s.subset, eval_subset=s.eval_subset,
                                    data_root=self.data_root, verify=self.verify_data)  # fmt: skip
        return self._task

    def run(
        self,
        artifact: str,
        optimizer: str,
        hyperparameters: Mapping[str, Any],
        batch_size: int,
        *,
        sharpness_iters: int = 0,
        m_sharpness_batches: int = 0,
    ) -> list[Run]:
        """Every seed of one configuration (trained now unless its ``summary.json`` exists)."""
        s = self.scale
        slug = config_slug(batch_size, hyperparameters)
        runs = []
        for seed in s.seeds_of(artifact):
            run_dir = self.out / ARTIFACTS[artifact] / optimizer / slug / f"seed{seed}"
            if not (run_dir / SUMMARY).exists():
                c0, w0 = time.process_time(), time.perf_counter()
                train(self.task(), optimizer, dict(hyperparameters), s.epochs, seed, run_dir,
                      resume=True, batch_size=batch_size, subset=s.subset,
                      eval_subset=s.eval_subset,
                      diagnostics=bool(sharpness_iters or m_sharpness_batches),
                      sharpness_iters=sharpness_iters, m_sharpness_batches=m_sharpness_batches,
                      keep_checkpoint=False)  # fmt: skip
                cost = add_cost(run_dir, time.process_time() - c0, time.perf_counter() - w0)
                self.trained += 1
                self.log(f"{artifact} {optimizer} {slug} seed{seed}: trained "
                         f"({cost['cpu_seconds']:.0f} s CPU)")  # fmt: skip
            else:
                self.skipped += 1
            summary = json.loads((run_dir / SUMMARY).read_text())
            runs.append(Run(seed, read_metrics(run_dir), summary))
        return runs

    def cost(self) -> dict[str, float]:
        """Total CPU / wall seconds of every run under ``out`` (from their ``cost.json``)."""
        cpu = wall = 0.0
        n = 0
        for path in self.out.glob(f"*/*/*/seed*/{COST}"):
            c = json.loads(path.read_text())
            cpu, wall, n = cpu + c["cpu_seconds"], wall + c["wall_seconds"], n + 1
        return {"runs": n, "cpu_seconds": cpu, "wall_seconds": wall}


def add_cost(run_dir: Path, cpu: float, wall: float) -> dict[str, float]:
    """Add this invocation's CPU / wall seconds to the run's ``cost.json`` (kept across resumes)."""
    path = run_dir / COST
    old = json.loads(path.read_text()) if path.exists() else {"cpu_seconds": 0.0, "wall_seconds": 0.0}
    new = {"cpu_seconds": old["cpu_seconds"] + cpu, "wall_seconds": old["wall_seconds"] + wall}
    path.write_text(json.dumps(new) + "\n")
    return new

