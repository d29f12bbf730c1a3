"""Session fixtures; the shared helpers live in ``common``."""

from __future__ import annotations

import os

import pytest
from ase import Atoms

from common import structures

# The command line keeps compiled programs on disk (equitrain_jax.cli.enable_compilation_cache);
# the tests that call it in-process stay hermetic and write nothing to the user's cache.
os.environ.setdefault("EQUITRAIN_JAX_CACHE_DIR", "")


@pytest.fixture(scope="session")
def test_structures() -> dict[str, Atoms]:
    return structures()
