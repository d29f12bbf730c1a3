"""Energies along phonon modes: scans of the energy surface along a mode (1D, and 2D over a
degenerate pair), following a mode to a relaxed structure, and the analysis of all imaginary modes.

Amplitudes Q are in amu^½·Å and energies in eV per supercell (see `equitrain_jax.phonons.modes`).
The energy comes from either a `Potential` (batched) or any ASE calculator, so the same analysis
runs on our models and on reference potentials.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import ase
import numpy as np
from ase.calculators.calculator import Calculator as AseCalculator
from phonopy import Phonopy

from equitrain_jax.phonons.bridge import phonopy_to_ase
from equitrain_jax.phonons.modes import PhononMode, commensurate_qpoints, imaginary_modes
from equitrain_jax.phonons.relax import relax
from equitrain_jax.phonons.results import IMAGINARY_TOLERANCE_THZ
from equitrain_jax.potential import Potential

EnergyModel = Union[Potential, AseCalculator]
"""What gives energies: a `Potential` (batched) or any ASE calculator."""


def supercell_energies(model: EnergyModel, structures: Sequence[ase.Atoms]) -> np.ndarray:
    """Total energies [S] in eV of ``structures`` from a `Potential` (batched) or an ASE calculator."""
    if isinstance(model, Potential):
        return np.array([result["energy"] for result in model.evaluate(structures)], dtype=float)
    if not isinstance(model, AseCalculator):
        raise ValueError(f"model must be a Potential or an ASE calculator, got {type(model).__name__}")
    energies = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = model
        energies.append(atoms.get_potential_energy())
    return np.array(energies, dtype=float)


def displaced_supercell(phonon: Phonopy, mode: PhononMode, amplitudes: Union[float, Sequence[float]]) -> ase.Atoms:
    """Phonopy's supercell displaced by amplitudes Q_k (amu^½·Å) along the mode's patterns."""
    atoms = phonopy_to_ase(phonon.supercell)
    atoms.positions = atoms.positions + mode.displacements(amplitudes)
    return atoms


def default_amplitudes(mode: PhononMode, max_displacement: float = 0.3, npoints: int = 21) -> np.ndarray:
    """Symmetric grid of ``npoints`` amplitudes Q (amu^½·Å, odd ``npoints`` includes 0) reaching
    ``max_displacement`` (Å) for the most displaced atom of the first pattern."""
    if max_displacement <= 0 or npoints < 3:
        raise ValueError(f"need max_displacement > 0 Å and npoints ≥ 3, got {max_displacement}, {npoints}")
    largest = np.max(np.linalg.norm(mode.patterns[0], axis=1) / np.sqrt(mode.masses))  # Å per unit Q
    return np.linspace(-1.0, 1.0, npoints) * max_displacement / largest


def scan_amplitudes(
    mode: PhononMode, amplitudes: Optional[Sequence[float]], max_displacement: float, npoints: int
) -> np.ndarray:
    """``amplitudes`` (amu^½·Å) as an array, or by default `default_amplitudes`."""
    if amplitudes is None:
        return default_amplitudes(mode, max_displacement, npoints)
    return np.asarray(amplitudes, dtype=float)


def mode_energies(
    phonon: Phonopy, mode: PhononMode, model: EnergyModel, coefficients: Sequence[Sequence[float]]
) -> tuple[np.ndarray, float]:
    """Energies [S] (eV per supercell, relative to the undisplaced supercell) of the supercell
    displaced by each of the S amplitude sets Q_k (amu^½·Å, along the mode's first len(Q) patterns),
    and the undisplaced supercell's energy E(0) (eV), all in one batch."""
    structures = [phonopy_to_ase(phonon.supercell)]
    structures += [displaced_supercell(phonon, mode, amplitudes) for amplitudes in coefficients]
    energies = supercell_energies(model, structures)
    return energies[1:] - energies[0], energies[0]


def scan_mode(
    phonon: Phonopy,
    mode: PhononMode,
    model: EnergyModel,
    amplitudes: Optional[Sequence[float]] = None,
    max_displacement: float = 0.3,
    npoints: int = 21,
) -> dict[str, np.ndarray]:
    """Energy along each pattern of ``mode``: ``amplitudes`` [Q] (amu^½·Å) and ``energies`` [d, Q]
    (eV per supercell, relative to the undisplaced supercell); ``reference_energy`` (eV) is E(0).
    The default amplitudes are `default_amplitudes` (most displaced atom up to ``max_displacement`` Å)."""
    amplitudes = scan_amplitudes(mode, amplitudes, max_displacement, npoints)
    d = len(mode.patterns)
    coefficients = [np.where(np.arange(d) == pattern, amplitude, 0.0) for pattern in range(d) for amplitude in amplitudes]
    energies, reference = mode_energies(phonon, mode, model, coefficients)
    return {"amplitudes": amplitudes, "energies": energies.reshape(d, len(amplitudes)), "reference_energy": reference}


def scan_mode_2d(
    phonon: Phonopy, mode: PhononMode, model: EnergyModel, *,
    amplitudes: Optional[Sequence[float]] = None, max_displacement: float = 0.3, npoints: int = 15,
) -> dict[str, np.ndarray]:
    """Energy on a grid Q₁ × Q₂ over the first two patterns of a degenerate mode: ``amplitudes`` [Q]
    (amu^½·Å, both axes; by default as in `scan_mode`, with ``npoints`` per axis) and ``energies``
    [Q, Q] (eV per supercell relative to E(0), [i, j] at Q₁ = amplitudes[i], Q₂ = amplitudes[j])."""
    if len(mode.patterns) < 2:
        raise ValueError(f"a 2D scan needs a mode spanned by two patterns; mode at q={mode.qpoint.tolist()} "
                         f"bands {list(mode.bands)} has {len(mode.patterns)}")
    amplitudes = scan_amplitudes(mode, amplitudes, max_displacement, npoints)
    coefficients = [[q1, q2] for q1 in amplitudes for q2 in amplitudes]
    energies, reference = mode_energies(phonon, mode, model, coefficients)
    q = len(amplitudes)
    return {"amplitudes": amplitudes, "energies": energies.reshape(q, q), "reference_energy": reference}


def space_group(atoms: ase.Atoms, symprec: float = 1e-3) -> str:
    """International symbol and number of the space group (spglib via ASE), e.g. ``"Pm-3m (221)"``."""
    from ase.spacegroup.symmetrize import check_symmetry

    dataset = check_symmetry(atoms, symprec)
    return f"{dataset.international} ({dataset.number})"


def follow_mode(
    phonon: Phonopy,
    mode: PhononMode,
    model: EnergyModel,
    amplitude: float,
    relax_cell: bool = False,
    fmax: float = 1e-3,
    steps: int = 500,
    symprec: float = 1e-3,
    logfile: Optional[str] = None,
) -> tuple[ase.Atoms, dict[str, Any]]:
    """Displace the supercell by ``amplitude`` (amu^½·Å) along the mode's first pattern and relax it.

    Relaxation: `equitrain_jax.phonons.relax.relax` (BFGS on the positions, with ``relax_cell`` also
    on the cell) to ``fmax`` eV/Å or ``steps`` steps.  Returns the relaxed supercell and a
    JSON-ready record: energies (eV per supercell and meV/atom relative to the undisplaced
    supercell), whether it converged, and the space groups (``symprec`` Å) before, displaced, after.
    """
    from equitrain_jax.calculator import Calculator

    calculator = Calculator(model) if isinstance(model, Potential) else model
    undisplaced = phonopy_to_ase(phonon.supercell)
    atoms = displaced_supercell(phonon, mode, [amplitude])
    displaced_group = space_group(atoms, symprec)
    energy0, displaced_energy = supercell_energies(calculator, [undisplaced, atoms])
    relaxation = relax(atoms, calculator, fmax, steps, relax_cell=relax_cell, logfile=logfile)
    relaxed_energy = float(atoms.get_potential_energy())
    n = len(atoms)
    record = {
        "amplitude_amu05_A": float(amplitude),
        "relax_cell": relax_cell,
        "converged": relaxation.converged,
        "steps": relaxation.steps,
        "fmax_eV_per_A": fmax,
        "energy_eV": float(energy0),
        "displaced_energy_change_meV_per_atom": 1e3 * float(displaced_energy - energy0) / n,
        "relaxed_energy_change_meV_per_atom": 1e3 * (relaxed_energy - float(energy0)) / n,
        "relaxed_energy_change_eV": relaxed_energy - float(energy0),
        "space_group_before": space_group(undisplaced, symprec),
        "space_group_displaced": displaced_group,
        "space_group_after": space_group(atoms, symprec),
        "symprec_A": symprec,
    }
    atoms.calc = None
    return atoms, record


def scan_minimum(scan: dict[str, np.ndarray], pattern: int = 0) -> dict[str, Any]:
    """The lowest point of a 1D scan along ``pattern``: amplitude (amu^½·Å), energy (eV per supercell,
    relative to E(0)), and whether it lies at the end of the scanned range (the well may be deeper)."""
    energies = scan["energies"][pattern]
    index = int(np.argmin(energies))
    return {
        "amplitude_amu05_A": float(scan["amplitudes"][index]),
        "energy_eV": float(energies[index]),
        "at_edge_of_range": index in (0, len(energies) - 1),
    }


def analyse_imaginary_modes(
    phonon: Phonopy,
    model: EnergyModel,
    threshold: float = IMAGINARY_TOLERANCE_THZ,
    max_displacement: float = 0.3,
    npoints: int = 21,
    npoints_2d: int = 11,
    max_modes: Optional[int] = None,
    follow: bool = True,
    relax_cell: bool = False,
    fmax: float = 1e-3,
    steps: int = 500,
    symprec: float = 1e-3,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Find the imaginary modes (`imaginary_modes`), scan each (`scan_mode` on ``npoints`` amplitudes;
    `scan_mode_2d` on ``npoints_2d``² for a mode spanned by two or more patterns) and, with
    ``follow``, relax from the deepest point of its first 1D scan (`follow_mode`).  With
    ``max_modes``, only that many of the most unstable modes are scanned; all are listed.

    Returns a JSON-ready summary and, per scanned mode, the raw results: ``mode``, ``scan``,
    ``scan_2d`` (or None) and ``relaxed`` (the relaxed supercell, or None).
    """
    modes = imaginary_modes(phonon, threshold)
    scanned = modes if max_modes is None else modes[:max_modes]
    records, results = [], []
    for mode in scanned:
        scan = scan_mode(phonon, mode, model, max_displacement=max_displacement, npoints=npoints)
        scan_2d = None
        if len(mode.patterns) >= 2:
            scan_2d = scan_mode_2d(phonon, mode, model, max_displacement=max_displacement, npoints=npoints_2d)
        minimum = scan_minimum(scan)
        record = {
            **mode.to_dict(),
            "scan_amplitudes_amu05_A": scan["amplitudes"].tolist(),
            "scan_energies_eV": scan["energies"].tolist(),
            "scan_minimum": minimum,
            "double_well": minimum["energy_eV"] < 0.0,
        }
        relaxed = None
        if follow:
            amplitude = minimum["amplitude_amu05_A"] or float(scan["amplitudes"][-1])
            relaxed, record["follow"] = follow_mode(
                phonon, mode, model, amplitude, relax_cell=relax_cell, fmax=fmax, steps=steps, symprec=symprec
            )
        records.append(record)
        results.append({"mode": mode, "scan": scan, "scan_2d": scan_2d, "relaxed": relaxed})
    summary = {
        "threshold_THz": threshold,
        "qpoints_checked": commensurate_qpoints(phonon).tolist(),
        "n_imaginary_modes": len(modes),
        "modes": records + [mode.to_dict() for mode in modes[len(scanned):]],
    }
    return summary, results
