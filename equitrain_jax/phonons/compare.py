"""A model's phonons against a reference (e.g. DFT force constants in phonopy files).

Both are evaluated on the same q-points of the same primitive cell: the band path and a Γ-centred
mesh of the model's primitive cell, carried to the reference's primitive basis by the integer
matrix between the two lattices (so different supercells and primitive settings compare on
equal footing).  Frequencies are sorted per q-point and compared band by band in THz; the
thermal properties come from each one's own mesh of the same size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import phonopy
from ase.formula import Formula
from phonopy import Phonopy

from equitrain_jax.phonons.bridge import phonopy_to_ase
from equitrain_jax.phonons.harmonic import phonopy_from_potential
from equitrain_jax.phonons.results import CUTOFF_FREQUENCY_THZ, band_structure, thermal_properties

THERMAL_KEYS = {
    "free_energy": "free_energy_kJ_per_mol",
    "entropy": "entropy_J_per_K_mol",
    "heat_capacity": "heat_capacity_J_per_K_mol",
}


def load_reference(
    path: Union[str, os.PathLike],
    force_sets: Optional[Union[str, os.PathLike]] = None,
    force_constants: Optional[Union[str, os.PathLike]] = None,
) -> Phonopy:
    """A reference `Phonopy` with force constants from phonopy files.

    ``path`` is a phonopy YAML (``phonopy_params.yaml``: structure with force constants or with a
    displacement data set and its forces; or ``phonopy.yaml``/``phonopy_disp.yaml``: structure
    only).  Force constants come, in this order, from ``force_constants`` (a FORCE_CONSTANTS
    file), ``force_sets`` (a FORCE_SETS file), the YAML itself, or a FORCE_CONSTANTS or
    FORCE_SETS file beside the YAML.  Phonopy symmetrises them as it loads them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference phonopy file {path} does not exist")
    beside = {name: path.parent / name for name in ("FORCE_CONSTANTS", "FORCE_SETS")}
    files = dict(force_constants_filename=force_constants, force_sets_filename=force_sets)
    for name, given in (("force_constants", force_constants), ("force_sets", force_sets)):
        if given is not None and not Path(given).is_file():
            raise FileNotFoundError(f"reference {name} file {given} does not exist")
    try:
        reference = phonopy.load(path, **files, log_level=0)
        if reference.force_constants is None:
            for name, candidate in beside.items():
                if candidate.is_file():
                    key = "force_constants_filename" if name == "FORCE_CONSTANTS" else "force_sets_filename"
                    reference = phonopy.load(path, **{key: candidate}, log_level=0)
                    break
    except (KeyError, TypeError, RuntimeError) as error:
        raise ValueError(f"{path}: not a readable phonopy YAML ({type(error).__name__}: {error})") from error
    if reference.force_constants is None:
        raise ValueError(
            f"{path}: no force constants in the reference: the YAML has neither force constants nor "
            f"displacements with forces, and there is no FORCE_CONSTANTS or FORCE_SETS beside it"
        )
    return reference


def phonopy_like_reference(potential: Any, reference: Phonopy) -> Phonopy:
    """The model's phonons on the reference's own unit cell, supercell and primitive matrices (the
    like-for-like comparison with a DFT finite-displacement reference); a supercell narrower than
    2·r_max, usual for DFT references, is not warned about here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return phonopy_from_potential(potential, phonopy_to_ase(reference.unitcell), reference.supercell_matrix,
                                      primitive_matrix=reference.primitive_matrix)


def primitive_transformation(model: Phonopy, reference: Phonopy, lattice_tolerance: float = 0.05) -> np.ndarray:
    """Integer matrix T [3, 3] with reference primitive lattice ≈ T · model primitive lattice (rows).

    Reduced q-points of the model map to the reference's as q_ref = T q.  Raises a ValueError
    naming the mismatch if the primitive cells hold different atoms, or if their lattices are not
    the same lattice up to a strain of ``lattice_tolerance`` (relative).
    """
    mine, theirs = model.primitive, reference.primitive
    numbers = [sorted(int(z) for z in cell.numbers) for cell in (mine, theirs)]
    if numbers[0] != numbers[1]:
        formulas = [Formula.from_list(cell.symbols).format("hill") for cell in (mine, theirs)]
        raise ValueError(
            f"the reference is a different crystal: its primitive cell is {formulas[1]} (atomic numbers "
            f"{numbers[1]}), the model's is {formulas[0]} (atomic numbers {numbers[0]})"
        )
    exact = theirs.cell @ np.linalg.inv(mine.cell)
    transformation = np.rint(exact).astype(int)
    strain = np.abs(exact - transformation).max()
    if abs(round(np.linalg.det(transformation))) != 1 or strain > lattice_tolerance:
        raise ValueError(
            "the reference's primitive lattice is not the model's (up to "
            f"{lattice_tolerance:.0%} strain): reference {np.round(theirs.cell, 4).tolist()} Å, "
            f"model {np.round(mine.cell, 4).tolist()} Å (mismatch {strain:.3f} in the model's basis)"
        )
    return transformation


def frequencies_at(phonon: Phonopy, qpoints: np.ndarray) -> np.ndarray:
    """Frequencies [Q, 3·n_prim] THz (ascending per q-point) at reduced ``qpoints`` [Q, 3]."""
    phonon.run_qpoints(np.asarray(qpoints, dtype=float))
    return np.asarray(phonon.get_qpoints_dict()["frequencies"])


def mesh_qpoints(mesh: Sequence[int]) -> np.ndarray:
    """All q-points [Πmesh, 3] of a Γ-centred mesh, reduced coordinates in [-½, ½)."""
    axes = [np.arange(n) / n for n in mesh]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid - np.floor(grid + 0.5)


def frequency_errors(model: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and largest |error| (THz) of frequencies [Q, B] band by band, and the error of the
    highest frequency (model − reference, THz)."""
    difference = model - reference
    return {
        "mae_THz": float(np.mean(np.abs(difference))),
        "rmse_THz": float(np.sqrt(np.mean(difference**2))),
        "max_abs_error_THz": float(np.max(np.abs(difference))),
        "max_frequency_error_THz": float(model.max() - reference.max()),
    }


def compare_phonons(
    model: Phonopy,
    reference: Phonopy,
    npoints: int = 51,
    mesh: Sequence[int] = (20, 20, 20),
    temperature: float = 300.0,
    cutoff_frequency: float = CUTOFF_FREQUENCY_THZ,
    lattice_tolerance: float = 0.05,
) -> dict[str, Any]:
    """Frequency errors (THz) on the model's automatic band path and a Γ-centred ``mesh``, and the
    errors (model − reference) of F (kJ/mol), S and Cv (J/K/mol) per mole of primitive cells at
    ``temperature`` (K).  JSON-ready; see `primitive_transformation` for the cell check."""
    transformation = primitive_transformation(model, reference, lattice_tolerance)
    bands = band_structure(model, npoints=npoints)
    band_q = np.concatenate(bands["qpoints"])
    mesh_q = mesh_qpoints(mesh)
    results: dict[str, Any] = {"primitive_transformation": transformation.tolist(), "mesh": list(mesh)}
    for name, qpoints in (("band_path", band_q), ("mesh", mesh_q)):
        mine = frequencies_at(model, qpoints)
        theirs = frequencies_at(reference, qpoints @ transformation.T)
        results[name] = {"n_qpoints": len(qpoints), **frequency_errors(mine, theirs)}
    thermal = [
        thermal_properties(phonon, mesh=mesh, temperatures=[temperature], cutoff_frequency=cutoff_frequency)
        for phonon in (model, reference)
    ]
    results["thermal"] = {"temperature_K": temperature, "per": "mole of primitive cells"}
    for key, label in THERMAL_KEYS.items():
        mine, theirs = float(thermal[0][key][0]), float(thermal[1][key][0])
        results["thermal"][label] = {"model": mine, "reference": theirs, "error": mine - theirs}
    return results
