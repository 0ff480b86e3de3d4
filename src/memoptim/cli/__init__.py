"""Command-line interface: ``memoptim <command>`` / ``python -m memoptim <command>``."""
