"""Framework integrations of memoptim's optimizers.

Each submodule targets one framework and imports it; this package itself imports nothing, so
``import memoptim`` never pulls in an optional framework.

* :mod:`memoptim.integrations.transformers` -- Hugging Face Transformers' ``Trainer``
  (``pip install 'memoptim[transformers]'``).

PyTorch Lightning needs no code: ``configure_optimizers`` returns a memoptim optimizer, and SAM
runs under manual optimization (``docs/integrations.md``, ``tests/test_integration_lightning.py``).
"""
