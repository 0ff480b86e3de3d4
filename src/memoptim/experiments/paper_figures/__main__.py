"""``python -m memoptim.experiments.paper_figures``: see :func:`~.command_line.main`."""

from memoptim.experiments.paper_figures.command_line import main

if __name__ == "__main__":  # importing this module (doc tools, test collection) must not run the job
    raise SystemExit(main())
