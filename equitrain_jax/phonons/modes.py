"""Phonon modes as real displacement patterns of phonopy's supercell, and the unstable (imaginary) ones.

Frequencies are in THz, imaginary ones as negative numbers (phonopy's convention).  A mode is looked
at in phonopy's supercell, where a commensurate q-point gives a real, periodic displacement pattern.
Its pattern ŵ [N, 3] is mass-weighted and normalised over the supercell (Σ_i |ŵ_i|² = 1), and the
amplitude Q (amu^½·Å) displaces atom i by u_i = Q ŵ_i / √m_i (Å; m_i in amu).  Then
E(Q) = E(0) + ½ λ Q² + O(Q³) per supercell, with λ = (2π f)² in eV/(amu·Å²), negative for an
imaginary f: an unstable mode is a double well in Q, and its minima point at the lower-symmetry
structure a phase transition would lead to.

With NAC parameters on the `Phonopy` (`equitrain_jax.phonons.nac`), the modes are phonopy's with
them, and they are still the supercell's: at the commensurate q ≠ 0 phonopy's NAC leaves the
frequencies unchanged (the supercell already holds the long-range term there), and Γ itself is
taken without NAC (its TO modes, which a periodic supercell has).  So the energy scans along them
(`equitrain_jax.phonons.scans`) are of the same modes with or without NAC.

`equitrain_jax.phonons.scans` computes the energy along such modes and follows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
from phonopy import Phonopy
from phonopy.harmonic.dynmat_to_fc import get_commensurate_points
from phonopy.physical_units import get_physical_units

from equitrain_jax.phonons.results import IMAGINARY_TOLERANCE_THZ

DEGENERACY_TOLERANCE_THZ = 1e-3
"""Bands at one q-point whose frequencies differ by less than this (THz) form one degenerate mode."""


def frequency_to_eigenvalue(frequency: Union[float, np.ndarray]) -> Union[float, np.ndarray]:
    """λ = sign(f)·(f / c)² in eV/(amu·Å²) from f in THz, c = phonopy's conversion factor (THz per √(eV/(amu·Å²)))."""
    factor = get_physical_units().DefaultToTHz
    return np.sign(frequency) * (np.asarray(frequency) / factor) ** 2


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
