"""Exploration lab: toy surfaces, sharpness, buffer diagnostics, convergence analysis, plots.

Submodules (import them directly; the heavy optional dependencies are imported
lazily inside the functions that need them):

* :mod:`memoptim.lab.surfaces` -- the paper's toy loss surfaces (eqs. 9, 11-14), batched;
* :mod:`memoptim.lab.sharpness` -- top Hessian eigenvalue, Hessian trace, m-sharpness (eq. 15);
* :mod:`memoptim.lab.diagnostics` -- buffer variance / agreement / fill, distance travelled;
* :mod:`memoptim.lab.buffer_vectors` -- buffer items, buffer mean and new gradient / momentum
  per step, read from the optimizer state (gradient cancellation, Figs. 2, 11, 12);
* :mod:`memoptim.lab.buffer_dynamics` -- replacement rate, oldest-entry evictions, entry ages
  and key spread of the buffers in training (priority queue or sliding window?);
* :mod:`memoptim.lab.convergence` -- the section 3.2 analysis on quadratics (needs SciPy);
* :mod:`memoptim.lab.toy` -- batched, exactly independent toy runs of any registered optimizer;
* :mod:`memoptim.lab.plots` -- matplotlib figures (Agg backend);
* :mod:`memoptim.lab.reproduce` -- ``memoptim reproduce toy`` (a package: one module per group
  of experiments, the claims, the variants of Adam+CM, the report).
"""
