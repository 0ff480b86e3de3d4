"""Real-data benchmarks (issue 5): models, tasks, the training loop, sweeps and reports.

* :mod:`~memoptim.experiments.tasks` -- Fashion-MNIST, Brown LM, split / permuted task streams;
* :mod:`~memoptim.experiments.models` -- small residual CNN, one-layer LSTM language model;
* :mod:`~memoptim.experiments.train` -- :func:`train`: metrics.jsonl, checkpoints, resume,
  the paper's LR schedule, any :func:`memoptim.create_optimizer` name (SAM via closures);
* :mod:`~memoptim.experiments.diagnostics` -- sharpness / distance / buffer statistics per epoch;
* :mod:`~memoptim.experiments.sweep` -- Optuna grid sweeps (SQLite, resumable, multi-worker);
* :mod:`~memoptim.experiments.report` -- Tables 2-4 analogues with the paper's numbers, PNGs.

Command line: ``memoptim train``, ``memoptim sweep``, ``memoptim report``; the default study is
``scripts/run_study.sh`` (datasets: ``scripts/get_data.sh``).

(The submodules are not re-exported here so that ``memoptim.experiments.train`` stays the
module; use ``from memoptim.experiments.train import train``.)
"""
