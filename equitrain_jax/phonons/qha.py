"""Quasi-harmonic approximation (QHA): phonons at many volumes from one compiled batch of
Hessian-vector products, handed to phonopy's QHA (`phonopy.run_qha`).

The volume grid follows ASE's ``calculate_eos``: the cell is scaled isotropically so that the
volumes are V₀·(1 − s) … V₀·(1 + s), evenly spaced, ``s`` the volume strain range.  At each volume
the internal coordinates are relaxed with the symmetry kept (``ase.constraints.FixSymmetry``;
nothing moves in Si, Al, C or MgO), then every volume's force constants come from ONE padded
batch of Hessian-vector products: the supercells of all volumes form one graph (their Hessian is
block diagonal), so one product per phonopy displacement — the same displacement at every
volume — gives the exact harmonic forces of all volumes at once, and the batch compiles once.
Phonopy's solver turns the displacements and forces into force constants, as
``force_constants(method="displacements")`` does for one structure.

Units: volumes in Å³ and static energies in eV per primitive cell (phonopy normalises phonon
thermal properties per primitive cell; `phonopy.run_qha` expects both that way), temperatures
in K, frequencies in THz.  `QHAResult` (phonopy's) is in eV, Å and K throughout; its writers
(`write_qha`) produce phonopy-qha's files in J/K/mol and GPa.
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import ase
import jax
import jax.numpy as jnp
import numpy as np
import phonopy
from phonopy import Phonopy
from phonopy.gruneisen.band_structure import GruneisenBandStructure
from phonopy.gruneisen.core import GruneisenBase
from phonopy.phonon.grid import length2mesh
from phonopy.physical_units import get_physical_units
from phonopy.qha import output as qha_output
from phonopy.qha.core import BulkModulus
from phonopy.qha.qha import QHAResult
from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

from equitrain_jax.data import batch_graphs
from equitrain_jax.phonons import band_structure, check_supercell_size, load_reference
from equitrain_jax.phonons.bridge import ase_to_phonopy, phonopy_to_ase
from equitrain_jax.phonons.hessian import compiled_hessian_vector_products
from equitrain_jax.phonons.qha_config import (  # noqa: F401  (re-exported: the QHA's defaults)
    N_VOLUMES,
    VOLUME_STRAIN_RANGE,
    DISPLACEMENT_DISTANCE,
    EOS,
    MESH,
    SMOOTHNESS_TOLERANCE_MEV,
    GRUNEISEN_MIN_FREQUENCY_THZ,
    EOS_CHOICES,
    temperature_grid,
    volume_factors,
)
from equitrain_jax.potential import Potential

EV_TO_J_PER_MOL = get_physical_units().EvTokJmol * 1000.0
EV_PER_A3_TO_GPA = get_physical_units().EVAngstromToGPa


# ---------------------------------------------------------------------------- volumes


def scale_volume(atoms: ase.Atoms, factor: float) -> ase.Atoms:
    """A copy of ``atoms`` with its cell scaled isotropically to ``factor`` times the volume
    (fractional coordinates kept)."""
    scaled = atoms.copy()
    scaled.calc = None
    scaled.set_cell(atoms.cell.array * factor ** (1 / 3), scale_atoms=True)
    return scaled


def relax_positions(
    atoms: ase.Atoms, potential: Potential, fmax: float = 1e-4, steps: int = 200, cell: bool = False
) -> tuple[ase.Atoms, bool]:
    """Relax internal coordinates (and with ``cell`` also the cell) with the symmetry kept.

    BFGS with ``ase.constraints.FixSymmetry``; ``fmax`` in eV/Å (with ``cell``, ASE's
    ``FrechetCellFilter`` also relaxes the stress).  Returns a relaxed copy (no constraint,
    no calculator) and whether it converged in ``steps``.
    """
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    from equitrain_jax.calculator import Calculator

    relaxed = atoms.copy()
    relaxed.calc = Calculator(potential)
    relaxed.set_constraint(FixSymmetry(relaxed))
    target = FrechetCellFilter(relaxed) if cell else relaxed
    converged = bool(BFGS(target, logfile=None).run(fmax=fmax, steps=steps))
    relaxed.set_constraint()
    relaxed.calc = None
    return relaxed, converged


# ---------------------------------------------------------------------------- force constants


def _hvp_over_structures(potential: Potential, structures: Sequence[ase.Atoms], tangents: np.ndarray,
                         chunk_size: int) -> np.ndarray:
    """Hessian-vector products of several structures in one compiled call per chunk: [K, ΣN, 3] eV/Å².

    The structures (each's neighbour list built at its positions) are batched into ONE padded
    device graph; the energy summed over them has a block-diagonal Hessian, so a tangent holding
    a displacement of every structure gives every structure's product at once.  ``tangents``
    [K, ΣN, 3] (Å, atoms in the order of ``structures``) are evaluated ``chunk_size`` per call,
    the last chunk padded with zeros, so the shapes, and the compilation, are those of one call.

    The products are the package's one Hessian-vector product
    (`equitrain_jax.phonons.hessian.compiled_hessian_vector_products`, a jvp of the gradient of
    `equitrain_jax.models.quantities.energy`) on the batched padded graph; padding nodes get zero
    tangents.
    """
    graph = potential.device_graph(batch_graphs([potential.graph(atoms) for atoms in structures]))
    n_total = sum(len(atoms) for atoms in structures)
    positions = graph.nodes["positions"]
    n_padding = positions.shape[0] - n_total
    compiled = compiled_hessian_vector_products(potential)
    blocks = []
    for start in range(0, len(tangents), chunk_size):
        part = tangents[start : start + chunk_size]
        padded = np.concatenate([part, np.zeros((chunk_size - len(part), n_total, 3))])
        padded = np.concatenate([padded, np.zeros((chunk_size, n_padding, 3))], axis=1)
        out = compiled(potential.variables, graph, positions, jnp.asarray(padded, dtype=positions.dtype))
        blocks.append(np.asarray(out, dtype=np.float64)[: len(part), :n_total])
    return np.concatenate(blocks)


def phonons_at_volumes(
    potential: Potential,
    unitcells: Sequence[ase.Atoms],
    supercell_matrix: Union[int, Sequence[int], Sequence[Sequence[int]], np.ndarray],
    primitive_matrix: Any = "auto",
    distance: float = DISPLACEMENT_DISTANCE,
    symmetrize: bool = True,
    symprec: float = 1e-5,
    chunk_size: Optional[int] = None,
    check_size: bool = True,
) -> list[Phonopy]:
    """A `Phonopy` with force constants (eV/Å²) for each unit cell, from one batch of
    Hessian-vector products over all of them.

    Each gets phonopy's least displacements (``generate_displacements(is_plusminus=False)``)
    and, for each displacement u, the exact harmonic forces F = −H·u of its supercell; phonopy's
    solver makes the force constants (then ``symmetrize_force_constants()`` with
    ``symmetrize``), exactly as `force_constants` with ``method="displacements"`` per structure.
    Displacement k of every unit cell shares one product (cells with fewer displacements get a
    zero vector there).  ``chunk_size`` products per compiled call (default: as many as keep
    chunk × atoms of all supercells ≤ 768, at least one); ``distance`` in Å, ``symprec`` in Å;
    ``check_size`` warns once if the supercells are narrower than 2·r_max (`check_supercell_size`).
    """
    matrix = np.asarray(supercell_matrix, dtype=int)
    matrix = np.eye(3, dtype=int) * int(matrix) if matrix.ndim == 0 else matrix
    phonons = []
    for unitcell in unitcells:
        with warnings.catch_warnings():  # phonopy 4's notice that "auto" is its new default
            warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
            phonon = Phonopy(ase_to_phonopy(unitcell), supercell_matrix=matrix, primitive_matrix=primitive_matrix,
                             symprec=symprec)
        # one primitive basis for all volumes (mode Grüneisen parameters difference their dynamical matrices)
        primitive_matrix = phonon.primitive_matrix
        phonon.generate_displacements(distance=distance, is_plusminus=False)
        phonons.append(phonon)
    supercells = [phonopy_to_ase(phonon.supercell) for phonon in phonons]
    if check_size:
        check_supercell_size(supercells[0], potential.cutoff, potential.config.num_interactions, stacklevel=3)
    sizes = [len(cell) for cell in supercells]
    offsets = np.cumsum([0] + sizes)
    datasets = [phonon.dataset["first_atoms"] for phonon in phonons]
    tangents = np.zeros((max(len(d) for d in datasets), offsets[-1], 3))
    for offset, dataset in zip(offsets, datasets):
        for k, first in enumerate(dataset):
            tangents[k, offset + first["number"]] = first["displacement"]
    chunk = int(chunk_size or max(1, 768 // int(offsets[-1])))
    if chunk < 1:
        raise ValueError(f"chunk_size must be a positive number of products, got {chunk_size}")
    products = _hvp_over_structures(potential, supercells, tangents, min(chunk, len(tangents)))
    for v, (phonon, dataset) in enumerate(zip(phonons, datasets)):
        phonon.forces = -products[: len(dataset), offsets[v] : offsets[v + 1]]
        phonon.produce_force_constants()
        if symmetrize:
            phonon.symmetrize_force_constants(show_drift=False)
    return phonons


def primitive_energies(potential: Potential, phonons: Sequence[Phonopy]) -> np.ndarray:
    """Static energies (eV per primitive cell) of the phonons' unit cells, from the model."""
    unitcells = [phonopy_to_ase(phonon.unitcell) for phonon in phonons]
    # one by one: the shapes (and compiled program) of the relaxations' single-cell evaluations
    energies = np.array([out["energy"] for out in potential.evaluate(unitcells, batch_size=1)])
    return energies * np.array([len(p.primitive) / len(p.unitcell) for p in phonons])


@dataclass
class VolumeSeries:
    """Phonons and static energies on a volume grid: what `quasi_harmonic` needs.

    Attributes:
        phonons: one `Phonopy` (force constants set) per volume, ascending volume.
        energies: [V] static energies, eV per primitive cell.
        volume_factors: [V] V/V_ref of the grid (V_ref: the reference structure's volume).
        converged: [V] whether each internal relaxation converged (True where none was done).
        timings: seconds of the stages (``relax``, ``force_constants``, ``energies``).
    """

    phonons: list[Phonopy]
    energies: np.ndarray
    volume_factors: np.ndarray
    converged: list[bool] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def volumes(self) -> np.ndarray:
        """[V] Å³ per primitive cell."""
        return np.array([phonon.primitive.volume for phonon in self.phonons])


def volume_series(
    potential: Potential,
    atoms: ase.Atoms,
    supercell_matrix: Union[int, Sequence[int], Sequence[Sequence[int]], np.ndarray],
    n_volumes: int = N_VOLUMES,
    strain_range: float = VOLUME_STRAIN_RANGE,
    primitive_matrix: Any = "auto",
    relax: bool = True,
    fmax: float = 1e-4,
    relax_steps: int = 200,
    chunk_size: Optional[int] = None,
    progress: bool = False,
) -> VolumeSeries:
    """Scale ``atoms`` to the grid of `volume_factors` (ASE-style, around its own volume), relax
    the internal coordinates at each volume with the symmetry kept (``relax``; ``fmax`` eV/Å),
    then get every volume's force constants from one batch (`phonons_at_volumes`) and the static
    energies from the model.  ``progress`` shows a bar over the volumes' relaxations.
    """
    from tqdm import tqdm

    factors = volume_factors(n_volumes, strain_range)
    start = time.perf_counter()
    cells, converged = [], []
    for factor in tqdm(factors, desc="relaxing volumes", unit="volume", disable=not progress):
        cell = scale_volume(atoms, factor)
        if relax:
            cell, ok = relax_positions(cell, potential, fmax=fmax, steps=relax_steps)
        else:
            ok = True
        cells.append(cell)
        converged.append(ok)
    timings = {"relax": time.perf_counter() - start}
    start = time.perf_counter()
    phonons = phonons_at_volumes(potential, cells, supercell_matrix, primitive_matrix=primitive_matrix,
                                 chunk_size=chunk_size)
    timings["force_constants"] = time.perf_counter() - start
    start = time.perf_counter()
    energies = primitive_energies(potential, phonons)
    timings["energies"] = time.perf_counter() - start
    return VolumeSeries(phonons, energies, factors, converged, timings)


# ---------------------------------------------------------------------------- QHA


def quasi_harmonic(
    phonons: Sequence[Phonopy],
    energies: Sequence[float],
    t_max: float = 1000.0,
    t_step: float = 10.0,
    mesh: Union[float, Sequence[int]] = MESH,
    eos: str = EOS,
    pressure: Optional[float] = None,
) -> QHAResult:
    """Phonopy's QHA (`phonopy.run_qha`) of phonons at ≥ 5 volumes with static ``energies``
    (eV per primitive cell): V(T), B(T), β(T), G(T), C_P(T) and γ(T) from 0 to ``t_max`` K.

    The three acoustic modes at Γ are left out of the thermal properties (phonopy's
    ``exclude_gamma_acoustic``), imaginary modes as phonopy always does; ``mesh`` is phonopy's
    q-point sampling: three numbers, or a length in Å turned into numbers once, on the middle
    volume (phonopy's ``length2mesh``), so that every volume is sampled on the same grid; ``eos``
    'vinet', 'birch_murnaghan' or 'murnaghan', ``pressure`` in GPa.  Temperatures whose F(V) fit
    fails are dropped by phonopy.
    """
    if np.ndim(mesh) == 0:  # one grid for all volumes: a length would give each volume its own
        middle = phonons[len(phonons) // 2]
        mesh = length2mesh(float(mesh), middle.primitive.cell,
                           rotations=middle.primitive_symmetry.pointgroup_operations)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # fits at temperatures phonopy drops
        return phonopy.run_qha(list(phonons), temperature_grid(t_max, t_step), internal_energies=np.asarray(energies),
                               mesh=mesh, eos=eos, pressure=pressure, exclude_gamma_acoustic=True)


def static_eos(volumes: Sequence[float], energies: Sequence[float], eos: str = EOS) -> dict[str, float]:
    """E(V) fit without phonons: ``E0_eV``, ``V0_angstrom3``, ``B0_GPa``, ``B0_prime``."""
    e0, b0, b_prime, v0 = BulkModulus(np.asarray(volumes), np.asarray(energies), eos=eos).get_parameters()
    return {"E0_eV": float(e0), "V0_angstrom3": float(v0), "B0_GPa": float(b0 * EV_PER_A3_TO_GPA),
            "B0_prime": float(b_prime)}


def at_temperature(result: QHAResult, values: np.ndarray, temperature: float) -> float:
    """A QHA quantity linearly interpolated to ``temperature`` (K)."""
    if not result.temperatures[0] <= temperature <= result.temperatures[-1]:
        raise ValueError(f"{temperature} K is outside the QHA's {result.temperatures[0]}–{result.temperatures[-1]} K")
    return float(np.interp(temperature, result.temperatures, values))


def qha_summary(result: QHAResult, volumes: Sequence[float], energies: Sequence[float], n_atoms_primitive: int,
                temperature: float = 300.0) -> dict[str, Any]:
    """JSON-ready numbers of a QHA, per primitive cell; units in the keys.

    ``static`` is the E(V) fit without phonons (V0, B0); ``at_<T>K`` the QHA at ``temperature``:
    V, B, the volumetric expansion β and the linear α = β/3 (exact for cubic crystals; for others
    the mean of the axes under this isotropic-volume QHA), and V/V0 − 1 against the static V0.
    ``nte_minimum`` is the most negative β and its temperature, or None without negative
    expansion.  ``sampled_volumes_angstrom3`` and ``extrapolated_from_K`` (the first temperature
    whose V(T) leaves the sampled volumes, or None) say where the fit is an extrapolation.
    ``phonon_free_energy_smoothness`` checks that F_ph(V) at ``temperature`` is smooth (a cubic in V
    within `SMOOTHNESS_TOLERANCE_MEV` per atom): force constants that jump between volumes — a
    neighbour distance crossing a radius where the model's energy is not twice differentiable, such
    as either radius of SevenNet's XPLOR cutoff switch — make β(T) meaningless.
    """
    static = static_eos(volumes, energies, result.eos_name)
    beta = np.asarray(result.thermal_expansion)
    volume_t = at_temperature(result, result.equilibrium_volumes, temperature)
    positive_t = result.temperatures > 0
    nte = None
    if np.any(beta[positive_t] < 0):
        index = int(np.argmin(np.where(positive_t, beta, np.inf)))
        nte = {"temperature_K": float(result.temperatures[index]), "volumetric_per_K": float(beta[index]),
               "linear_per_K": float(beta[index] / 3)}
    outside = (result.equilibrium_volumes < min(volumes)) | (result.equilibrium_volumes > max(volumes))
    index = int(np.argmin(np.abs(result.temperatures - temperature)))
    phonon_free_energy = result.helmholtz_volume[index] - np.asarray(energies)
    fit = np.polyval(np.polyfit(volumes, phonon_free_energy, 3), volumes)
    residual = 1e3 * float(np.max(np.abs(fit - phonon_free_energy))) / n_atoms_primitive
    key = f"at_{temperature:g}K"
    return {
        "per": "primitive cell",
        "eos": result.eos_name,
        "static": static,
        "V_0K_angstrom3": float(result.equilibrium_volumes[0]),
        key: {
            "temperature_K": temperature,
            "V_angstrom3": volume_t,
            "V_over_V0_minus_1": volume_t / static["V0_angstrom3"] - 1,
            "B_GPa": at_temperature(result, result.bulk_moduli, temperature) * EV_PER_A3_TO_GPA,
            "volumetric_thermal_expansion_per_K": at_temperature(result, beta, temperature),
            "linear_thermal_expansion_per_K": at_temperature(result, beta, temperature) / 3,
            "Cp_J_per_K_mol": at_temperature(result, result.heat_capacity_P.heat_capacities, temperature) * EV_TO_J_PER_MOL,
            "gruneisen": at_temperature(result, result.gruneisen_parameters, temperature),
        },
        "nte_minimum": nte,
        "t_max_K": float(result.temperatures[-1]),
        "sampled_volumes_angstrom3": [float(min(volumes)), float(max(volumes))],
        "extrapolated_from_K": float(result.temperatures[np.argmax(outside)]) if outside.any() else None,
        "phonon_free_energy_smoothness": {
            "temperature_K": float(result.temperatures[index]),
            "cubic_fit_max_residual_meV_per_atom": residual,
            "tolerance_meV_per_atom": SMOOTHNESS_TOLERANCE_MEV,
            "smooth": residual <= SMOOTHNESS_TOLERANCE_MEV,
        },
    }


QHA_FILES = {
    "thermal_expansion": ("thermal_expansion.dat", qha_output.write_thermal_expansion),
    "volume": ("volume-temperature.dat", qha_output.write_volume_temperature),
    "bulk_modulus": ("bulk_modulus-temperature.dat", qha_output.write_bulk_modulus_temperature),
    "gibbs": ("gibbs-temperature.dat", qha_output.write_gibbs_temperature),
    "gruneisen_temperature": ("gruneisen-temperature.dat", qha_output.write_gruneisen_temperature),
    "helmholtz_volume": ("helmholtz-volume.dat", qha_output.write_helmholtz_volume),
    "entropy": ("entropy-temperature.dat", qha_output.write_entropy_temperature),
}
"""Key → (phonopy-qha's file name, phonopy's writer) of the files `write_qha` writes."""


def write_qha(result: QHAResult, directory: Union[str, os.PathLike], volumes: Sequence[float],
              energies: Sequence[float]) -> dict[str, Path]:
    """Phonopy-qha's output files, by phonopy's own writers, into ``directory``; returns the paths.

    `QHA_FILES` plus ``Cp-temperature.dat`` (C_P from polynomial fits of S(V) and Cv(V), J/K/mol;
    with its by-products ``entropy-volume.dat``, ``Cv-volume.dat``, ``dsdv-temperature.dat``) and
    ``e-v.dat`` (phonopy-qha's input: volume Å³ and static energy eV per primitive cell).
    Volumetric β in 1/K, B in GPa, G in eV, per primitive cell.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, (name, writer) in QHA_FILES.items():
        paths[key] = directory / name
        writer(result, filename=paths[key])
    paths["heat_capacity"] = directory / "Cp-temperature.dat"
    qha_output.write_heat_capacity_P(
        result, filename=paths["heat_capacity"], filename_ev=directory / "entropy-volume.dat",
        filename_cvv=directory / "Cv-volume.dat", filename_dsdvt=directory / "dsdv-temperature.dat",
    )
    paths["e_v"] = directory / "e-v.dat"
    np.savetxt(paths["e_v"], np.column_stack([volumes, energies]), fmt="%20.10f",
               header="volume (A^3 per primitive cell)   static energy (eV per primitive cell)")
    return paths


# ---------------------------------------------------------------------------- mode Grüneisen parameters


def gruneisen_centre(volumes: Sequence[float], v0: float) -> int:
    """Index of the grid volume nearest ``v0`` that has a neighbour on each side."""
    volumes = np.asarray(volumes)
    return int(np.clip(np.argmin(np.abs(volumes - v0)), 1, len(volumes) - 2))


def mode_gruneisen(phonons: Sequence[Phonopy], centre: int, qpoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mode Grüneisen parameters γ = −(V/ω) ∂ω/∂V at reduced ``qpoints`` [Q, 3] of the volume
    ``centre``, by phonopy (first-order perturbation with ∂D/∂V from the neighbouring volumes
    ``centre ± 1``).  Returns (frequencies [Q, B] THz ascending, γ [Q, B])."""
    if not 1 <= centre <= len(phonons) - 2:
        raise ValueError(f"volume {centre} needs a neighbour on each side among {len(phonons)} volumes")
    with np.errstate(divide="ignore", invalid="ignore"):  # γ is 0/0 for the acoustic modes at Γ
        base = GruneisenBase(phonons[centre].dynamical_matrix, phonons[centre + 1].dynamical_matrix,
                             phonons[centre - 1].dynamical_matrix, qpoints=np.asarray(qpoints, dtype=float))
    eigenvalues = base.get_eigenvalues()
    frequencies = np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * phonons[centre].unit_conversion_factor
    return frequencies, np.asarray(base.get_gruneisen())


def gruneisen_band_structure(phonons: Sequence[Phonopy], centre: int, npoints: int = 51) -> GruneisenBandStructure:
    """Phonopy's `GruneisenBandStructure` on the automatic band path of volume ``centre`` (its
    ``write_yaml`` writes phonopy-gruneisen's ``gruneisen.yaml``)."""
    bands = band_structure(phonons[centre], npoints=npoints)
    with np.errstate(divide="ignore", invalid="ignore"):  # γ is 0/0 for the acoustic modes at Γ
        return GruneisenBandStructure(
            bands["qpoints"], phonons[centre].dynamical_matrix, phonons[centre + 1].dynamical_matrix,
            phonons[centre - 1].dynamical_matrix, factor=phonons[centre].unit_conversion_factor,
            path_connections=bands["path_connections"], labels=bands["labels"],
        )


# ---------------------------------------------------------------------------- DFT reference


def load_reference_volumes(directory: Union[str, os.PathLike]) -> tuple[list[Phonopy], np.ndarray, dict]:
    """A reference volume series from ``directory/volumes.json``.

    The JSON holds ``volume_factors``, ``volumes_angstrom3`` and ``static_energies_eV`` (per
    primitive cell) and ``phonopy_params`` (phonopy YAMLs with forces or force constants,
    relative to ``directory``), one per volume.  Returns the phonons (ascending volume), the
    static energies (eV per primitive cell) and the JSON.  Raises FileNotFoundError or ValueError
    naming the file and the problem.
    """
    directory = Path(directory)
    path = directory / "volumes.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a QHA reference directory holds volumes.json)")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from error
    missing = [key for key in ("phonopy_params", "static_energies_eV") if key not in record]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    files, energies = record["phonopy_params"], np.asarray(record["static_energies_eV"], dtype=float)
    if len(files) != len(energies) or len(files) < 5:
        raise ValueError(f"{path}: need ≥ 5 volumes with one energy each, got {len(files)} phonopy files and "
                         f"{len(energies)} energies")
    phonons = [load_reference(directory / name) for name in files]
    for name, phonon in zip(files[1:], phonons[1:]):
        for attribute in ("primitive_matrix", "supercell_matrix"):
            if not np.allclose(getattr(phonon, attribute), getattr(phonons[0], attribute)):
                raise ValueError(f"{directory / name}: its {attribute} differs from {directory / files[0]}'s; "
                                 "mode Grüneisen parameters need one primitive basis for all volumes")
    order = np.argsort([phonon.primitive.volume for phonon in phonons])
    volumes = np.array([phonons[i].primitive.volume for i in order])
    if "volumes_angstrom3" in record:
        listed = np.sort(np.asarray(record["volumes_angstrom3"], dtype=float))
        if listed.shape != volumes.shape or not np.allclose(listed, volumes, rtol=1e-4):
            raise ValueError(f"{path}: volumes_angstrom3 {listed.round(3).tolist()} are not the primitive-cell "
                             f"volumes of the phonopy files {volumes.round(3).tolist()} Å³")
    return [phonons[i] for i in order], energies[order], record


# ---------------------------------------------------------------------------- analysis and comparison


@dataclass
class QuasiHarmonic:
    """A QHA with what it came from: phonons and static energies per volume, phonopy's result,
    `qha_summary`, and the volume (``centre``, nearest the static V0) of the mode Grüneisen
    parameters."""

    phonons: list[Phonopy]
    energies: np.ndarray
    result: QHAResult
    summary: dict[str, Any]
    centre: int

    @property
    def volumes(self) -> np.ndarray:
        """[V] Å³ per primitive cell."""
        return np.array([phonon.primitive.volume for phonon in self.phonons])


def analyse(
    phonons: Sequence[Phonopy],
    energies: Sequence[float],
    t_max: float = 1000.0,
    t_step: float = 10.0,
    mesh: Union[float, Sequence[int]] = MESH,
    eos: str = EOS,
    temperature: float = 300.0,
) -> QuasiHarmonic:
    """`quasi_harmonic` and `qha_summary` of a volume series (phonons ascending in volume)."""
    volumes = np.array([phonon.primitive.volume for phonon in phonons])
    if np.any(np.diff(volumes) <= 0):
        raise ValueError(f"the phonons' volumes must ascend, got {volumes.round(4).tolist()} Å³")
    result = quasi_harmonic(phonons, energies, t_max=t_max, t_step=t_step, mesh=mesh, eos=eos)
    summary = qha_summary(result, volumes, energies, len(phonons[0].primitive), temperature=temperature)
    centre = gruneisen_centre(volumes, summary["static"]["V0_angstrom3"])
    summary["gruneisen_volume_angstrom3"] = float(volumes[centre])
    return QuasiHarmonic(list(phonons), np.asarray(energies, dtype=float), result, summary, centre)


def gruneisen_on_path(model: QuasiHarmonic, others: Optional[Mapping[str, QuasiHarmonic]] = None, npoints: int = 51,
                      label: str = "model") -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Mode Grüneisen parameters on the automatic band path of ``model``'s Grüneisen volume, for the
    model and each of ``others`` at the same q-points of the same primitive cell (their cells may
    differ by a strain, `equitrain_jax.phonons.compare.primitive_transformation`), or, for a cell
    in another orientation, on its own automatic (seekpath) band path, which must have the same
    labels and segment lengths: the same path in its own basis.  Returns the
    band path (`band_structure`'s dict) and, by label (``model``'s ``label`` first), (frequencies
    THz ascending, γ), each [Q, B]."""
    from equitrain_jax.phonons.compare import primitive_transformation

    centre = model.phonons[model.centre]
    bands = band_structure(centre, npoints=npoints)
    qpoints = np.concatenate(bands["qpoints"])
    curves = {label: mode_gruneisen(model.phonons, model.centre, qpoints)}
    for name, other in (others or {}).items():
        other_centre = other.phonons[other.centre]
        try:
            other_qpoints = qpoints @ primitive_transformation(centre, other_centre).T
        except ValueError:  # another orientation (a CIF, say): the same seekpath path in its own basis
            other_bands = band_structure(other_centre, npoints=npoints)
            if other_bands["labels"] != bands["labels"] or [len(q) for q in other_bands["qpoints"]] != [
                    len(q) for q in bands["qpoints"]]:
                raise ValueError(f"{name}'s cell is neither the same lattice as the model's nor on the same "
                                 f"automatic band path ({other_bands['labels']} against {bands['labels']})") from None
            other_qpoints = np.concatenate(other_bands["qpoints"])
        curves[name] = mode_gruneisen(other.phonons, other.centre, other_qpoints)
    return bands, curves


def gruneisen_error(model: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray],
                    min_frequency: float = GRUNEISEN_MIN_FREQUENCY_THZ) -> dict[str, float]:
    """MAE and largest |error| of mode Grüneisen parameters, band by band (ascending frequency)
    at the same q-points, over the modes whose reference frequency is at least ``min_frequency``
    THz; also the mean γ of each (``model_mean``, ``reference_mean``) over those modes."""
    (_, gamma), (frequencies, gamma_reference) = model, reference
    kept = frequencies >= min_frequency
    difference = gamma[kept] - gamma_reference[kept]
    return {"mae": float(np.mean(np.abs(difference))), "max_abs_error": float(np.max(np.abs(difference))),
            "model_mean": float(np.mean(gamma[kept])), "reference_mean": float(np.mean(gamma_reference[kept])),
            "n_modes": int(kept.sum()), "min_frequency_THz": min_frequency}


COMPARISON_ROWS = (
    ("static V0 (Å³/primitive cell)", ("static", "V0_angstrom3"), 1.0, "{:.3f}"),
    ("static B0 (GPa)", ("static", "B0_GPa"), 1.0, "{:.1f}"),
    ("V(300 K)/V0 − 1 (%)", ("at_300K", "V_over_V0_minus_1"), 100.0, "{:.3f}"),
    ("α(300 K) (10⁻⁶/K)", ("at_300K", "linear_thermal_expansion_per_K"), 1e6, "{:.2f}"),
    ("B(300 K) (GPa)", ("at_300K", "B_GPa"), 1.0, "{:.1f}"),
    ("C_P(300 K) (J/K/mol)", ("at_300K", "Cp_J_per_K_mol"), 1.0, "{:.2f}"),
    ("γ(300 K), thermodynamic", ("at_300K", "gruneisen"), 1.0, "{:.3f}"),
    ("NTE minimum: T (K)", ("nte_minimum", "temperature_K"), 1.0, "{:.0f}"),
    ("NTE minimum: α (10⁻⁶/K)", ("nte_minimum", "linear_per_K"), 1e6, "{:.3f}"),
)
"""Label, keys into `qha_summary` (at 300 K), scale and format of the comparison table's rows."""


def comparison_rows(model: dict[str, Any], reference: dict[str, Any],
                    gruneisen: Optional[dict[str, float]] = None) -> list[dict[str, Any]]:
    """Rows (quantity, model, reference, model − reference, relative difference) comparing two
    `qha_summary` dicts (at 300 K), plus the mode Grüneisen MAE of `gruneisen_error`; a value a
    summary lacks (no NTE) is None."""

    def value(summary, keys, scale):
        entry = summary
        for key in keys:
            entry = entry.get(key) if isinstance(entry, dict) else None
        return None if entry is None else float(entry) * scale

    rows = []
    for label, keys, scale, fmt in COMPARISON_ROWS:
        mine, theirs = value(model, keys, scale), value(reference, keys, scale)
        both = mine is not None and theirs is not None
        rows.append({"quantity": label, "model": mine, "reference": theirs, "format": fmt,
                     "difference": mine - theirs if both else None,
                     "relative": (mine - theirs) / abs(theirs) if both and theirs else None})
    if gruneisen is not None:
        rows.append({"quantity": f"mode γ MAE (band path, f ≥ {gruneisen['min_frequency_THz']} THz)",
                     "model": gruneisen["mae"], "reference": 0.0, "format": "{:.3f}",
                     "difference": gruneisen["mae"], "relative": None})
    return rows


def write_comparison(rows: Sequence[dict[str, Any]], directory: Union[str, os.PathLike],
                     stem: str = "comparison") -> tuple[Path, Path]:
    """The rows of `comparison_rows` as a Markdown table and a CSV (``<stem>.md``, ``<stem>.csv``)."""
    import csv

    directory = Path(directory)

    def text(value, fmt):
        return "–" if value is None else fmt.format(value)

    lines = ["| quantity | model | reference | model − reference | relative |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['quantity']} | {text(row['model'], row['format'])} | "
                     f"{text(row['reference'], row['format'])} | {text(row['difference'], row['format'])} | "
                     f"{text(row['relative'], '{:+.1%}')} |")
    markdown = directory / f"{stem}.md"
    markdown.write_text("\n".join(lines) + "\n")
    table = directory / f"{stem}.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["quantity", "model", "reference", "difference", "relative"])
        for row in rows:
            writer.writerow([row["quantity"]] + ["" if row[k] is None else f"{row[k]:.8g}"
                                                 for k in ("model", "reference", "difference", "relative")])
    return markdown, table


def write_volume_series(phonons: Sequence[Phonopy], energies: Sequence[float], factors: Sequence[float],
                        directory: Union[str, os.PathLike]) -> Path:
    """Each volume's ``volumes/v<f>/phonopy_params.yaml`` (force constants) and ``volumes.json``,
    in the layout `load_reference_volumes` reads (so a run can serve as another's reference)."""
    directory = Path(directory)
    files = []
    for phonon, factor in zip(phonons, factors):
        name = f"volumes/v{factor:.3f}/phonopy_params.yaml"
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        phonon.save(directory / name, settings={"force_constants": True})
        files.append(name)
    path = directory / "volumes.json"
    path.write_text(json.dumps({
        "volume_factors": [float(f) for f in factors],
        "volumes_angstrom3": [float(p.primitive.volume) for p in phonons],
        "static_energies_eV": [float(e) for e in energies],
        "phonopy_params": files,
        "supercell": np.asarray(phonons[0].supercell_matrix).tolist(),
        "per": "primitive cell",
    }, indent=1) + "\n")
    return path
