"""Harmonic phonons in phonopy from analytic (autodiff) force constants.

Force constants follow phonopy's convention Φ[i, j, a, b] = ∂²E/∂u_ia ∂u_jb, shape [N, N, 3, 3]
for the N atoms of phonopy's supercell, in eV/Å².  They are set on a `phonopy.Phonopy` directly,
without displacement data sets.  Phonopy then gives frequencies in THz (with masses in amu),
thermal properties per mole of primitive cells (F in kJ/mol, S and Cv in J/K/mol) and the total
DOS in states/THz per primitive cell.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import ase
import numpy as np
from phonopy import Phonopy
from phonopy.harmonic.displacement import directions_to_displacement_dataset, get_least_displacements
from phonopy.harmonic.force_constants import (
    distribute_force_constants,
    distribute_force_constants_by_translations,
)
from phonopy.structure.atoms import PhonopyAtoms
from phonopy.structure.cells import Primitive
from phonopy.interface.fc_calculator import get_fc2
from phonopy.structure.symmetry import Symmetry

from equitrain_jax.phonons.hessian import hessian, hessian_rows, hessian_vector_products
from equitrain_jax.potential import Potential

Method = Literal["full", "symmetry", "displacements"]
METHODS = ("full", "symmetry", "displacements")
IMAGINARY_TOLERANCE_THZ = 0.05
"""Frequencies below −this (THz) count as imaginary; acoustic modes at Γ are ±~1e-3 THz from rounding."""
CUTOFF_FREQUENCY_THZ = 0.01
"""Modes at or below this frequency (THz) are left out of thermal properties.  Phonopy's default (0)
keeps the three Γ acoustic modes whenever rounding makes them slightly positive (1e-7 THz), and
their kT·ln(hν/kT) terms then shift F and S by ~1 %; with 0.01 THz they are always left out."""


class SupercellTooSmallWarning(UserWarning):
    """The supercell is narrower than twice the model's cutoff along some direction."""


# ---------------------------------------------------------------------------- structures


def ase_to_phonopy(atoms: ase.Atoms) -> PhonopyAtoms:
    """`PhonopyAtoms` of an ASE structure (cell in Å, masses in amu taken from ASE)."""
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
    """Widths of the cell [3] in Å: distance between opposite faces, V / |b × c| etc."""
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    areas = np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    return volume / areas


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


# ---------------------------------------------------------------------------- force constants


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
    method: Method = "full",
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

            All three are exact and equal to rounding for a symmetric cell.
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
    supercell_matrix: Union[int, Sequence[int], Sequence[Sequence[int]], np.ndarray],
    primitive_matrix: Any = "auto",
    method: Method = "displacements",
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
        method: ``"displacements"`` (one Hessian-vector product per phonopy displacement, the
            fewest), ``"symmetry"`` (rows of distinct atoms) or ``"full"``; see `force_constants`.
        symmetrize: apply phonopy's ``symmetrize_force_constants()`` (translational invariance
            and index permutation symmetry), as after a finite-displacement calculation.
        symprec: symmetry tolerance in Å.
        chunk_size: Hessian rows per compiled call.
        check_size: warn if the supercell is narrower than 2·r_max (`check_supercell_size`).
    """
    phonon = Phonopy(
        ase_to_phonopy(unitcell),
        supercell_matrix=_supercell_matrix(supercell_matrix),
        primitive_matrix=primitive_matrix,
        symprec=symprec,
    )
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
    supercell_matrix: Union[int, Sequence[int], Sequence[Sequence[int]], np.ndarray],
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
    phonon = Phonopy(
        ase_to_phonopy(unitcell),
        supercell_matrix=_supercell_matrix(supercell_matrix),
        primitive_matrix=primitive_matrix,
        symprec=symprec,
    )
    finite_displacement_force_constants(phonon, calculator, distance, plusminus)
    if symmetrize:
        phonon.symmetrize_force_constants(show_drift=False)
    return phonon


def _supercell_matrix(supercell_matrix: Any) -> np.ndarray:
    """Phonopy's 3×3 integer supercell matrix from an int, 3 ints or a 3×3 matrix."""
    matrix = np.asarray(supercell_matrix, dtype=int)
    return np.eye(3, dtype=int) * int(matrix) if matrix.ndim == 0 else matrix


# ---------------------------------------------------------------------------- results


def band_structure(phonon: Phonopy, npoints: int = 51) -> dict[str, Any]:
    """Frequencies (THz) along phonopy's automatic (seekpath) band path of the primitive cell.

    Returns a dict with ``qpoints`` (list of [Q, 3] reduced), ``distances`` (list of [Q]),
    ``frequencies`` (list of [Q, 3·n_prim] THz, imaginary as negative), ``labels`` (the path's
    end points) and ``path_connections`` (per segment: whether the next one starts where it ends).
    """
    phonon.auto_band_structure(npoints=npoints)
    bands = phonon.get_band_structure_dict()
    labels = getattr(phonon.band_structure, "labels", None)
    return dict(
        qpoints=[np.asarray(q) for q in bands["qpoints"]],
        distances=[np.asarray(d) for d in bands["distances"]],
        frequencies=[np.asarray(f) for f in bands["frequencies"]],
        labels=list(labels) if labels is not None else None,
        path_connections=list(phonon.band_structure.path_connections),
    )


def gamma_frequencies(phonon: Phonopy) -> np.ndarray:
    """Frequencies at Γ, [3·n_prim] THz (imaginary as negative), in ascending order."""
    return np.sort(np.asarray(phonon.get_frequencies([0.0, 0.0, 0.0])))


def total_dos(
    phonon: Phonopy, mesh: Union[float, Sequence[int]] = (20, 20, 20), freq_pitch: Optional[float] = None
) -> dict[str, np.ndarray]:
    """Total DOS on a Γ-centred q-point mesh (tetrahedron method): ``frequency_points`` (THz) and
    ``total_dos`` (states/THz per primitive cell, integrating to 3·n_prim)."""
    phonon.run_mesh(mesh, is_gamma_center=True)
    phonon.run_total_dos(freq_pitch=freq_pitch)
    dos = phonon.get_total_dos_dict()
    return dict(frequency_points=np.asarray(dos["frequency_points"]), total_dos=np.asarray(dos["total_dos"]))


def thermal_properties(
    phonon: Phonopy,
    mesh: Union[float, Sequence[int]] = (20, 20, 20),
    t_min: float = 0.0,
    t_max: float = 1000.0,
    t_step: float = 10.0,
    temperatures: Optional[Sequence[float]] = None,
    cutoff_frequency: float = CUTOFF_FREQUENCY_THZ,
) -> dict[str, np.ndarray]:
    """Harmonic thermal properties on a temperature grid, per mole of primitive cells.

    Returns ``temperatures`` (K), ``free_energy`` F (kJ/mol), ``entropy`` S (J/K/mol) and
    ``heat_capacity`` Cv (J/K/mol) on a Γ-centred ``mesh``; modes at or below
    ``cutoff_frequency`` (THz; imaginary ones and the Γ acoustic ones) are left out.
    """
    phonon.run_mesh(mesh, is_gamma_center=True)
    phonon.run_thermal_properties(
        t_min=t_min, t_max=t_max, t_step=t_step, temperatures=temperatures, cutoff_frequency=cutoff_frequency
    )
    tp = phonon.get_thermal_properties_dict()
    return {key: np.asarray(tp[key]) for key in ("temperatures", "free_energy", "entropy", "heat_capacity")}


def _has_imaginary(frequencies: np.ndarray, tolerance: float) -> bool:
    return bool(np.min(frequencies) < -tolerance)


def summary(
    phonon: Phonopy,
    npoints: int = 51,
    mesh: Union[float, Sequence[int]] = (20, 20, 20),
    temperature: float = 300.0,
    imaginary_tolerance: float = IMAGINARY_TOLERANCE_THZ,
) -> dict[str, Any]:
    """JSON-ready summary: band-path frequencies, Γ frequencies, thermal properties at
    ``temperature`` and whether imaginary modes (below −``imaginary_tolerance`` THz, on the band
    path or the mesh) exist.  Units are in the keys' names."""
    bands = band_structure(phonon, npoints=npoints)
    phonon.run_mesh(mesh, is_gamma_center=True)
    mesh_freqs = np.asarray(phonon.get_mesh_dict()["frequencies"])
    gamma = gamma_frequencies(phonon)
    thermal = thermal_properties(phonon, mesh=mesh, temperatures=[temperature])
    band_min = min(float(np.min(f)) for f in bands["frequencies"])
    return {
        "n_atoms_primitive": len(phonon.primitive),
        "n_atoms_supercell": len(phonon.supercell),
        "band_labels": bands["labels"],
        "band_qpoints": [q.tolist() for q in bands["qpoints"]],
        "band_frequencies_THz": [f.tolist() for f in bands["frequencies"]],
        "gamma_frequencies_THz": gamma.tolist(),
        "min_frequency_THz": min(band_min, float(mesh_freqs.min())),
        "max_frequency_THz": max(max(float(np.max(f)) for f in bands["frequencies"]), float(mesh_freqs.max())),
        "has_imaginary_modes": _has_imaginary(np.concatenate([mesh_freqs.ravel(), [band_min]]), imaginary_tolerance),
        "imaginary_tolerance_THz": imaginary_tolerance,
        "mesh": list(np.atleast_1d(mesh).tolist()),
        "thermal": {
            "temperature_K": temperature,
            "free_energy_kJ_per_mol": float(thermal["free_energy"][0]),
            "entropy_J_per_K_mol": float(thermal["entropy"][0]),
            "heat_capacity_J_per_K_mol": float(thermal["heat_capacity"][0]),
            "per": "mole of primitive cells",
        },
    }


def write_results(
    phonon: Phonopy,
    directory: Union[str, os.PathLike],
    npoints: int = 51,
    mesh: Union[float, Sequence[int]] = (20, 20, 20),
    temperature: float = 300.0,
    imaginary_tolerance: float = IMAGINARY_TOLERANCE_THZ,
) -> dict[str, Path]:
    """Write into ``directory`` and return the paths (keys in brackets):

    - ``phonopy_params.yaml`` [yaml]: structure and force constants, readable by ``phonopy.load``;
    - ``summary.json`` [summary]: see `summary`;
    - phonopy's own result files, as its command line writes them: ``band.yaml`` [band] (the
      automatic band path; ``phonopy-bandplot`` reads it), ``total_dos.dat`` [dos] (Γ-centred
      ``mesh``) and ``thermal_properties.yaml`` [thermal] (0–1000 K in steps of 10 K, per mole of
      primitive cells, modes below `CUTOFF_FREQUENCY_THZ` left out).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    yaml_path = directory / "phonopy_params.yaml"
    phonon.save(yaml_path, settings={"force_constants": True})
    json_path = directory / "summary.json"
    json_path.write_text(json.dumps(
        summary(phonon, npoints=npoints, mesh=mesh, temperature=temperature, imaginary_tolerance=imaginary_tolerance),
        indent=1,
    ))
    paths = {"yaml": yaml_path, "summary": json_path, "band": directory / "band.yaml",
             "dos": directory / "total_dos.dat", "thermal": directory / "thermal_properties.yaml"}
    band_structure(phonon, npoints=npoints)
    phonon.write_yaml_band_structure(filename=paths["band"])
    total_dos(phonon, mesh=mesh)
    phonon.write_total_dos(filename=paths["dos"])
    thermal_properties(phonon, mesh=mesh, t_min=0.0, t_max=1000.0, t_step=10.0)
    phonon.write_yaml_thermal_properties(filename=paths["thermal"])
    return paths
