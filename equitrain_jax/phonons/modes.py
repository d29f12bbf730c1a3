"""Unstable phonon modes: detection, energy scans along a mode, and following it to a relaxed structure.

Frequencies are in THz, imaginary ones as negative numbers (phonopy's convention).  A mode is looked
at in phonopy's supercell, where a commensurate q-point gives a real, periodic displacement pattern.
Its pattern ŵ [N, 3] is mass-weighted and normalised over the supercell (Σ_i |ŵ_i|² = 1), and the
amplitude Q (amu^½·Å) displaces atom i by u_i = Q ŵ_i / √m_i (Å; m_i in amu).  Then
E(Q) = E(0) + ½ λ Q² + O(Q³) per supercell, with λ = (2π f)² in eV/(amu·Å²), negative for an
imaginary f: an unstable mode is a double well in Q, and its minima point at the lower-symmetry
structure a phase transition would lead to.

The energy comes from either a `Potential` (batched) or any ASE calculator, so the same analysis
runs on our models and on reference potentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import ase
import numpy as np
from ase.calculators.calculator import Calculator as AseCalculator
from phonopy import Phonopy
from phonopy.harmonic.dynmat_to_fc import get_commensurate_points
from phonopy.physical_units import get_physical_units

from equitrain_jax.phonons.phonopy_interface import IMAGINARY_TOLERANCE_THZ, phonopy_to_ase
from equitrain_jax.potential import Potential

EnergyModel = Union[Potential, AseCalculator]
DEGENERACY_TOLERANCE_THZ = 1e-3
"""Bands at one q-point whose frequencies differ by less than this (THz) form one degenerate mode."""


def frequency_to_eigenvalue(frequency: Union[float, np.ndarray]) -> Union[float, np.ndarray]:
    """λ = sign(f)·(f / c)² in eV/(amu·Å²) from f in THz, c = phonopy's conversion factor (THz per √(eV/(amu·Å²)))."""
    factor = get_physical_units().DefaultToTHz
    return np.sign(frequency) * (np.asarray(frequency) / factor) ** 2


# ---------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class PhononMode:
    """A (possibly degenerate) phonon mode as real displacement patterns of phonopy's supercell.

    Attributes:
        qpoint: [3] reduced coordinates in the primitive cell's reciprocal basis.
        bands: band indices (0-based, in ascending frequency) of the degenerate set.
        frequency: THz, negative when imaginary.
        patterns: [d, N, 3] orthonormal mass-weighted supercell patterns spanning the mode: the
            real and imaginary parts of the Bloch waves of every band in the set (d = number of
            bands at q ≡ −q, twice that at other q-points).
        masses: [N] amu of the supercell atoms.
    """

    qpoint: np.ndarray
    bands: tuple[int, ...]
    frequency: float
    patterns: np.ndarray
    masses: np.ndarray

    @property
    def eigenvalue(self) -> float:
        """λ = (2π f)² in eV/(amu·Å²), negative for an imaginary mode: d²E/dQ² per supercell."""
        return float(frequency_to_eigenvalue(self.frequency))

    def displacements(self, amplitudes: Union[float, Sequence[float]]) -> np.ndarray:
        """Atomic displacements [N, 3] Å for amplitudes Q_k (amu^½·Å) along the first len(Q) patterns."""
        amplitudes = np.atleast_1d(np.asarray(amplitudes, dtype=float))
        if len(amplitudes) > len(self.patterns):
            raise ValueError(f"{len(amplitudes)} amplitudes for a mode spanned by {len(self.patterns)} patterns")
        weighted = np.einsum("k,kia->ia", amplitudes, self.patterns[: len(amplitudes)])
        return weighted / np.sqrt(self.masses)[:, None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "qpoint": np.round(self.qpoint, 10).tolist(),
            "bands": list(self.bands),
            "frequency_THz": self.frequency,
            "eigenvalue_eV_per_amu_A2": self.eigenvalue,
            "n_patterns": len(self.patterns),
        }


def commensurate_qpoints(phonon: Phonopy, symmetry_reduce: bool = True) -> np.ndarray:
    """q-points [K, 3] (primitive reciprocal basis) at which phonopy's supercell is exact.

    With ``symmetry_reduce`` one q-point per star: q-points mapped onto each other by a point-group
    rotation of the primitive cell (q → Rᵀq) or by time reversal (q → −q) have the same frequencies.
    """
    primitive = phonon.primitive.cell
    supercell_in_primitive = np.rint(phonon.supercell.cell @ np.linalg.inv(primitive)).astype(int)
    qpoints = get_commensurate_points(supercell_in_primitive.T)
    if not symmetry_reduce:
        return qpoints
    rotations = phonon.primitive_symmetry.pointgroup_operations
    # star of each q: [K, 2·n_rotations, 3], rotations and time reversal
    stars = np.concatenate([np.einsum("rba,qb->qra", rotations, sign * qpoints) for sign in (1, -1)], axis=1)
    kept: list[int] = []
    for index, star in enumerate(stars):
        differences = star[:, None, :] - qpoints[kept][None, :, :]
        if not np.any(np.all(np.abs(differences - np.rint(differences)) < 1e-8, axis=-1)):
            kept.append(index)
    return qpoints[kept]


def supercell_patterns(phonon: Phonopy, qpoint: Sequence[float], eigenvectors: np.ndarray) -> np.ndarray:
    """Orthonormal real supercell patterns [d, N, 3] spanning the Bloch waves of ``eigenvectors``.

    ``eigenvectors`` [3·n_prim, k] are phonopy's (columns of ``get_frequencies_with_eigenvectors``),
    whose phase convention uses atomic positions: the wave on supercell atom s of primitive atom p
    is e_p·exp(2πi q·x_s), x_s the position of s in the primitive basis.  Its real and imaginary
    parts are both eigenvectors of the supercell's (real) dynamical matrix with the same eigenvalue.
    """
    primitive = phonon.primitive
    supercell = phonon.supercell
    qpoint = np.asarray(qpoint, dtype=float)
    eigenvectors = np.asarray(eigenvectors).reshape(3 * len(primitive), -1)
    primitive_index = np.array([primitive.p2p_map[s] for s in primitive.s2p_map])
    positions = supercell.positions @ np.linalg.inv(primitive.cell)
    phases = np.exp(2j * np.pi * positions @ qpoint)  # [N]
    waves = eigenvectors.reshape(len(primitive), 3, -1)[primitive_index] * phases[:, None, None]  # [N, 3, k]
    real = np.concatenate([waves.real, waves.imag], axis=-1).reshape(3 * len(supercell), -1).T  # [2k, 3N]
    _, singular, basis = np.linalg.svd(real, full_matrices=False)
    basis = basis[singular > 1e-6 * singular[0]]
    signs = np.sign(basis[np.arange(len(basis)), np.argmax(np.abs(basis), axis=1)])
    return (basis * signs[:, None]).reshape(len(basis), len(supercell), 3)


def modes_at(
    phonon: Phonopy, qpoint: Sequence[float], degeneracy_tolerance: float = DEGENERACY_TOLERANCE_THZ
) -> list[PhononMode]:
    """All modes at ``qpoint`` (primitive reciprocal basis), degenerate bands grouped, lowest first."""
    frequencies, eigenvectors = phonon.get_frequencies_with_eigenvectors(np.asarray(qpoint, dtype=float))
    groups: list[list[int]] = []
    for band, frequency in enumerate(frequencies):
        if groups and abs(frequency - frequencies[groups[-1][-1]]) < degeneracy_tolerance:
            groups[-1].append(band)
        else:
            groups.append([band])
    masses = np.asarray(phonon.supercell.masses, dtype=float)
    return [
        PhononMode(
            qpoint=np.asarray(qpoint, dtype=float),
            bands=tuple(group),
            frequency=float(np.mean(frequencies[group])),
            patterns=supercell_patterns(phonon, qpoint, eigenvectors[:, group]),
            masses=masses,
        )
        for group in groups
    ]


def imaginary_modes(
    phonon: Phonopy,
    threshold: float = IMAGINARY_TOLERANCE_THZ,
    qpoints: Optional[np.ndarray] = None,
    degeneracy_tolerance: float = DEGENERACY_TOLERANCE_THZ,
) -> list[PhononMode]:
    """Modes with frequency below −``threshold`` (THz) at Γ and the supercell's commensurate q-points
    (one per star, `commensurate_qpoints`) or at the given ``qpoints``, most unstable first."""
    if threshold < 0:
        raise ValueError(f"threshold is a positive frequency in THz (modes below −threshold count), got {threshold}")
    if qpoints is None:
        qpoints = commensurate_qpoints(phonon)
    modes = [
        mode
        for qpoint in np.atleast_2d(qpoints)
        for mode in modes_at(phonon, qpoint, degeneracy_tolerance)
        if mode.frequency < -threshold
    ]
    return sorted(modes, key=lambda mode: mode.frequency)


# ---------------------------------------------------------------------------- energies along a mode


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
    amplitudes = np.asarray(
        default_amplitudes(mode, max_displacement, npoints) if amplitudes is None else amplitudes, dtype=float
    )
    structures = [phonopy_to_ase(phonon.supercell)]
    for pattern in range(len(mode.patterns)):
        coefficients = np.zeros(len(mode.patterns))
        for amplitude in amplitudes:
            coefficients[pattern] = amplitude
            structures.append(displaced_supercell(phonon, mode, coefficients))
    energies = supercell_energies(model, structures)
    return {
        "amplitudes": amplitudes,
        "energies": (energies[1:] - energies[0]).reshape(len(mode.patterns), len(amplitudes)),
        "reference_energy": energies[0],
    }


def scan_mode_2d(
    phonon: Phonopy,
    mode: PhononMode,
    model: EnergyModel,
    amplitudes: Optional[Sequence[float]] = None,
    max_displacement: float = 0.3,
    npoints: int = 15,
) -> dict[str, np.ndarray]:
    """Energy on a grid Q₁ × Q₂ over the first two patterns of a degenerate mode: ``amplitudes`` [Q]
    (amu^½·Å, both axes) and ``energies`` [Q, Q] (eV per supercell relative to E(0), [i, j] at
    Q₁ = amplitudes[i], Q₂ = amplitudes[j])."""
    if len(mode.patterns) < 2:
        raise ValueError(f"a 2D scan needs a mode spanned by two patterns; mode at q={mode.qpoint.tolist()} "
                         f"bands {list(mode.bands)} has {len(mode.patterns)}")
    amplitudes = np.asarray(
        default_amplitudes(mode, max_displacement, npoints) if amplitudes is None else amplitudes, dtype=float
    )
    structures = [phonopy_to_ase(phonon.supercell)]
    structures += [displaced_supercell(phonon, mode, [q1, q2]) for q1 in amplitudes for q2 in amplitudes]
    energies = supercell_energies(model, structures)
    return {
        "amplitudes": amplitudes,
        "energies": (energies[1:] - energies[0]).reshape(len(amplitudes), len(amplitudes)),
        "reference_energy": energies[0],
    }


# ---------------------------------------------------------------------------- following a mode


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

    Relaxation: ASE BFGS on the positions (with ``relax_cell``, also the cell through a
    FrechetCellFilter) to ``fmax`` eV/Å or ``steps`` steps.  Returns the relaxed supercell and a
    JSON-ready record: energies (eV per supercell and meV/atom relative to the undisplaced
    supercell), whether it converged, and the space groups (``symprec`` Å) before, displaced, after.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    from equitrain_jax.calculator import Calculator

    calculator = Calculator(model) if isinstance(model, Potential) else model
    undisplaced = phonopy_to_ase(phonon.supercell)
    atoms = displaced_supercell(phonon, mode, [amplitude])
    displaced_group = space_group(atoms, symprec)
    energy0, displaced_energy = supercell_energies(calculator, [undisplaced, atoms])
    atoms.calc = calculator
    optimizer = BFGS(FrechetCellFilter(atoms) if relax_cell else atoms, logfile=logfile)
    converged = bool(optimizer.run(fmax=fmax, steps=steps))
    relaxed_energy = float(atoms.get_potential_energy())
    n = len(atoms)
    record = {
        "amplitude_amu05_A": float(amplitude),
        "relax_cell": relax_cell,
        "converged": converged,
        "steps": int(optimizer.nsteps),
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
