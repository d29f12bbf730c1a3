"""The bridge between ASE and phonopy: structures both ways, phonopy objects from a unit cell and a
supercell matrix, and the supercell-size check of a model's cutoff.

Lengths in Å, masses in amu (ASE's), as phonopy expects them.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence, Union

import ase
import numpy as np
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms
from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

from equitrain_jax.data.neighbours import periodic_heights

SupercellMatrix = Union[int, Sequence[int], Sequence[Sequence[int]], np.ndarray]


class SupercellTooSmallWarning(UserWarning):
    """The supercell is narrower than twice the model's cutoff along some direction."""


class NonSmoothRadiusWarning(UserWarning):
    """A neighbour shell lies at a radius where the model's energy is not smooth (its cutoff switch)."""


DERIVATIVE_JUMP_TOLERANCE = 0.03
"""How close (Å) a pair distance may come to a radius of `ModelConfig.derivative_jumps` before
`check_derivative_jumps` warns: phono3py's default displacement distance, so that no finite
displacement of that size crosses a radius unannounced."""


def ase_to_phonopy(atoms: ase.Atoms) -> PhonopyAtoms:
    """`PhonopyAtoms` of an ASE structure (cell in Å, masses in amu taken from ASE); ValueError for
    one that is not periodic in all three directions, which phonopy would take as a crystal."""
    if not np.all(atoms.pbc):
        raise ValueError(f"phonopy treats every structure as a crystal periodic in 3 directions, and this one has "
                         f"pbc={np.asarray(atoms.pbc).tolist()}; for a molecule, slab or adsorbate use the model's "
                         "Hessian directly (equitrain_jax.phonons.hessian, partial_hessian, vibrations_data)")
    return PhonopyAtoms(
        numbers=atoms.numbers,
        cell=atoms.cell.array,
        scaled_positions=atoms.get_scaled_positions(wrap=False),
        masses=atoms.get_masses(),
    )


def phonopy_to_ase(cell: PhonopyAtoms) -> ase.Atoms:
    """Periodic ASE structure of a `PhonopyAtoms` (same atom order, masses in amu)."""
    return ase.Atoms(
        numbers=cell.numbers,
        cell=cell.cell,
        scaled_positions=cell.scaled_positions,
        masses=cell.masses,
        pbc=True,
    )


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Widths of a periodic cell [3] in Å: the distances between opposite faces, V / |b × c| etc."""
    return periodic_heights(np.asarray(cell, dtype=float), np.ones(3, dtype=bool))


def supercell_for_min_length(cell: np.ndarray, min_length: float) -> list[int]:
    """Smallest diagonal repetition whose perpendicular widths all reach ``min_length`` Å
    (``cell``: [3, 3] rows, Å)."""
    widths = perpendicular_widths(np.asarray(cell))
    return [int(np.ceil(min_length / w - 1e-9)) for w in widths]


def check_supercell_size(
    supercell: ase.Atoms, cutoff: float, num_interactions: int = 2, stacklevel: int = 2
) -> np.ndarray:
    """Warn (`SupercellTooSmallWarning`) if the supercell is narrower than 2·cutoff; return its widths (Å).

    Criterion: smallest perpendicular width W ≥ 2·r_max.  Below that, an atom's cutoff sphere
    overlaps its own periodic image, so one neighbour can appear several times and an atom can
    be its own neighbour: even the direct (one-edge) part of the force constants is folded onto
    images, and phonopy's minimum-image interpolation between supercell q-points is wrong
    already at nearest-neighbour range.  Message passing stretches the range of the force
    constants to 2·num_interactions·r_max, but those terms decay quickly; W ≥ 2·r_max is the
    least one needs, and convergence in the supercell size should still be checked.
    """
    widths = perpendicular_widths(supercell.cell.array)
    if widths.min() < 2 * cutoff:
        warnings.warn(
            f"supercell too small for the model: smallest perpendicular width {widths.min():.3f} Å "
            f"(widths {', '.join(f'{w:.3f}' for w in widths)} Å) is below 2·r_max = {2 * cutoff:.3f} Å "
            f"(r_max = {cutoff:.3f} Å; {num_interactions} interactions reach "
            f"{num_interactions * cutoff:.3f} Å); atoms see their own periodic images, so force "
            "constants are folded and phonons between commensurate q-points are unreliable; "
            "use a larger supercell_matrix",
            SupercellTooSmallWarning,
            stacklevel=stacklevel,
        )
    return widths


def check_derivative_jumps(
    atoms: ase.Atoms,
    jumps: Sequence[tuple[float, int]],
    order: int,
    tolerance: float = DERIVATIVE_JUMP_TOLERANCE,
    stacklevel: int = 2,
) -> list[tuple[float, float]]:
    """Warn (`NonSmoothRadiusWarning`) if a pair distance of ``atoms`` lies within ``tolerance`` (Å) of a
    radius where the model's ``order``-th derivative can jump (``jumps``: `ModelConfig.derivative_jumps`,
    those of order ≤ ``order`` count); return the (distance, radius) pairs found, in Å.

    Such a force constant is the model's exact derivative at this structure, but it changes by a
    finite amount when the lattice constant moves the shell across the radius (SevenNet-0's κ of Si
    by 12 % over 2 mÅ, docs/conductivity.md), and finite differences across it measure the jump
    divided by the step."""
    from ase.neighborlist import neighbor_list

    lowest = {}
    for radius, jump_order in jumps:
        if jump_order <= order:
            lowest[float(radius)] = min(jump_order, lowest.get(float(radius), jump_order))
    if not lowest:
        return []
    distances = np.unique(np.round(neighbor_list("d", atoms, max(lowest) + tolerance), 6))
    close = [(float(d), r) for r in sorted(lowest) for d in distances if abs(d - r) <= tolerance]
    if close:
        listed = ", ".join(f"{d:.4f} Å (radius {r:g} Å, order {lowest[r]})" for d, r in close)
        warnings.warn(
            f"neighbour shells at {listed} lie within {tolerance:g} Å of a radius where a derivative of the "
            "model's energy of that order jumps (its cutoff switch): force constants of that order and above "
            "change by a finite amount when the lattice constant moves a shell across it, so results here (κ, "
            "Grüneisen parameters) are sensitive to the lattice constant and finite differences across it are "
            "wrong; compare a slightly different lattice constant",
            NonSmoothRadiusWarning,
            stacklevel=stacklevel,
        )
    return close


def supercell_matrix(matrix: SupercellMatrix) -> np.ndarray:
    """Phonopy's 3×3 integer supercell matrix from an int, 3 ints (a diagonal) or a 3×3 matrix;
    ValueError for entries that are not whole numbers, another shape, or a matrix whose
    determinant is not positive (no supercell, or a left-handed one, which phonopy cannot trim)."""
    given = np.asarray(matrix)
    try:
        values = given.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"supercell matrix {matrix!r}: not numbers") from None
    if not (np.all(np.isfinite(values)) and np.all(values == np.round(values))):
        raise ValueError(f"supercell matrix {given.tolist()}: entries must be whole numbers")
    values = np.round(values).astype(int)
    if values.ndim == 0:
        values = np.eye(3, dtype=int) * int(values)
    elif values.shape == (3,):
        values = np.diag(values)
    elif values.shape != (3, 3):
        raise ValueError(f"supercell matrix {given.tolist()}: give an int, 3 ints or a 3×3 matrix")
    determinant = round(np.linalg.det(values))
    if determinant <= 0:
        raise ValueError(f"supercell matrix {values.tolist()} has determinant {determinant}: a "
                         "supercell needs a positive one (whole repetitions, right-handed)")
    return values


def new_phonopy(unitcell: ase.Atoms, matrix: SupercellMatrix, primitive_matrix: Any = "auto", symprec: float = 1e-5) -> Phonopy:
    """A `phonopy.Phonopy` of ``unitcell`` (Å, amu) with phonopy's supercell ``matrix`` (an int, 3 ints
    or a 3×3 matrix), ``primitive_matrix`` and symmetry tolerance ``symprec`` (Å); no force constants yet.

    ``"auto"`` (phonopy's standardised primitive cell) is our choice, not phonopy's changed default,
    so phonopy's `PrimitiveMatrixAutoDefaultWarning` about that default is not passed on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        return Phonopy(
            ase_to_phonopy(unitcell),
            supercell_matrix=supercell_matrix(matrix),
            primitive_matrix=primitive_matrix,
            symprec=symprec,
        )
