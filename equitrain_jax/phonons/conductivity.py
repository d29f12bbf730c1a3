"""Lattice thermal conductivity in phono3py from the model's exact second and third derivatives.

phono3py's finite-displacement workflow displaces pairs of atoms in a supercell (its own symmetry
reduction, optional pair cutoff) and fits third-order force constants fc3 (eV/Å³) to the forces;
finite differences make fc3 depend on the displacement distance.  Here every displaced supercell gets
the model's exact forces to second order in the displacement u instead, F(u) = −∇E − H·u − ½ ∂³E[u, u]
(one nested jvp per supercell, at the perfect supercell; `equitrain_jax.phonons.third_order`), so
phono3py's own solver returns the model's exact fc3: no finite-difference error, whatever the
distance.  fc2 (eV/Å²) comes from the analytic Hessian (`equitrain_jax.phonons.force_constants`).
phono3py then solves the Boltzmann transport equation (RTA or direct solution), κ in W/(m·K).

phono3py is an optional dependency: ``pip install equitrain-jax[kappa]``.

About 460 lines, kept together: the fc3 routes (pairs and rows), their chunking and phono3py's
data set form one pipeline whose pieces share phono3py's displacement bookkeeping.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Sequence, Union

import ase
import numpy as np
from phono3py import Phono3py
from phono3py.phonon3.displacement_fc3 import get_reduced_site_symmetry
from phonopy.harmonic.force_constants import distribute_force_constants
from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning, compute_all_sg_permutations

from equitrain_jax.phonons import check_supercell_size, force_constants
from equitrain_jax.phonons.bridge import ase_to_phonopy, check_derivative_jumps, phonopy_to_ase, supercell_matrix
from equitrain_jax.phonons.third_order import displaced_forces, displacement_rows
from equitrain_jax.potential import Potential

Fc3Method = Literal["rows", "displacements"]
FC3_METHODS = ("rows", "displacements")
DEFAULT_DISTANCE = 0.03
"""phono3py's default displacement distance (Å)."""
KAPPA_COMPONENTS = ("xx", "yy", "zz", "yz", "xz", "xy")
"""phono3py's order of the six independent components of the κ tensor."""

SupercellMatrix = Union[int, Sequence[int], Sequence[Sequence[int]], np.ndarray]


def _supercell_matrix(matrix: Optional[SupercellMatrix]) -> Optional[np.ndarray]:
    """phono3py's 3×3 integer supercell matrix from an int, 3 ints or a 3×3 matrix (None stays None),
    checked as phonopy's (`equitrain_jax.phonons.bridge.supercell_matrix`)."""
    return None if matrix is None else supercell_matrix(matrix)


def pair_displacements(dataset: dict[str, Any], n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Displacements [S, N, 3] (Å) of phono3py's S displaced supercells, in its order, and which are included.

    The order is phono3py's (``Phono3py.supercells_with_displacements``): every first displacement
    alone, then every pair, the first atom's displacement plus the second's (added when both are the
    same atom).  ``included`` [S] is False for pairs beyond the pair cutoff (phono3py leaves them out
    and their forces are zero).
    """
    firsts = dataset["first_atoms"]
    pairs = [(first, second) for first in firsts for second in first["second_atoms"]]
    displacements = np.zeros((len(firsts) + len(pairs), n_atoms, 3))
    included = np.ones(len(displacements), dtype=bool)
    for k, first in enumerate(firsts):
        displacements[k, first["number"]] = first["displacement"]
    for k, (first, second) in enumerate(pairs, start=len(firsts)):
        displacements[k, first["number"]] += first["displacement"]
        displacements[k, second["number"]] += second["displacement"]
        included[k] = second.get("included", True)
    return displacements, included


def phono3py_with_displacements(
    unitcell: ase.Atoms,
    supercell_matrix: SupercellMatrix,
    phonon_supercell_matrix: Optional[SupercellMatrix] = None,
    primitive_matrix: Any = "auto",
    distance: float = DEFAULT_DISTANCE,
    cutoff_pair_distance: Optional[float] = None,
    is_plusminus: Union[bool, Literal["auto"]] = "auto",
    symprec: float = 1e-5,
    log_level: int = 0,
) -> Phono3py:
    """A `Phono3py` of ``unitcell`` with phono3py's own fc3 (and fc2) displacement data sets generated
    (``generate_displacements``; ``is_plusminus`` phono3py's ± displacements, the other arguments as
    `phono3py_from_potential`), no forces yet."""
    with warnings.catch_warnings():  # "auto" is our documented default, not phonopy v3's identity
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        ph3 = Phono3py(
            ase_to_phonopy(unitcell),
            supercell_matrix=_supercell_matrix(supercell_matrix),
            primitive_matrix=primitive_matrix,
            phonon_supercell_matrix=_supercell_matrix(phonon_supercell_matrix),
            symprec=symprec,
            log_level=log_level,
        )
    ph3.generate_displacements(distance=distance, cutoff_pair_distance=cutoff_pair_distance, is_plusminus=is_plusminus)
    return ph3


def exact_fc3(
    ph3: Phono3py,
    potential: Potential,
    method: Fc3Method = "rows",
    chunk_size: Optional[int] = None,
    progress: Any = None,
) -> None:
    """Set ``ph3.fc3`` (compact, [n_prim, N, N, 3, 3, 3] eV/Å³) from the model's exact third derivatives.

    ``ph3`` must hold phono3py's displacement data set (``generate_displacements``).  Methods:

    - ``"rows"`` (default): for each first displacement u1 only, the exact change of fc2, ∂³E[u1, ·, ·]: the rows
      of the atoms independent under the symmetry u1 leaves (3 jvps each of the one H·u1 they share,
      and one more for the forces F(u1); `displacement_rows`), rotated onto the others by phonopy,
      handed to phono3py's solver as its ``delta_fc2`` (the ``second_atoms`` of the data set are then
      not used).
    - ``"displacements"``: every displaced supercell of the data set gets the forces to second order,
      F(u) = −∇E − H·u − ½ ∂³E[u, u] (one nested jvp each, `displaced_forces`); phono3py's solver
      fits fc3 from them as from DFT forces.

    Both are exact (equal to rounding); they differ in cost (`fc3_work`).  ``progress``: a tqdm-like
    object, updated per nested jvp.
    """
    if method not in FC3_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, FC3_METHODS))}, got {method!r}")
    supercell = phonopy_to_ase(ph3.supercell)
    n = len(supercell)
    displacements, included = pair_displacements(ph3.dataset, n)
    if method == "displacements":
        forces = np.zeros_like(displacements)
        forces[included] = displaced_forces(potential, supercell, displacements[included], chunk_size, progress)
        ph3.forces = forces
    else:
        dataset = ph3.dataset
        for first, u1 in zip(dataset["first_atoms"], displacements):
            independent, rotations, permutations = _displaced_site_symmetry(ph3, first)
            first["forces"], rows = displacement_rows(potential, supercell, u1, independent, chunk_size, progress)
            first["delta_fc2"] = np.zeros((n, n, 3, 3), dtype=np.double, order="C")
            first["delta_fc2"][independent] = rows
            distribute_force_constants(first["delta_fc2"], independent, np.array(ph3.supercell.cell.T, order="C"),
                                       rotations, permutations)
        ph3.dataset = dataset
    ph3.produce_fc3(is_compact_fc=True)


def _displaced_site_symmetry(ph3: Phono3py, first: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The symmetry a first displacement leaves: (independent atoms, rotations, atom permutations).

    The rotations of the displaced atom's site symmetry that keep its displacement (phono3py's
    reduced site symmetry, about the displaced atom), their permutations of the supercell's atoms,
    and one atom of each orbit they make (the lowest index).
    """
    cell = ph3.supercell
    symprec = ph3.symmetry.tolerance
    direction = np.asarray(first["displacement"]) @ np.linalg.inv(cell.cell)
    rotations = get_reduced_site_symmetry(ph3.symmetry.get_site_symmetry(first["number"]), direction, symprec)
    positions = cell.scaled_positions - cell.scaled_positions[first["number"]]
    permutations = compute_all_sg_permutations(positions, rotations, np.zeros((len(rotations), 3)), cell.cell.T,
                                               symprec, cell.permutation_types)
    independent = np.unique(permutations.min(axis=0))
    return independent, rotations, permutations


def exact_fc2(ph3: Phono3py, potential: Potential, chunk_size: Optional[int] = None) -> None:
    """Set ``ph3.fc2`` (compact, [n_prim, N₂, N₂, 3, 3] eV/Å²) in the phonon (fc2) supercell from the
    analytic Hessian (`equitrain_jax.phonons.force_constants`, one Hessian-vector product per
    phonopy displacement)."""
    fc2 = force_constants(
        potential,
        phonopy_to_ase(ph3.phonon_supercell),
        method="displacements",
        chunk_size=chunk_size,
        symmetry=ph3.phonon_supercell_symmetry,
        primitive=ph3.phonon_primitive,
    )
    ph3.fc2 = np.ascontiguousarray(fc2[ph3.phonon_primitive.p2s_map])


def phono3py_from_potential(
    potential: Potential,
    unitcell: ase.Atoms,
    supercell_matrix: SupercellMatrix,
    phonon_supercell_matrix: Optional[SupercellMatrix] = None,
    primitive_matrix: Any = "auto",
    cutoff_pair_distance: Optional[float] = None,
    method: Fc3Method = "rows",
    distance: float = DEFAULT_DISTANCE,
    symmetrize_fc: bool = False,
    symprec: float = 1e-5,
    chunk_size: Optional[int] = None,
    check_size: bool = True,
    progress: Any = None,
    log_level: int = 0,
) -> Phono3py:
    """A `phono3py.Phono3py` of ``unitcell`` with exact fc3 (eV/Å³) and fc2 (eV/Å²) from the model.

    Args:
        potential: the model.
        unitcell: the unit cell (Å; masses in amu from ASE).
        supercell_matrix: the fc3 supercell (phono3py's ``--dim``): an int, 3 ints or a 3×3 matrix.
        phonon_supercell_matrix: the fc2 supercell (phono3py's ``--dim-fc2``); default the fc3 one.
        primitive_matrix: phono3py's primitive matrix (``"auto"``, ``"P"``, ``"F"``, a 3×3 matrix…).
        cutoff_pair_distance: phono3py's pair cutoff (Å, ``--cutoff-pair``): pairs farther apart are
            not displaced and their fc3 elements are zero.
        method: ``"rows"`` (default) or ``"displacements"``, see `exact_fc3`.
        distance: phono3py's displacement distance (Å); the result does not depend on it beyond
            rounding, since the forces are exactly quadratic in the displacement.
        symmetrize_fc: phono3py's ``--sym-fc``: impose translational invariance and index
            permutation symmetry on fc3 and fc2 (``symmetrize_fc3``, ``symmetrize_fc2``).
        symprec: symmetry tolerance (Å).
        chunk_size: nested jvps (and Hessian-vector products) per compiled call: the memory bound.
        check_size: warn if a supercell is narrower than 2·r_max (`check_supercell_size`).
        progress: a tqdm-like object updated per nested jvp (its total: `fc3_work`).
        log_level: phono3py's verbosity.
    """
    ph3 = phono3py_with_displacements(unitcell, supercell_matrix, phonon_supercell_matrix, primitive_matrix, distance,
                                      cutoff_pair_distance, symprec=symprec, log_level=log_level)
    if check_size:
        check_supercell_sizes(ph3, potential, stacklevel=3)
    produce_exact_fc(ph3, potential, method=method, symmetrize_fc=symmetrize_fc, chunk_size=chunk_size,
                     progress=progress)
    return ph3


def produce_exact_fc(
    ph3: Phono3py,
    potential: Potential,
    method: Fc3Method = "rows",
    symmetrize_fc: bool = False,
    chunk_size: Optional[int] = None,
    progress: Any = None,
) -> None:
    """Set the exact fc3 (`exact_fc3`) and fc2 (`exact_fc2`) on a `Phono3py` with displacements
    (`phono3py_with_displacements`); with ``symmetrize_fc``, then phono3py's symmetrisation of both."""
    exact_fc3(ph3, potential, method=method, chunk_size=chunk_size, progress=progress)
    exact_fc2(ph3, potential, chunk_size=chunk_size)
    if symmetrize_fc:
        ph3.symmetrize_fc3()
        ph3.symmetrize_fc2()


def check_supercell_sizes(ph3: Phono3py, potential: Potential, stacklevel: int = 2) -> None:
    """Warn (`SupercellTooSmallWarning`) if the fc3 or fc2 supercell is narrower than 2·r_max, and
    (`NonSmoothRadiusWarning`, `check_derivative_jumps`) if a neighbour shell lies near a radius where
    the model's third derivative can jump."""
    cells = {id(cell): phonopy_to_ase(cell) for cell in (ph3.supercell, ph3.phonon_supercell)}
    for cell in cells.values():
        check_supercell_size(cell, potential.cutoff, potential.config.num_interactions, stacklevel=stacklevel + 1)
    check_derivative_jumps(cells[id(ph3.supercell)], potential.config.derivative_jumps, 3, stacklevel=stacklevel + 1)


def fc3_work(ph3: Phono3py, method: Fc3Method = "rows") -> int:
    """Number of nested jvps `exact_fc3` makes: the included displaced supercells ("displacements"), or
    per first displacement 3 per atom independent under the symmetry it leaves, plus 1 ("rows")."""
    if method == "displacements":
        return int(pair_displacements(ph3.dataset, len(ph3.supercell))[1].sum())
    return sum(3 * len(_displaced_site_symmetry(ph3, first)[0]) + 1 for first in ph3.dataset["first_atoms"])


def phono3py_from_calculator(
    calculator: Any,
    unitcell: ase.Atoms,
    supercell_matrix: SupercellMatrix,
    phonon_supercell_matrix: Optional[SupercellMatrix] = None,
    primitive_matrix: Any = "auto",
    cutoff_pair_distance: Optional[float] = None,
    distance: float = DEFAULT_DISTANCE,
    is_plusminus: Union[bool, Literal["auto"]] = "auto",
    symmetrize_fc: bool = False,
    symprec: float = 1e-5,
    progress: Any = None,
    log_level: int = 0,
) -> Phono3py:
    """A `phono3py.Phono3py` with fc3 and fc2 from phono3py's own finite displacements, forces from any
    ASE ``calculator``: the reference route (no derivative beyond forces).  Arguments as
    `phono3py_from_potential`; ``is_plusminus`` is phono3py's (``True``: every displacement also
    negated); ``progress`` is updated per force evaluation."""
    ph3 = phono3py_with_displacements(unitcell, supercell_matrix, phonon_supercell_matrix, primitive_matrix, distance,
                                      cutoff_pair_distance, is_plusminus=is_plusminus, symprec=symprec,
                                      log_level=log_level)
    ph3.forces = _calculator_forces(calculator, ph3.supercell, ph3.supercells_with_displacements, progress)
    ph3.produce_fc3(is_compact_fc=True)
    if ph3.phonon_supercell_matrix is not None:
        ph3.phonon_forces = _calculator_forces(calculator, ph3.phonon_supercell,
                                               ph3.phonon_supercells_with_displacements, progress)
        ph3.produce_fc2(is_compact_fc=True)
    if symmetrize_fc:
        ph3.symmetrize_fc3()
        ph3.symmetrize_fc2()
    return ph3


def _calculator_forces(calculator: Any, supercell: Any, displaced: Sequence[Any], progress: Any) -> np.ndarray:
    """Forces [S, N, 3] (eV/Å) of phono3py's displaced supercells (zeros where phono3py has None)."""
    forces = np.zeros((len(displaced), len(supercell), 3))
    for k, cell in enumerate(displaced):
        if cell is None:
            continue
        atoms = phonopy_to_ase(cell)
        atoms.calc = calculator
        forces[k] = atoms.get_forces()
        if progress is not None:
            progress.update(1)
    return forces


# ---------------------------------------------------------------------------- Boltzmann transport


@contextlib.contextmanager
def _working_directory(directory: Path) -> Iterator[None]:
    """Run inside ``directory`` (phono3py writes its kappa files into the working directory)."""
    previous = Path.cwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def run_thermal_conductivity(
    ph3: Phono3py,
    mesh: Union[float, Sequence[int]],
    temperatures: Sequence[float] = (300.0,),
    is_lbte: bool = False,
    directory: Union[str, os.PathLike, None] = None,
    log_level: Optional[int] = None,
) -> Any:
    """Solve the phonon Boltzmann transport equation with phono3py; returns ``ph3.thermal_conductivity``.

    Args:
        ph3: a `Phono3py` with fc2 and fc3.
        mesh: q-point sampling mesh (3 ints, or a length in Å as phono3py's ``--mesh``).
        temperatures: K.
        is_lbte: the direct solution of the linearised BTE (phono3py's ``--lbte``) instead of the
            relaxation-time approximation (``--br``).
        directory: write phono3py's ``kappa-m<mesh>.hdf5`` there (as its command line does).
        log_level: phono3py's verbosity (its per-q-point progress from 1), default the instance's.
    """
    ph3.mesh_numbers = mesh
    ph3.init_phph_interaction()
    kwargs = dict(is_LBTE=is_lbte, temperatures=np.asarray(temperatures, dtype=float),
                  write_kappa=directory is not None, log_level=log_level)
    if directory is None:
        ph3.run_thermal_conductivity(**kwargs)
    else:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with _working_directory(Path(directory)):
            ph3.run_thermal_conductivity(**kwargs)
    return ph3.thermal_conductivity


def kappa_tensors(conductivity: Any) -> np.ndarray:
    """κ per temperature as 3×3 tensors [T, 3, 3] in W/(m·K), from phono3py's six components (first sigma)."""
    six = np.asarray(conductivity.kappa)[0]
    index = {"xx": (0, 0), "yy": (1, 1), "zz": (2, 2), "yz": (1, 2), "xz": (0, 2), "xy": (0, 1)}
    tensors = np.zeros((len(six), 3, 3))
    for c, name in enumerate(KAPPA_COMPONENTS):
        a, b = index[name]
        tensors[:, a, b] = tensors[:, b, a] = six[:, c]
    return tensors


def kappa_summary(ph3: Phono3py, is_lbte: bool = False) -> dict[str, Any]:
    """JSON-ready κ of a finished `run_thermal_conductivity`: per temperature the tensor (W/(m·K)),
    its six components in phono3py's order, and the mean of the diagonal; units in the key names."""
    conductivity = ph3.thermal_conductivity
    tensors = kappa_tensors(conductivity)
    six = np.asarray(conductivity.kappa)[0]
    summary = {
        "method": "LBTE (direct solution)" if is_lbte else "RTA",
        "mesh": [int(m) for m in ph3.mesh_numbers],
        "n_atoms_primitive": len(ph3.primitive),
        "supercell_matrix": np.asarray(ph3.supercell_matrix).tolist(),
        "phonon_supercell_matrix": np.asarray(ph3.phonon_supercell_matrix
                                              if ph3.phonon_supercell_matrix is not None
                                              else ph3.supercell_matrix).tolist(),
        "n_atoms_supercell": len(ph3.supercell),
        "n_displaced_supercells": int(pair_displacements(ph3.dataset, len(ph3.supercell))[1].sum()),
        "cutoff_pair_distance_A": ph3.dataset.get("cutoff_distance"),
        "temperatures_K": [float(t) for t in conductivity.temperatures],
        "kappa_components": list(KAPPA_COMPONENTS),
        "kappa_W_per_mK": [row.tolist() for row in six],
        "kappa_tensor_W_per_mK": [t.tolist() for t in tensors],
        "kappa_mean_diagonal_W_per_mK": [float(np.trace(t) / 3) for t in tensors],
    }
    if is_lbte:
        summary["kappa_RTA_W_per_mK"] = [row.tolist() for row in np.asarray(conductivity.kappa_RTA)[0]]
    return summary


# ---------------------------------------------------------------------------- plots


def plot_kappa(summaries: dict[str, dict[str, Any]], path: Union[str, os.PathLike], title: str = "") -> Path:
    """κ(T) per direction (xx, yy, zz; off-diagonal ones where they are not zero), W/(m·K): one line style
    per component, one colour per summary (`kappa_summary`), into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    styles = ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3)))  # one per component: equal ones stay visible
    for colour, (label, summary) in enumerate(summaries.items()):
        temperatures = np.asarray(summary["temperatures_K"])
        kappa = np.asarray(summary["kappa_W_per_mK"])
        scale = np.abs(kappa).max() if kappa.size else 0.0
        for c, name in enumerate(KAPPA_COMPONENTS):
            if c >= 3 and np.abs(kappa[:, c]).max() <= 1e-6 * max(scale, 1e-30):
                continue
            ax.plot(temperatures, kappa[:, c], linestyle=styles[c], marker="o" if len(temperatures) < 12 else None,
                    color=f"C{colour}", label=f"{label} κ_{name}" if len(summaries) > 1 else f"κ_{name}")
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel("κ (W/(m·K))")
    if all(np.asarray(s["kappa_W_per_mK"])[:, :3].min() > 0 for s in summaries.values()):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)


def mode_lifetimes(conductivity: Any, temperature_index: int) -> dict[str, np.ndarray]:
    """Per mode at one temperature: ``frequencies`` (THz), ``linewidths`` 2Γ (THz; Γ the imaginary part
    of the self-energy) and ``lifetimes`` τ = 1/(4πΓ) (ps), over the irreducible q-points, with
    ``weights`` (their multiplicities); acoustic modes at Γ (zero linewidth) are left out."""
    frequencies = np.asarray(conductivity.frequencies)
    gamma = np.asarray(conductivity.gamma)[0, temperature_index]
    weights = np.broadcast_to(np.asarray(conductivity.grid_weights)[:, None], frequencies.shape)
    keep = gamma > 0
    return dict(frequencies=frequencies[keep], linewidths=2 * gamma[keep],
                lifetimes=1.0 / (4 * np.pi * gamma[keep]), weights=weights[keep])


def plot_lifetimes(ph3: Phono3py, path: Union[str, os.PathLike], temperature: float = 300.0, title: str = "") -> Path:
    """Phonon linewidths 2Γ (THz) and lifetimes τ (ps) against frequency (THz) at the computed temperature
    closest to ``temperature`` (K), one point per mode of the irreducible q-points, into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conductivity = ph3.thermal_conductivity
    temperatures = np.asarray(conductivity.temperatures)
    index = int(np.argmin(np.abs(temperatures - temperature)))
    modes = mode_lifetimes(conductivity, index)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    size = 6 + 4 * modes["weights"] / max(modes["weights"].max(), 1)
    left.scatter(modes["frequencies"], modes["linewidths"], s=size, alpha=0.7)
    left.set_ylabel("linewidth 2Γ (THz)")
    right.scatter(modes["frequencies"], modes["lifetimes"], s=size, alpha=0.7)
    right.set_yscale("log")
    right.set_ylabel("lifetime τ (ps)")
    for ax in (left, right):
        ax.set_xlabel("frequency (THz)")
    fig.suptitle(f"{title} {temperatures[index]:.0f} K, mesh {'×'.join(map(str, ph3.mesh_numbers))}".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)
