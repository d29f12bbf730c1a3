"""Phonopy finite-displacement references with forces from ASE calculators (EMT or our model)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms
from ase.build import bulk
from phonopy import Phonopy

from equitrain_jax.phonons.bridge import ase_to_phonopy, phonopy_to_ase


def finite_displacement_phonopy(
    unitcell: Atoms,
    supercell_matrix,
    calculator: Callable[[], object],
    distance: float = 0.01,
    is_plusminus="auto",
    primitive_matrix="auto",
) -> Phonopy:
    """Phonopy's own workflow: its displacements, forces from ``calculator()`` (eV/Å), and its
    full force constants produced and symmetrised as ``phonopy.load`` does."""
    phonon = Phonopy(ase_to_phonopy(unitcell), supercell_matrix=supercell_matrix, primitive_matrix=primitive_matrix)
    phonon.generate_displacements(distance=distance, is_plusminus=is_plusminus)
    forces = []
    for cell in phonon.supercells_with_displacements:
        atoms = phonopy_to_ase(cell)
        atoms.calc = calculator()
        forces.append(atoms.get_forces())
    phonon.forces = np.array(forces)
    phonon.produce_force_constants(calculate_full_force_constants=True, show_drift=False)
    phonon.symmetrize_force_constants(show_drift=False)
    return phonon


def cu3au() -> Atoms:
    """L1₂ Cu3Au (4-atom cubic cell, two inequivalent sites: more than one displacement)."""
    a = 3.75
    return Atoms("AuCu3", scaled_positions=[[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]],
                 cell=[a, a, a], pbc=True)


def rocksalt_nio() -> Atoms:
    """Rocksalt NiO (EMT knows Ni and O): a polar crystal to carry Born charges."""
    return bulk("NiO", "rocksalt", a=4.17)


def aluminium() -> Atoms:
    """fcc Al at EMT's lattice constant region (4.05 Å)."""
    return bulk("Al", "fcc", a=4.05)


def full_to_hessian(fc: np.ndarray) -> np.ndarray:
    """Phonopy's full force constants [N, N, 3, 3] → Hessian layout [N, 3, N, 3]."""
    return np.transpose(fc, (0, 2, 1, 3))
