"""Paper artifacts on Fashion-MNIST that the real-data benchmarks lack: Figs. 9, 10, 19 and
Table 14 / Fig. 20 of Malviya et al. (TMLR 2024), at CPU scale.

Each artifact function runs its missing runs through :func:`memoptim.experiments.train.train`
(``resume=True``, checkpoints dropped once a run is finished) into
``<out>/<artifact>/<optimizer>/<config-slug>/seed<k>``, collects them, draws a PNG
(``<out>/<artifact>.png``) and returns a Markdown section: our numbers (every seed and the mean),
the paper's statement quoted beside them and a one-line verdict ("agrees", "does not agree" or
"inconclusive" with the reason).  A finished run (its ``summary.json`` exists) is never re-run, so
an interrupted invocation resumes where it stopped.

* :func:`~.fig9.fig9_buffer_sharpness` -- final sharpness (top Hessian eigenvalue) of Adam+CM for
  buffer sizes C in {1, 5, 20};
* :func:`~.fig10.fig10_batch_and_buffer` -- best validation accuracy of Adam+CM vs batch size and
  vs C, each point the best learning rate of a small grid (chosen on the mean over seeds);
* :func:`~.fig19.fig19_m_sharpness` -- m-sharpness (paper eq. 15, r = 0.05, m = the batch size)
  per epoch of Adam, Adam+CG, Adam+SAM and Adam+CM at lr 1e-4;
* :func:`~.table14.table14_lr_sharpness` -- Adam with lr in {1e-2, 1e-3, 1e-4}: best validation
  accuracy and sharpness per epoch;
* :func:`~.all_artifacts.run_all` -- the four, ``<out>/report.md`` and ``<out>/results.json``.

Verdicts (:mod:`.verdicts`) compare two configurations seed by seed (same seeds): a difference
counts only if every seed shows it and the mean difference exceeds the seed-to-seed standard
deviation (pooled over the two configurations); with one seed every verdict is "inconclusive".

Modules: :mod:`.scale` (task, run directories, the FULL / QUICK scales), :mod:`.runs` (training or
finding the runs, their cost), :mod:`.verdicts`, :mod:`.markdown` and :mod:`.plotting` (the
report's pieces), :mod:`.quotes` (the paper's statements), one module per artifact,
:mod:`.all_artifacts` (the report) and :mod:`.command_line`.

Command line::

    memoptim reproduce paper-figures --out results/benchmarks/paper-figures
    memoptim reproduce paper-figures --out runs/paper-figures-quick --quick  # smoke test
    python -m memoptim.experiments.paper_figures --out results/benchmarks/paper-figures  # the same
"""

from memoptim.experiments.paper_figures.all_artifacts import ARTIFACT_FUNCTIONS, run_all
from memoptim.experiments.paper_figures.command_line import main
from memoptim.experiments.paper_figures.fig9 import FIG9_BUFFERS, fig9_buffer_sharpness
from memoptim.experiments.paper_figures.fig10 import FIG10_BATCH, FIG10_BUFFER, fig10_batch_and_buffer
from memoptim.experiments.paper_figures.fig19 import FIG19_LR, FIG19_OPTIMIZERS, fig19_m_sharpness
from memoptim.experiments.paper_figures.markdown import markdown_table
from memoptim.experiments.paper_figures.quotes import PAPER
from memoptim.experiments.paper_figures.runs import COST, Run, Runner, config_slug
from memoptim.experiments.paper_figures.scale import (
    ARTIFACTS,
    FIG10_BATCHES,
    FIG10_BUFFERS,
    FULL,
    QUICK,
    TASK,
    Scale,
)
from memoptim.experiments.paper_figures.table14 import TABLE14_LRS, table14_lr_sharpness
from memoptim.experiments.paper_figures.verdicts import compare, mean, verdict_best, verdict_order

__all__ = [
    "ARTIFACTS", "ARTIFACT_FUNCTIONS", "COST", "FIG9_BUFFERS", "FIG10_BATCH", "FIG10_BATCHES",
    "FIG10_BUFFER", "FIG10_BUFFERS", "FIG19_LR", "FIG19_OPTIMIZERS", "FULL", "PAPER", "QUICK",
    "TABLE14_LRS", "TASK", "Run", "Runner", "Scale", "compare", "config_slug",
    "fig9_buffer_sharpness", "fig10_batch_and_buffer", "fig19_m_sharpness", "main",
    "markdown_table", "mean", "run_all", "table14_lr_sharpness", "verdict_best", "verdict_order",
]  # fmt: skip
