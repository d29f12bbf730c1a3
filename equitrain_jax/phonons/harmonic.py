"""Harmonic force constants from a model's exact Hessian, and phonopy objects holding them.

Force constants follow phonopy's convention Φ[i, j, a, b] = ∂²E/∂u_ia ∂u_jb, shape [N, N, 3, 3]
for the N atoms of a supercell, in eV/Å², and are set on a `phonopy.Phonopy` directly, without a
displacement data set.  Three exact routes differ in how many Hessian-vector products they need
(see `force_constants`); `phonopy_from_calculator` is the finite-displacement reference route for
any ASE calculator.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence, Union

import ase
import numpy as np
from phonopy import Phonopy
from phonopy.harmonic.displacement import directions_to_displacement_dataset, get_least_displacements
from phonopy.harmonic.force_constants import (
    distribute_force_constants,
    distribute_force_constants_by_translations,
)
from phonopy.interface.fc_calculator import get_fc2
from phonopy.structure.atoms import PhonopyAtoms
from phonopy.structure.cells import Primitive
from phonopy.structure.symmetry import Symmetry

from equitrain_jax.phonons.bridge import (
    SupercellMatrix,
    ase_to_phonopy,
    check_supercell_size,
    new_phonopy,
    phonopy_to_ase,
)
from equitrain_jax.phonons.hessian import hessian, hessian_rows, hessian_vector_products
from equitrain_jax.potential import Potential

Method = Literal["full", "symmetry", "displacements"]
METHODS = ("full", "symmetry", "displacements")
"""The exact routes from the Hessian to force constants (see `force_constants`)."""
DEFAULT_METHOD: Method = "displacements"
"""The route `force_constants` and `phonopy_from_potential` take unless told otherwise: the fewest
Hessian-vector products (one for diamond or fcc, at most as many as ``"full"``), with phonopy's own
solver, and exact like the others.  ``"full"`` remains the choice for the raw, unsymmetrised
Hessian of a structure whose symmetry should not be used."""


def hessian_to_force_constants(rows: np.ndarray) -> np.ndarray:
    """[M, 3, N, 3] Hessian rows → phonopy force constants [M, N, 3, 3] (eV/Å²)."""
    return np.ascontiguousarray(np.transpose(rows, (0, 2, 1, 3)), dtype=np.double)


def distribute_rows(
    rows: np.ndarray,
    done: Sequence[int],
    supercell: PhonopyAtoms,
    symmetry: Symmetry,
    primitive: Optional[Primitive] = None,
) -> np.ndarray:
    """Full force constants [N, N, 3, 3] from the rows [M, N, 3, 3] of the atoms ``done``, by symmetry.

    Uses phonopy's own routines as its finite-displacement solver does: rotate the known rows onto
    the other atoms (``distribute_force_constants``); with ``primitive``, first onto the atoms of
    the primitive cell and then by lattice translations to all (the faster path).
    """
    n = len(supercell)
    done = np.asarray(done, dtype=np.int64)
    fc = np.zeros((n, n, 3, 3), dtype=np.double, order="C")
    fc[done] = rows
    lattice = np.array(supercell.cell.T, dtype=np.double, order="C")
    rotations = symmetry.symmetry_operations["rotations"]
    permutations = symmetry.atomic_permutations
    if primitive is not None:
        distribute_force_constants(
            fc, done, lattice, rotations, permutations,
            atom_list=primitive.p2s_map, fc_indices_of_atom_list=primitive.p2s_map,
        )
        distribute_force_constants_by_translations(fc, primitive)
    else:
        distribute_force_constants(fc, done, lattice, rotations, permutations)
    return fc


def displacement_dataset(potential: Potential, supercell_atoms: ase.Atoms, symmetry: Symmetry,
                         chunk_size: Optional[int] = None, distance: float = 0.01) -> dict[str, Any]:
    """Phonopy's displacement data set of the supercell with EXACT harmonic forces from the Hessian.

    Phonopy's own least set of displacements (``get_least_displacements``, without ± pairs: the
    site symmetry alone must span the three directions) is taken; for each displacement u of
    length ``distance`` (Å) the force is the harmonic one, F = −H·u, one Hessian-vector product
    per displacement.  Phonopy's solver (which fits Φ to u and F with the site symmetry, as after
    a DFT run) then returns the model's exact force constants: no finite-difference error, since
    the forces are exactly linear in u.  For diamond Si or fcc metals that is ONE product
    instead of the 3 rows of `hessian_rows`; for P1 crystals 3 per atom, as the rows.
    """
    cell = ase_to_phonopy(supercell_atoms)
    directions = get_least_displacements(symmetry, is_plusminus=False)
    dataset = directions_to_displacement_dataset(directions, distance, cell)
    vectors = np.zeros((len(dataset["first_atoms"]), len(cell), 3))
    for k, first in enumerate(dataset["first_atoms"]):
        vectors[k, first["number"]] = first["displacement"]
    products = hessian_vector_products(potential, supercell_atoms, vectors, chunk_size=chunk_size)
    for first, product in zip(dataset["first_atoms"], products):
        first["forces"] = -product
    return dataset


def force_constants(
    potential: Potential,
    supercell_atoms: ase.Atoms,
    method: Method = DEFAULT_METHOD,
    symprec: float = 1e-5,
    chunk_size: Optional[int] = None,
    symmetry: Optional[Symmetry] = None,
    primitive: Optional[Primitive] = None,
) -> np.ndarray:
    """Force constants Φ[i, j, a, b] = ∂²E/∂u_ia ∂u_jb of a supercell, [N, N, 3, 3] eV/Å².

    Args:
        potential: the model.
        supercell_atoms: the supercell (Å), in the atom order the force constants should have.
        method: how many Hessian-vector products, and which:

            - ``"full"``: every Hessian row (3N products); no symmetry used.
            - ``"symmetry"``: the 3 rows of each symmetrically distinct atom (3M products),
              rotated onto the other atoms by phonopy (`distribute_rows`).
            - ``"displacements"``: one product along each of phonopy's least displacements
              (1 for diamond or fcc; at most 3M), fitted by phonopy's solver
              (`displacement_dataset`).

            All three are exact and equal to rounding for a symmetric cell; the default,
            `DEFAULT_METHOD` (``"displacements"``), needs the fewest products.
        symprec: symmetry tolerance in Å (phonopy's), used when ``symmetry`` is not given.
        chunk_size: Hessian-vector products per compiled call (memory bound; see `hessian_rows`).
        symmetry, primitive: phonopy's objects for this supercell (``Phonopy.symmetry``,
            ``Phonopy.primitive``), to reuse them.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method == "full":
        return hessian_to_force_constants(hessian(potential, supercell_atoms, chunk_size=chunk_size))
    cell = ase_to_phonopy(supercell_atoms)
    if symmetry is None:
        symmetry = Symmetry(cell, symprec=symprec)
    if method == "displacements":
        dataset = displacement_dataset(potential, supercell_atoms, symmetry, chunk_size=chunk_size)
        if primitive is None:  # phonopy's solver wants one; the supercell itself serves
            primitive = Primitive(cell, np.eye(3), symprec=symprec)
        return np.asarray(
            get_fc2(cell, dataset, primitive=primitive, symmetry=symmetry, is_compact_fc=False, log_level=0),
            dtype=np.double, order="C",
        )
    done = np.asarray(symmetry.get_independent_atoms(), dtype=np.int64)
    rows = hessian_rows(potential, supercell_atoms, done, chunk_size=chunk_size)
    return distribute_rows(hessian_to_force_constants(rows), done, cell, symmetry, primitive)


def phonopy_from_potential(
    potential: Potential,
    unitcell: ase.Atoms,
    supercell_matrix: SupercellMatrix,
    primitive_matrix: Any = "auto",
    method: Method = DEFAULT_METHOD,
    symmetrize: bool = True,
    symprec: float = 1e-5,
    chunk_size: Optional[int] = None,
    check_size: bool = True,
) -> Phonopy:
    """A `phonopy.Phonopy` of ``unitcell`` with force constants (eV/Å²) from the model's Hessian.

    Args:
        potential: the model.
        unitcell: the unit cell (Å; masses in amu from ASE).
        supercell_matrix: phonopy's supercell matrix (an int, 3 ints or a 3×3 matrix).
        primitive_matrix: phonopy's primitive matrix (``"auto"``, ``None``, ``"F"``, a 3×3 matrix…).
        method: ``"displacements"`` (the default, `DEFAULT_METHOD`: one Hessian-vector product per
            phonopy displacement, the fewest), ``"symmetry"`` (rows of distinct atoms) or
            ``"full"``; see `force_constants`.
        symmetrize: apply phonopy's ``symmetrize_force_constants()`` (translational invariance
            and index permutation symmetry), as after a finite-displacement calculation.
        symprec: symmetry tolerance in Å.
        chunk_size: Hessian rows per compiled call.
        check_size: warn if the supercell is narrower than 2·r_max (`check_supercell_size`).
    """
    potential.graph(unitcell)  # a structure the model cannot take is refused here, before phonopy sees it
    phonon = new_phonopy(unitcell, supercell_matrix, primitive_matrix, symprec)
    supercell = phonopy_to_ase(phonon.supercell)
    if check_size:
        check_supercell_size(supercell, potential.cutoff, potential.config.num_interactions, stacklevel=3)
    fc = force_constants(
        potential,
        supercell,
        method=method,
        chunk_size=chunk_size,
        symmetry=phonon.symmetry,
        primitive=phonon.primitive,
    )
    phonon.force_constants = fc
    if symmetrize:
        phonon.symmetrize_force_constants(show_drift=False)
    return phonon


def finite_displacement_force_constants(
    phonon: Phonopy, calculator: Any, distance: float = 0.01, plusminus: Union[bool, Literal["auto"]] = "auto"
) -> np.ndarray:
    """Fill ``phonon``'s force constants (eV/Å²) by phonopy's finite displacements (``distance`` Å,
    ``plusminus`` as phonopy's), forces from the ASE ``calculator``; returns them."""
    phonon.generate_displacements(distance=distance, is_plusminus=plusminus)
    forces = []
    for cell in phonon.supercells_with_displacements:
        atoms = phonopy_to_ase(cell)
        atoms.calc = calculator
        forces.append(atoms.get_forces())
    phonon.forces = np.array(forces)
    phonon.produce_force_constants()
    return phonon.force_constants


def phonopy_from_calculator(
    calculator: Any,
    unitcell: ase.Atoms,
    supercell_matrix: SupercellMatrix,
    primitive_matrix: Any = "auto",
    distance: float = 0.01,
    plusminus: Union[bool, Literal["auto"]] = "auto",
    symmetrize: bool = True,
    symprec: float = 1e-5,
) -> Phonopy:
    """A `phonopy.Phonopy` with force constants from phonopy's own finite displacements, forces
    from any ASE ``calculator`` (a reference route: no Hessian involved).

    ``distance`` (Å) is phonopy's displacement, ``plusminus`` its ±-displacement setting; with
    ``symmetrize``, phonopy's ``symmetrize_force_constants()`` as in `phonopy_from_potential`.
    """
    phonon = new_phonopy(unitcell, supercell_matrix, primitive_matrix, symprec)
    finite_displacement_force_constants(phonon, calculator, distance, plusminus)
    if symmetrize:
        phonon.symmetrize_force_constants(show_drift=False)
    return phonon
