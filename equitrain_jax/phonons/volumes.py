"""Volume series for the quasi-harmonic approximation: phonons at many volumes from one compiled
batch of Hessian-vector products, or read from a reference directory.

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
thermal properties per primitive cell; `phonopy.run_qha` expects both that way).  The QHA itself
is `equitrain_jax.phonons.qha`.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import ase
import numpy as np
from phonopy import Phonopy
from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

from equitrain_jax.phonons import check_supercell_size, load_reference
from equitrain_jax.phonons.bridge import ase_to_phonopy, phonopy_to_ase
from equitrain_jax.phonons.hessian import batched_hessian_vector_products
from equitrain_jax.phonons.qha_config import (
    DISPLACEMENT_DISTANCE,
    N_VOLUMES,
    VOLUME_STRAIN_RANGE,
    volume_factors,
)
from equitrain_jax.potential import Potential

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
    products = batched_hessian_vector_products(potential, supercells, tangents, min(chunk, len(tangents)))
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
    files = record["phonopy_params"]
    try:
        energies = np.asarray(record["static_energies_eV"], dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: static_energies_eV must be a list of numbers (eV per primitive cell), got "
                         f"{str(record['static_energies_eV'])[:80]}") from None
    if not np.all(np.isfinite(energies)):
        raise ValueError(f"{path}: static_energies_eV holds values that are not finite numbers")
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise ValueError(f"{path}: phonopy_params must be a list of file names relative to {directory}")
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
