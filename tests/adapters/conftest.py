"""The Al/Ni/Cu model (seed 5), a cell and one compiled potential for the adapter tests; a tiny
Al/Ni/Cu MACE (`common.tiny_mace`, seed 2) for those that train."""

from __future__ import annotations

import pytest

from common import alloy_bundle, alloy_cell, tiny_mace


@pytest.fixture(scope="session")
def bundle():
    return alloy_bundle(seed=5)


@pytest.fixture(scope="session")
def alloy():
    return alloy_cell()


@pytest.fixture(scope="session")
def potential(bundle):
    """One compiled float64 potential of ``bundle``; `common.evaluate_with_params` swaps its params."""
    from equitrain_jax.potential import Potential

    return Potential(bundle, dtype="float64")


@pytest.fixture(scope="session")
def tiny():
    return tiny_mace((13, 28, 29), seed=2)
