r"""``memoptim reproduce toy``: the paper's sections 3.2 and 4 (and appendices A.1-A.3) in one run.

Experiments (paper numbering), all with the appendix's settings unless noted:

* **Table 1** -- final loss and sharpness on log-Goldstein-Price (eq. 12) and Levy (eq. 13);
* **Table 5** -- Adam+CG / Adam+CM with (C, lambda) in {(5, 0.7), (5, 0.99), (20, 0.99)} on Levy;
* **Figs. 4 / 16** -- Ackley (eq. 11) loss curves with and without the LR drop, Fig. 8-style
  buffer diagnostics; **Figs. 1, 13, 14** -- trajectories;
* **Figs. 2, 11, 12** -- buffer vectors (items, buffer mean, new gradient / momentum) of Adam+CG
  and Adam+CM on Ackley, Ackley+Rosenbrock (eq. 14) and Goldstein-Price, with the
  cancellation measurements (:mod:`~memoptim.lab.reproduce.cancellation`);
* **Figs. 5, 6, 7, 18** -- the sharp/flat family eq. 9 (:mod:`~memoptim.lab.reproduce.escape`);
* **Fig. 3** -- optimal worst-case rates of momentum vs critical momenta (C = 5);
* **Fig. 15** (Adam+MEG) is not rerun: the paper does not state its update rule
  (:data:`~memoptim.lab.reproduce.paper.MEG`).

Every checked claim (:mod:`~memoptim.lab.reproduce.claims`) that involves Adam+CM is also
evaluated under variants (:mod:`~memoptim.lab.reproduce.variants`): the authors' semantics,
memory off, v from g, and Adam at 3x / 10x its learning rate.

Modules: :mod:`.common` (settings, hyperparameter tables, helpers), :mod:`.paper` (the
paper's numbers and statements, deviations), :mod:`.tables`, :mod:`.cancellation`,
:mod:`.escape`, :mod:`.rates` (experiments), :mod:`.claims`, :mod:`.variants`,
:mod:`.report` (markdown / HTML), :mod:`.figures`, :mod:`.run` (:func:`reproduce_toy`).
"""

from memoptim.lab.reproduce.common import EQ9_DEFAULTS, START_BOXES, TABLE11, Settings
from memoptim.lab.reproduce.paper import MEG, PAPER
from memoptim.lab.reproduce.run import reproduce_toy

__all__ = ["EQ9_DEFAULTS", "MEG", "PAPER", "START_BOXES", "TABLE11", "Settings", "reproduce_toy"]
