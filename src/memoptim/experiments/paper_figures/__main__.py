"""``python -m memoptim.experiments.paper_figures``: see :func:`~.command_line.main`."""

from memoptim.experiments.paper_figures.command_line import main

raise SystemExit(main())
