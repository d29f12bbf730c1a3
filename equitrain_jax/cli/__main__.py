"""``python -m equitrain_jax.cli``: the same as the ``equitrain-jax`` command."""

from equitrain_jax.cli import main

main()
