"""A small converted MACE-MP medium model (8 channels) on Al, Ni, Cu and EMT-labelled alloy cells."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from conftest import converted_bundle
from ase.calculators.emt import EMT

pytest.importorskip("torch")
pytest.importorskip("mace")

ELEMENTS = (13, 28, 29)


@pytest.fixture(scope="session")
def bundle():
    return converted_bundle("mp0a-medium", ELEMENTS, seed=1)


def emt_cells(count: int, seed: int) -> list:
    """Rattled, strained 4-atom fcc cells of random Al/Ni/Cu occupation with EMT labels
    attached as a finished calculator (energy eV, forces eV/Å, stress eV/Å³)."""
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.numbers = rng.choice(ELEMENTS, size=len(atoms))
        atoms.set_cell(atoms.cell * rng.uniform(0.98, 1.04), scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.get_stress()
        atoms.get_forces()
        cells.append(atoms)
    return cells
