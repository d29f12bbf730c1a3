"""The non-analytic correction (NAC) of polar crystals: LO–TO splitting from Born effective charges.

A periodic supercell has no macroscopic electric field, so its force constants, DFT's finite
displacements and a model's Hessian alike, lack the long-range dipole–dipole term that lifts the
longitudinal optical (LO) modes above the transverse ones (TO) as q → Γ.  Phonopy adds it from
the Born effective charges Z* [n_prim, 3, 3] (e) and the high-frequency dielectric tensor ε∞
[3, 3].  An interatomic potential predicts neither, so they come from DFT: a ``BORN`` file
(phonopy's format), a reference's ``nac_params``, or the user.

Phonopy's own machinery applies them (``Phonopy.nac_params``), with its default method,
Gonze–Lee (X. Gonze and C. Lee, Phys. Rev. B 55, 10355 (1997)): the dipole–dipole force
constants of the supercell are taken out of the force constants and the Ewald sum of the
dipole–dipole interaction is added back at every q.  So frequencies at the supercell's
commensurate q ≠ 0 are unchanged (the supercell already holds everything there); in between and
near Γ the long-range term is interpolated correctly, and the Γ limit depends on the direction q
approaches Γ from.  Exactly at Γ, without a direction, phonopy gives the analytic (TO) frequencies,
the ones a periodic supercell has.

Parameters are phonopy's ``nac_params`` dict (``born``, ``dielectric`` and optionally ``factor``,
the unit conversion, e²/(4πε₀) = 14.4 eV·Å for eV and Å).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np
from phonopy import Phonopy
from phonopy.file_IO import BORNFileParseError, parse_BORN
from phonopy.interface.calculator import get_calculator_physical_units
from phonopy.structure.atoms import PhonopyAtoms
from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning
from phonopy.structure.symmetry import Symmetry

NAC_METHOD = "gonze"
"""The NAC method: phonopy's default, Gonze–Lee (``nac_params["method"]`` unset)."""
NEUTRALITY_TOLERANCE_E = 0.5
"""Largest |Σ_κ Z*_κ| (any Cartesian component, summed over the primitive cell, e) accepted.  DFT
Born charges break charge neutrality by ~0.01–0.1 e; charges in another atom order than the
structure's usually break it by whole charges."""
NAC_FACTOR_EV_ANGSTROM = get_calculator_physical_units(None).nac_factor
"""Phonopy's NAC unit factor for eV and Å (e²/(4πε₀) in eV·Å, 14.40), the units of our force constants."""


def read_born(path: Union[str, os.PathLike], primitive: Union[Phonopy, PhonopyAtoms], symprec: float = 1e-5) -> dict[str, Any]:
    """NAC parameters from a phonopy ``BORN`` file for ``primitive`` (a `Phonopy`'s primitive cell).

    The file holds ε∞ and then Z* of each symmetry-independent atom of the primitive cell, in the
    order of its atoms; phonopy's own reader (``parse_BORN``) spreads them over the other atoms by
    symmetry.  A file with too few or too many atoms, or charges that break charge neutrality
    (`NEUTRALITY_TOLERANCE_E`: another atom order), or a dielectric tensor that is not positive
    definite, is a ValueError naming the file.
    """
    if isinstance(primitive, Phonopy):
        primitive = primitive.primitive
    path = Path(path)
    independent = Symmetry(primitive, symprec=symprec).get_independent_atoms()
    atoms = ", ".join(f"{primitive.symbols[i]} (atom {i + 1})" for i in independent)
    try:
        params = parse_BORN(primitive, symprec=symprec, filename=path)
    except (BORNFileParseError, ValueError, IndexError) as error:
        raise ValueError(
            f"BORN file {path}: {str(error).rstrip('.')}; phonopy's BORN format is a line with the unit factor (or 'default'), "
            f"a line of ε∞ (9 numbers) and one line of Z* (9 numbers) per symmetry-independent atom of the "
            f"primitive cell, here {len(independent)}: {atoms}"
        ) from None
    check_nac_params(params, primitive, f"BORN file {path} (its lines for {atoms})")
    return params


class NacParameters(NamedTuple):
    """The NAC parameters of a run: phonopy's ``nac_params`` on the primitive cell of ``cell`` (a
    `Phonopy`) and where they come from (a file name); all None for no NAC."""

    params: Optional[dict[str, Any]] = None
    cell: Optional[Phonopy] = None
    source: Optional[str] = None

    def apply(self, phonon: Any) -> Any:
        """Set these parameters on ``phonon`` (a `Phonopy` or phono3py's `Phono3py`), carried to
        its primitive cell atom by atom (`transfer_nac_params`: the same crystal, possibly
        strained or relaxed), or remove any it has when there are none.  Returns ``phonon``."""
        if self.params is None:
            return apply_nac(phonon, None)
        return apply_nac(phonon, transfer_nac_params(self.params, self.cell, phonon))


def read_born_for_structure(path: Union[str, os.PathLike], atoms: Any, symprec: float = 1e-5) -> NacParameters:
    """`read_born` for the primitive cell phonopy finds for the ASE structure ``atoms`` (Å, amu):
    cheap (no force constants, no JAX), so a command checks a ``--born`` file before any work."""
    unitcell = PhonopyAtoms(numbers=atoms.numbers, cell=atoms.cell.array,
                            scaled_positions=atoms.get_scaled_positions(wrap=False), masses=atoms.get_masses())
    with warnings.catch_warnings():  # phonopy 4's notice that "auto" is its new default
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        cell = Phonopy(unitcell, primitive_matrix="auto", symprec=symprec)
    return NacParameters(read_born(path, cell, symprec=symprec), cell, str(path))


def check_nac_params(params: dict[str, Any], primitive: PhonopyAtoms, what: str) -> None:
    """Raise a ValueError naming ``what`` unless ``params`` fit ``primitive``: one Z* [3, 3] per
    atom, finite, neutral within `NEUTRALITY_TOLERANCE_E`, and ε∞ [3, 3] positive definite."""
    born = np.asarray(params["born"], dtype=float)
    dielectric = np.asarray(params["dielectric"], dtype=float)
    if born.shape != (len(primitive), 3, 3) or dielectric.shape != (3, 3):
        raise ValueError(f"{what}: Born charges of shape {born.shape} and ε∞ of shape {dielectric.shape} for a "
                         f"primitive cell of {len(primitive)} atoms (need [{len(primitive)}, 3, 3] and [3, 3])")
    if not (np.all(np.isfinite(born)) and np.all(np.isfinite(dielectric))):
        raise ValueError(f"{what}: Born charges or ε∞ are not finite numbers")
    total = born.sum(axis=0)
    if np.abs(total).max() > NEUTRALITY_TOLERANCE_E:
        raise ValueError(
            f"{what}: the Born charges sum to {np.round(total, 3).tolist()} e over the primitive cell; charge "
            f"neutrality needs 0 (within {NEUTRALITY_TOLERANCE_E} e): are they for this structure, in its atom order?"
        )
    eigenvalues = np.linalg.eigvalsh(0.5 * (dielectric + dielectric.T))
    if eigenvalues.min() <= 0:
        raise ValueError(f"{what}: the dielectric tensor ε∞ {dielectric.tolist()} is not positive definite")


def atom_map(source: PhonopyAtoms, target: PhonopyAtoms, tolerance: float = 0.1) -> np.ndarray:
    """For each atom of the ``target`` primitive cell, the index of the same atom in ``source``
    (same element, same position up to a lattice vector and one common shift), [n_prim].

    The two cells must be the same lattice up to a strain (positions are compared in each one's
    own fractional coordinates, carried by the integer matrix between the lattices; ``tolerance``
    in Å).  Raises a ValueError naming the mismatch.
    """
    if sorted(source.numbers) != sorted(target.numbers):
        raise ValueError(f"the NAC parameters are for {' '.join(source.symbols)}, the structure's primitive cell "
                         f"holds {' '.join(target.symbols)}")
    transformation = np.rint(target.cell @ np.linalg.inv(source.cell))  # target lattice in source's basis
    positions = target.scaled_positions @ transformation  # target atoms, source's fractional coordinates
    for candidate in np.flatnonzero(source.numbers == target.numbers[0]):  # the shift that brings atom 0 onto it
        shift = source.scaled_positions[candidate] - positions[0]
        difference = (positions + shift)[:, None, :] - source.scaled_positions[None, :, :]
        difference -= np.rint(difference)
        distances = np.linalg.norm(difference @ source.cell, axis=-1)  # [target, source] Å
        distances[target.numbers[:, None] != source.numbers[None, :]] = np.inf
        mapping = np.argmin(distances, axis=1)
        if distances[np.arange(len(target)), mapping].max() < tolerance and len(set(mapping)) == len(target):
            return mapping
    raise ValueError("the atoms of the structure's primitive cell are not those the NAC parameters were made for "
                     f"(source: {' '.join(source.symbols)} at {np.round(source.scaled_positions, 4).tolist()}, "
                     f"structure: {' '.join(target.symbols)} at {np.round(target.scaled_positions, 4).tolist()})")


def transfer_nac_params(params: dict[str, Any], source: Union[Phonopy, PhonopyAtoms],
                        target: Union[Phonopy, PhonopyAtoms], source_calculator: Optional[str] = None) -> dict[str, Any]:
    """``params`` (phonopy's, on the ``source`` primitive cell) on the atoms of the ``target``
    primitive cell (a `PhonopyAtoms`, or the primitive cell of a `Phonopy` or `Phono3py`), for
    force constants in eV/Å².

    Z* and ε∞ are Cartesian tensors: both cells must share their Cartesian axes (as
    `compare.primitive_transformation` requires).  The unit factor is kept when the source's
    calculator (``source.calculator`` of a `Phonopy`, or ``source_calculator``) works in eV and Å,
    and replaced by `NAC_FACTOR_EV_ANGSTROM` otherwise.
    """
    if not isinstance(source, PhonopyAtoms):
        source_calculator = source.calculator
        source = source.primitive
    if not isinstance(target, PhonopyAtoms):
        target = target.primitive
    mapping = atom_map(source, target)
    moved = {"born": np.ascontiguousarray(np.asarray(params["born"], dtype=float)[mapping]),
             "dielectric": np.array(params["dielectric"], dtype=float)}
    same_units = get_calculator_physical_units(source_calculator).nac_factor == NAC_FACTOR_EV_ANGSTROM
    if "factor" in params and same_units:
        moved["factor"] = float(params["factor"])
    if "method" in params:
        moved["method"] = params["method"]
    return moved


def apply_nac(phonon: Any, params: Optional[dict[str, Any]]) -> Any:
    """Set ``params`` (phonopy's ``nac_params`` for ``phonon``'s primitive cell, or None for no
    NAC) on ``phonon`` (a `Phonopy` or phono3py's `Phono3py`) after `check_nac_params`; phonopy
    then applies them to every frequency, band structure, DOS and thermal property it computes,
    phono3py to the harmonic phonons (fc2) of its transport calculation.  Without a ``factor`` the one of
    ``phonon``'s units is set (eV and Å: `NAC_FACTOR_EV_ANGSTROM`), as ``phonopy.load`` does.
    Returns ``phonon``."""
    if params is not None:
        check_nac_params(params, phonon.primitive, "NAC parameters")
        params = {"factor": get_calculator_physical_units(phonon.calculator).nac_factor, **params}
    phonon.nac_params = params
    return phonon


def same_nac_params(first: Optional[dict[str, Any]], second: Optional[dict[str, Any]], tolerance: float = 1e-6) -> bool:
    """Whether two parameter sets (on the same primitive cell) hold the same Z* and ε∞."""
    if first is None or second is None:
        return first is second
    return all(np.allclose(first[key], second[key], rtol=0, atol=tolerance) for key in ("born", "dielectric"))


def nac_method(phonon: Any) -> Optional[str]:
    """The method phonopy applies NAC with (``"gonze"`` or ``"wang"``), None without NAC."""
    if phonon.nac_params is None:
        return None
    return phonon.nac_params.get("method", NAC_METHOD)


def cartesian_to_reduced_direction(phonon: Phonopy, direction: Sequence[float]) -> np.ndarray:
    """A Cartesian direction [3] in the reduced reciprocal coordinates of ``phonon``'s primitive
    cell (phonopy's ``nac_q_direction``)."""
    return np.asarray(phonon.primitive.cell, dtype=float) @ np.asarray(direction, dtype=float)


def gamma_limit_frequencies(phonon: Phonopy, direction: Sequence[float]) -> np.ndarray:
    """Frequencies [3·n_prim] THz, ascending, as q → Γ along the Cartesian ``direction`` [3]: with
    NAC the LO–TO split ones, without it the analytic ones at Γ."""
    phonon.run_qpoints([[0.0, 0.0, 0.0]], nac_q_direction=cartesian_to_reduced_direction(phonon, direction))
    return np.sort(np.asarray(phonon.qpoints.frequencies[0]))


def nac_parameters_record(phonon: Any, source: Optional[str] = None) -> dict[str, Any]:
    """JSON-ready: whether NAC is applied to ``phonon`` (a `Phonopy` or `Phono3py`), how and from
    where; with NAC the Z* (e), ε∞ and the unit factor (eV·Å)."""
    params = phonon.nac_params
    if params is None:
        return {"applied": False}
    return {
        "applied": True,
        "method": nac_method(phonon),
        "source": source,
        "born_charges_e": np.asarray(params["born"]).tolist(),
        "dielectric_high_frequency": np.asarray(params["dielectric"]).tolist(),
        "factor": params.get("factor", NAC_FACTOR_EV_ANGSTROM),
        "primitive_symbols": list(phonon.primitive.symbols),
    }


def nac_record(phonon: Phonopy, source: Optional[str] = None) -> dict[str, Any]:
    """`nac_parameters_record`, and with NAC the Γ frequencies (THz) approached along Cartesian x,
    y and z."""
    record = nac_parameters_record(phonon, source)
    if not record["applied"]:
        return record
    return {
        **record,
        "gamma_limit_frequencies_THz": {
            axis: gamma_limit_frequencies(phonon, direction).tolist()
            for axis, direction in (("x", (1, 0, 0)), ("y", (0, 1, 0)), ("z", (0, 0, 1)))
        },
    }


def describe_nac(phonon: Any, source: Optional[str] = None) -> str:
    """One line for people: NAC or not, the method, the source and the mean Z* per atom."""
    if phonon.nac_params is None:
        return "NAC: none (no Born charges and ε∞: no LO–TO splitting; for a polar crystal pass --born BORN)"
    params = phonon.nac_params
    charges = ", ".join(f"{symbol} {np.trace(z) / 3:+.3f}" for symbol, z in zip(phonon.primitive.symbols, params["born"]))
    method = {"gonze": "Gonze–Lee", "wang": "Wang"}.get(nac_method(phonon), nac_method(phonon))
    return (f"NAC: {method} (phonopy), Z* and ε∞ from {source or 'the given parameters'}; Z* (e, trace/3): {charges}; "
            f"ε∞ (trace/3) {np.trace(params['dielectric']) / 3:.3f}")
