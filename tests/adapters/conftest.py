"""A small converted MACE-MP medium model (8 channels) on Al, Ni, Cu, in float64."""

from __future__ import annotations

import pytest
from ase.build import bulk
from conftest import converted_bundle

pytest.importorskip("torch")
pytest.importorskip("mace")

ELEMENTS = (13, 28, 29)


@pytest.fixture(scope="session")
def bundle():
    return converted_bundle("mp0a-medium", ELEMENTS, seed=5)


@pytest.fixture(scope="session")
def alloy():
    """A sheared, rattled 8-atom Al/Ni/Cu cell."""
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.numbers = [13, 28, 29, 29, 13, 28, 28, 29]
    atoms.set_cell(atoms.cell.array + [[0.0, 0.2, 0.1], [0.3, 0.0, 0.0], [0.0, -0.2, 0.0]], scale_atoms=True)
    atoms.rattle(0.1, seed=4)
    return atoms


@pytest.fixture(scope="session")
def potential(bundle):
    """One compiled float64 potential of ``bundle``; `evaluate` swaps its params."""
    from equitrain_jax.potential import Potential

    return Potential(bundle, dtype="float64")


def evaluate(potential, params, atoms) -> dict:
    """Energy (eV), forces (eV/Å), stress (eV/Å³) of ``atoms`` with ``params`` in ``potential``'s model."""
    potential.variables = {**potential.variables, "params": params}
    (out,) = potential.evaluate([atoms])
    return out
