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
import yaml as yaml_module
from ase.formula import Formula
from phonopy import Phonopy
from phonopy.file_IO import parse_FORCE_CONSTANTS, parse_FORCE_SETS, read_force_constants_hdf5
from phonopy.interface.phonopy_yaml import PhonopyYaml

from equitrain_jax.phonons.bridge import phonopy_to_ase
from equitrain_jax.phonons.harmonic import phonopy_from_potential
from equitrain_jax.phonons.nac import apply_nac, nac_method, read_born, same_nac_params, transfer_nac_params
from equitrain_jax.phonons.results import CUTOFF_FREQUENCY_THZ, band_structure, thermal_properties

THERMAL_KEYS = {
    "free_energy": "free_energy_kJ_per_mol",
    "entropy": "entropy_J_per_K_mol",
    "heat_capacity": "heat_capacity_J_per_K_mol",
}


def read_phonopy_yaml(path: Path) -> PhonopyYaml:
    """Phonopy's reading of a phonopy YAML; a file it cannot read is a ValueError naming it."""
    try:
        yaml = PhonopyYaml().read(path)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, yaml_module.YAMLError) as error:
        raise ValueError(f"{path}: not a readable phonopy YAML ({type(error).__name__}: {error})") from None
    if yaml.unitcell is None:
        raise ValueError(f"{path}: not a readable phonopy YAML (it has no unit cell)")
    return yaml


def reference_nac_source(path: Union[str, os.PathLike], born: Optional[Union[str, os.PathLike]] = None) -> Optional[str]:
    """Where `load_reference` takes the reference's NAC parameters from: ``born``, else the YAML's
    ``nac_params``, else a ``BORN`` file beside the YAML; None when there are none."""
    path = Path(path)
    if born is not None:
        return str(born)
    if read_phonopy_yaml(path).nac_params is not None:
        return f"{path} (its nac_params)"
    beside = path.parent / "BORN"
    return str(beside) if beside.is_file() else None


def load_reference(
    path: Union[str, os.PathLike],
    force_sets: Optional[Union[str, os.PathLike]] = None,
    force_constants: Optional[Union[str, os.PathLike]] = None,
    born: Optional[Union[str, os.PathLike]] = None,
    nac: bool = True,
) -> Phonopy:
    """A reference `Phonopy` with force constants (and NAC parameters, if any) from phonopy files.

    ``path`` is a phonopy YAML (``phonopy_params.yaml``: structure with force constants or with a
    displacement data set and its forces; or ``phonopy.yaml``/``phonopy_disp.yaml``: structure
    only).  Force constants come, in this order, from ``force_constants`` (a FORCE_CONSTANTS or
    ``.hdf5`` file), ``force_sets`` (a FORCE_SETS file), the YAML itself, or a FORCE_CONSTANTS or
    FORCE_SETS file beside the YAML; from forces they are fitted and symmetrised as ``phonopy.load``
    does.  With ``nac``, NAC parameters (Z*, ε∞) come from ``born`` (a BORN file), the YAML's
    ``nac_params`` or a BORN file beside the YAML (`reference_nac_source`); without, none.

    Files are read from beside the YAML only: unlike ``phonopy.load``, nothing is picked up from
    the current working directory.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference phonopy file {path} does not exist")
    for name, given in (("force_constants", force_constants), ("force_sets", force_sets), ("BORN", born)):
        if given is not None and not Path(given).is_file():
            raise FileNotFoundError(f"reference {name} file {given} does not exist")
    yaml = read_phonopy_yaml(path)
    reference = Phonopy(
        yaml.unitcell,
        supercell_matrix=np.eye(3, dtype=int) if yaml.supercell_matrix is None else yaml.supercell_matrix,
        primitive_matrix="auto" if yaml.primitive_matrix is None else yaml.primitive_matrix,
        calculator=yaml.calculator,
    )
    beside = {name: path.parent / name for name in ("FORCE_CONSTANTS", "FORCE_SETS")}
    if force_constants is None and force_sets is None and yaml.force_constants is None and not has_forces(yaml.dataset):
        force_constants = beside["FORCE_CONSTANTS"] if beside["FORCE_CONSTANTS"].is_file() else None
        force_sets = beside["FORCE_SETS"] if force_constants is None and beside["FORCE_SETS"].is_file() else None
    try:
        if force_constants is not None:
            read = read_force_constants_hdf5 if Path(force_constants).suffix == ".hdf5" else parse_FORCE_CONSTANTS
            reference.force_constants = read(force_constants, p2s_map=reference.primitive.p2s_map)
        elif force_sets is not None:
            produce_force_constants(reference, parse_FORCE_SETS(force_sets, natom=len(reference.supercell)))
        elif yaml.force_constants is not None:
            reference.force_constants = yaml.force_constants
        elif has_forces(yaml.dataset):
            produce_force_constants(reference, yaml.dataset)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
        source = force_constants or force_sets or path
        raise ValueError(f"{source}: force constants of the reference cannot be read or fitted for the supercell of "
                         f"{path} ({type(error).__name__}: {error})") from None
    if reference.force_constants is None:
        raise ValueError(
            f"{path}: no force constants in the reference: the YAML has neither force constants nor "
            f"displacements with forces, and there is no FORCE_CONSTANTS or FORCE_SETS beside it"
        )
    if nac:
        source = reference_nac_source(path, born)
        if source is not None and born is None and yaml.nac_params is not None:
            apply_nac(reference, yaml.nac_params)
        elif source is not None:
            apply_nac(reference, read_born(source, reference, symprec=reference.symmetry.tolerance))
    return reference


def has_forces(dataset: Optional[dict[str, Any]]) -> bool:
    """Whether a phonopy displacement data set holds forces (type 1: per displacement; type 2: an array)."""
    if not dataset:
        return False
    if "first_atoms" in dataset:
        return all("forces" in displacement for displacement in dataset["first_atoms"])
    return dataset.get("forces") is not None


def produce_force_constants(phonon: Phonopy, dataset: dict[str, Any]) -> None:
    """Force constants of ``phonon`` from a displacement data set with forces, as ``phonopy.load``
    makes them: phonopy's own fit (symfc for a type-2 data set of random displacements), then its
    symmetrisation, compact."""
    phonon.dataset = dataset
    calculator = "symfc" if "displacements" in dataset else None
    phonon.produce_force_constants(calculate_full_force_constants=False, fc_calculator=calculator, show_drift=False)
    if calculator is None:
        phonon.symmetrize_force_constants(show_drift=False, use_symfc_projector=True)


def phonopy_like_reference(potential: Any, reference: Phonopy, nac: bool = True) -> Phonopy:
    """The model's phonons on the reference's own unit cell, supercell and primitive matrices (the
    like-for-like comparison with a DFT finite-displacement reference), with the reference's NAC
    parameters when it has them and ``nac`` is set (`nac.transfer_nac_params`); a supercell
    narrower than 2·r_max, usual for DFT references, is not warned about here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = phonopy_from_potential(potential, phonopy_to_ase(reference.unitcell), reference.supercell_matrix,
                                       primitive_matrix=reference.primitive_matrix)
    if nac and reference.nac_params is not None:
        apply_nac(model, transfer_nac_params(reference.nac_params, reference, model))
    return model


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


def frequencies_at(phonon: Phonopy, qpoints: np.ndarray, nac_q_direction: Optional[Sequence[float]] = None) -> np.ndarray:
    """Frequencies [Q, 3·n_prim] THz (ascending per q-point) at reduced ``qpoints`` [Q, 3]; with NAC,
    Γ is approached along ``nac_q_direction`` (reduced), or taken without NAC when it is None."""
    phonon.run_qpoints(np.asarray(qpoints, dtype=float), nac_q_direction=nac_q_direction)
    return np.asarray(phonon.qpoints.frequencies)


def path_frequencies(phonon: Phonopy, segments: Sequence[np.ndarray], transformation: Optional[np.ndarray] = None
                     ) -> list[np.ndarray]:
    """Frequencies [Q_k, 3·n_prim] THz along band-path ``segments`` (reduced q-points [Q_k, 3] of
    another primitive cell, carried by ``transformation``, `primitive_transformation`).

    With NAC, a segment on a line through Γ takes Γ's limit along the segment, as phonopy's
    band structure does, so the LO branch reaches Γ instead of dropping to the TO frequency there.
    """
    transformation = np.eye(3, dtype=int) if transformation is None else transformation
    frequencies = []
    for segment in segments:
        qpoints = np.asarray(segment, dtype=float) @ transformation.T
        direction = None
        if phonon.nac_params is not None:
            reciprocal = np.linalg.inv(phonon.primitive.cell)
            if np.linalg.norm(np.cross(reciprocal @ qpoints[0], reciprocal @ qpoints[-1])) < 1e-5:
                direction = qpoints[0] - qpoints[-1]
        frequencies.append(frequencies_at(phonon, qpoints, nac_q_direction=direction))
    return frequencies


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


def check_nac_alike(model: Phonopy, reference: Phonopy) -> dict[str, Any]:
    """Refuse to compare a model with a reference when only one of them has NAC (the LO–TO
    splitting would count as the model's error); returns what each has, JSON-ready."""
    mine, theirs = nac_method(model), nac_method(reference)
    if (mine is None) != (theirs is None):
        has, lacks = ("reference", "model") if mine is None else ("model", "reference")
        raise ValueError(
            f"the {has} has NAC (LO–TO splitting from Born charges) and the {lacks} has none, so their difference "
            f"would mix the correction with the model's error; apply the same parameters to both "
            f"(nac.apply_nac(model, nac.transfer_nac_params(reference.nac_params, reference, model))) or remove them "
            f"from both (apply_nac(phonon, None))"
        )
    record = {"model": mine is not None, "reference": theirs is not None, "method": mine}
    if mine is not None:
        moved = transfer_nac_params(reference.nac_params, reference, model)
        record["same_parameters"] = same_nac_params(moved, model.nac_params) and mine == theirs
    return record


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
    ``temperature`` (K).  JSON-ready; see `primitive_transformation` for the cell check.

    Both must have NAC, or neither (`check_nac_alike`, recorded under ``"nac"``); on the band path Γ
    is then taken along each segment (`path_frequencies`), on the mesh exactly at Γ (the TO
    frequencies, as phonopy's mesh does).
    """
    transformation = primitive_transformation(model, reference, lattice_tolerance)
    nac = check_nac_alike(model, reference)
    bands = band_structure(model, npoints=npoints)
    mesh_q = mesh_qpoints(mesh)
    results: dict[str, Any] = {"primitive_transformation": transformation.tolist(), "mesh": list(mesh), "nac": nac}
    compared = {
        "band_path": [np.concatenate(path_frequencies(phonon, bands["qpoints"], t))
                      for phonon, t in ((model, None), (reference, transformation))],
        "mesh": [frequencies_at(model, mesh_q), frequencies_at(reference, mesh_q @ transformation.T)],
    }
    for name, (mine, theirs) in compared.items():
        results[name] = {"n_qpoints": len(mine), **frequency_errors(mine, theirs)}
    thermal = [
        thermal_properties(phonon, mesh=mesh, temperatures=[temperature], cutoff_frequency=cutoff_frequency)
        for phonon in (model, reference)
    ]
    results["thermal"] = {"temperature_K": temperature, "per": "mole of primitive cells"}
    for key, label in THERMAL_KEYS.items():
        mine, theirs = float(thermal[0][key][0]), float(thermal[1][key][0])
        results["thermal"][label] = {"model": mine, "reference": theirs, "error": mine - theirs}
    return results
