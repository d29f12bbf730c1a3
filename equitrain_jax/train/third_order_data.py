"""Third-order training data from phono3py data sets (NumPy and phono3py only, no JAX).

A `ThirdOrderItem` is one phono3py reference: the equilibrium supercell, phono3py's fitted and
symmetrised third-order force constants fc3 (full [N, N, N, 3, 3, 3] eV/Å³) and fc2 ([N, 3, N, 3]
eV/Å², the layout of `equitrain_jax.train.phonon_data.PhononItem`), the displaced supercells with
their forces (phono3py's first displacements and pairs, in its order) and phono3py's pair
directions.  The same reference also gives

- a phonon (Hessian-term) reference of its fc2 (`phonon_reference_from_phono3py`), and
- its displaced supercells as ordinary training structures with forces and no energy or stress
  (`displaced_supercells`): DFT codes give energies of these too, but phono3py's files keep only
  the forces, so the ordinary loss masks what a structure lacks.

Everything here is read and checked before JAX is imported (the command line's ``check``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional, Union

import ase
import numpy as np
from phonopy import Phonopy

from equitrain_jax.train.config import FORCES_ONLY

FORCES_FC3 = "FORCES_FC3"
"""phono3py's file of the displaced supercells' forces, read when it lies beside the YAML."""


class ThirdOrderDataError(ValueError):
    """A phono3py reference that cannot be trained on; the message names the file and problem."""


@dataclasses.dataclass(frozen=True, eq=False)
class ThirdOrderItem:
    """One phono3py reference as training data (float64, atoms in phono3py's supercell order).

    Attributes:
        supercell: equilibrium supercell of N atoms (Å, masses in amu).
        fc3: Φ3[i, j, k, a, b, c] = ∂³E/∂u_ia ∂u_jb ∂u_kc, [N, N, N, 3, 3, 3] eV/Å³, fitted by
            phono3py to the forces and symmetrised (translational and permutation symmetry).
        fc2: Φ[i, a, j, b], [N, 3, N, 3] eV/Å², from the same forces, symmetrised.
        displacements: [S, N, 3] Å, the displaced supercells (first displacements, then pairs).
        forces: [S, N, 3] eV/Å, their DFT forces as stored.
        pairs: [P, 2, N, 3], phono3py's direction pairs (first and second displacement of each
            pair supercell), each unit length.
        source: the reference file.
    """

    supercell: ase.Atoms
    fc3: np.ndarray
    fc2: np.ndarray
    displacements: np.ndarray
    forces: np.ndarray
    pairs: np.ndarray
    source: str = ""

    def __post_init__(self):
        n, source = len(self.supercell), self.source or "phono3py reference"
        shapes = {"fc3": (n, n, n, 3, 3, 3), "fc2": (n, 3, n, 3)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ThirdOrderDataError(f"{source}: {name} has shape {list(getattr(self, name).shape)}, "
                                          f"expected {list(shape)} for the {n}-atom supercell")
        if self.displacements.shape != self.forces.shape or self.displacements.shape[1:] != (n, 3):
            raise ThirdOrderDataError(f"{source}: displacements {list(self.displacements.shape)} and forces "
                                      f"{list(self.forces.shape)} must both be [S, {n}, 3]")
        if self.pairs.ndim != 4 or self.pairs.shape[1:] != (2, n, 3):
            raise ThirdOrderDataError(f"{source}: pairs have shape {list(self.pairs.shape)}, expected [P, 2, {n}, 3]")
        for name in ("fc3", "fc2", "displacements", "forces", "pairs"):
            bad = ~np.isfinite(getattr(self, name))
            if bad.any():
                raise ThirdOrderDataError(f"{source}: {name} contains NaN or inf (first at index "
                                          f"{np.argwhere(bad)[0].tolist()})")

    @property
    def n_atoms(self) -> int:
        return len(self.supercell)

    def provenance(self) -> dict[str, Any]:
        """JSON-ready description: file and sizes."""
        return {"source": self.source, "formula": self.supercell.get_chemical_formula(), "n_atoms": self.n_atoms,
                "n_displaced_supercells": len(self.displacements), "n_pairs": len(self.pairs)}

    def contracted(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Φ3[u, v]_kc = Σ_ia,jb Φ3[i, j, k, a, b, c] u_ia v_jb for K pairs u, v [K, N, 3] (Å):
        [K, N, 3] eV/Å³·Å²."""
        n3 = 3 * self.n_atoms
        phi = np.transpose(self.fc3, (0, 3, 1, 4, 2, 5)).reshape(n3, n3 * n3)
        first = (u.reshape(len(u), n3) @ phi).reshape(len(u), n3, n3)
        return np.einsum("kjc,kj->kc", first, v.reshape(len(v), n3)).reshape(u.shape)


def _supercell_atoms(cell: Any) -> ase.Atoms:
    """The periodic ASE structure of phono3py's supercell (same atoms, order and masses, amu), as
    `equitrain_jax.phonons.bridge.phonopy_to_ase` makes it; built here so that reading a
    reference does not load JAX."""
    return ase.Atoms(numbers=cell.numbers, cell=cell.cell, scaled_positions=cell.scaled_positions,
                     masses=cell.masses, pbc=True)


def _phono3py_of(path: Path, forces_fc3: Optional[Path]) -> Any:
    """A `Phono3py` of the YAML at ``path`` with its data set's forces (in the YAML, or in
    ``forces_fc3``), fc3 and fc2 produced and symmetrised by phono3py; nothing read from the
    working directory."""
    from phono3py import Phono3py
    from phono3py.file_IO import parse_FORCES_FC3
    from phono3py.interface.phono3py_yaml import Phono3pyYaml

    document = Phono3pyYaml()
    try:
        document.read(path)
    except Exception as error:  # phono3py raises several kinds for a file that is not its YAML
        raise ThirdOrderDataError(f"{path}: not a readable phono3py YAML ({' '.join(str(error).split())})") from error
    if document.unitcell is None or document.supercell_matrix is None:
        raise ThirdOrderDataError(f"{path}: no unit cell and supercell matrix (not a phono3py YAML?)")
    if document.phonon_supercell_matrix is not None and not np.array_equal(document.phonon_supercell_matrix,
                                                                           document.supercell_matrix):
        raise ThirdOrderDataError(f"{path}: a separate fc2 supercell (phono3py's --dim-fc2) is not supported; "
                                  "fc2 is taken from the fc3 data set")
    dataset = document.dataset
    if not dataset or not dataset.get("first_atoms"):
        raise ThirdOrderDataError(f"{path}: no phono3py displacement data set (type-1 'first_atoms') in it")
    if any("second_atoms" not in first for first in dataset["first_atoms"]):
        raise ThirdOrderDataError(f"{path}: a second-order (phonopy) data set without displacement pairs; "
                                  "a phonopy reference trains through the Hessian term (--phonons)")
    if dataset["first_atoms"][0].get("forces") is None:
        if forces_fc3 is None:
            raise ThirdOrderDataError(f"{path}: holds no forces and no {FORCES_FC3} lies beside it")
        try:
            parse_FORCES_FC3(dataset, forces_fc3)
        except Exception as error:
            raise ThirdOrderDataError(f"{forces_fc3}: not phono3py forces for the data set of {path} "
                                      f"({' '.join(str(error).split())})") from error
    ph3 = Phono3py(document.unitcell, supercell_matrix=document.supercell_matrix,
                   primitive_matrix=document.primitive_matrix, symprec=document.symmetry.tolerance if
                   document.symmetry is not None else 1e-5, log_level=0)
    ph3.dataset = dataset
    if document.nac_params is not None:  # DFT's Born charges: phono3py applies them to fc2's phonons
        from equitrain_jax.phonons.nac import apply_nac

        try:
            apply_nac(ph3, document.nac_params)
        except ValueError as error:
            raise ThirdOrderDataError(f"{path}: {error}") from error
    ph3.produce_fc3(is_compact_fc=False)
    ph3.symmetrize_fc3()
    ph3.symmetrize_fc2()
    return ph3


def _displaced(dataset: dict, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(displacements [S, N, 3] Å, forces [S, N, 3] eV/Å, pairs [P, 2, N, 3] unit) of phono3py's
    type-1 data set, in its order (first displacements, then the included pairs)."""
    displacements, forces, pairs = [], [], []
    for first in dataset["first_atoms"]:
        u = np.zeros((n, 3))
        u[first["number"]] = first["displacement"]
        displacements.append(u)
        forces.append(np.asarray(first["forces"], dtype=float))
    for first in dataset["first_atoms"]:
        for second in first["second_atoms"]:
            if not second.get("included", True) or second.get("forces") is None:
                continue
            u, v = np.zeros((n, 3)), np.zeros((n, 3))
            u[first["number"]] = first["displacement"]
            v[second["number"]] = second["displacement"]
            displacements.append(u + v)
            forces.append(np.asarray(second["forces"], dtype=float))
            pairs.append([u / np.linalg.norm(u), v / np.linalg.norm(v)])
    return np.array(displacements), np.array(forces).reshape(-1, n, 3), np.array(pairs).reshape(-1, 2, n, 3)


def read_third_order_reference(
    path: Union[str, os.PathLike], forces_fc3: Optional[Union[str, os.PathLike]] = None
) -> tuple[ThirdOrderItem, Any]:
    """A `ThirdOrderItem` from phono3py files, and the `phono3py.Phono3py` object read (fc2, fc3
    symmetrised, for evaluation).

    ``path`` is a ``phono3py_params.yaml`` (displacements with forces) or a ``phono3py_disp.yaml``
    with the forces in ``forces_fc3`` (default: a FORCES_FC3 beside it).  fc3 and fc2 are
    phono3py's own fit of those forces (its traditional solver) followed by its symmetrisation.

    Raises:
        ThirdOrderDataError: naming the file when it is missing, not phono3py's, holds no forces,
            or holds non-finite or inconsistent data.
    """
    path = Path(path)
    if not path.is_file():
        raise ThirdOrderDataError(f"{path}: no such file")
    if forces_fc3 is None and (path.parent / FORCES_FC3).is_file():
        forces_fc3 = path.parent / FORCES_FC3
    ph3 = _phono3py_of(path, None if forces_fc3 is None else Path(forces_fc3))
    return third_order_item_from_phono3py(ph3, str(path)), ph3


def third_order_item_from_phono3py(ph3: Any, source: str = "") -> ThirdOrderItem:
    """A `ThirdOrderItem` of a `phono3py.Phono3py` with a type-1 data set with forces and fc3 and
    fc2 produced (compact or full; taken as they are, symmetrised or not)."""
    from phono3py.phonon3.fc3 import compact_fc3_to_full_fc3
    from phonopy.harmonic.force_constants import compact_fc_to_full_fc

    source = source or "phono3py reference"
    if ph3.fc3 is None or ph3.fc2 is None:
        raise ThirdOrderDataError(f"{source}: fc3 and fc2 must be produced first")
    fc3, fc2 = np.asarray(ph3.fc3, dtype=float), np.asarray(ph3.fc2, dtype=float)
    if fc3.shape[0] != fc3.shape[1]:
        fc3 = compact_fc3_to_full_fc3(ph3.primitive, fc3)
    if fc2.shape[0] != fc2.shape[1]:
        fc2 = compact_fc_to_full_fc(ph3.primitive, fc2)
    displacements, forces, pairs = _displaced(ph3.dataset, len(ph3.supercell))
    return ThirdOrderItem(
        supercell=_supercell_atoms(ph3.supercell), fc3=np.ascontiguousarray(fc3),
        fc2=np.ascontiguousarray(np.transpose(fc2, (0, 2, 1, 3))),
        displacements=displacements, forces=forces, pairs=pairs, source=source,
    )


def displaced_supercells(item: ThirdOrderItem) -> list[ase.Atoms]:
    """The reference's displaced supercells as training structures: forces (eV/Å) in
    ``atoms.arrays["forces"]``, no energy and no stress (flagged
    ``atoms.info["forces_only"]``; the loss masks both, see `equitrain_jax.train.data`)."""
    structures = []
    for displacement, forces in zip(item.displacements, item.forces):
        atoms = item.supercell.copy()
        atoms.positions = atoms.positions + displacement
        atoms.arrays["forces"] = forces.copy()
        atoms.info[FORCES_ONLY] = True
        atoms.info["source"] = item.source
        structures.append(atoms)
    return structures


def phonon_reference_from_phono3py(item: ThirdOrderItem, ph3: Any) -> tuple[Any, Phonopy]:
    """The reference's fc2 as a phonon (Hessian-term) reference: a
    `equitrain_jax.train.phonon_data.PhononItem` (fc2, the first-displacement supercells with
    their forces, phono3py's first displacements as directions) and a `Phonopy` with that fc2."""
    from equitrain_jax.train.phonon_data import PhononItem, merge_plus_minus

    n_first = len(ph3.dataset["first_atoms"])
    phonon = Phonopy(ph3.unitcell, ph3.supercell_matrix, primitive_matrix=ph3.primitive_matrix,
                     symprec=ph3.symmetry.tolerance)
    phonon.force_constants = np.ascontiguousarray(ph3.fc2)
    phonon_item = PhononItem(
        supercell=item.supercell, force_constants=item.fc2, displacements=item.displacements[:n_first],
        forces=item.forces[:n_first], directions=merge_plus_minus(item.displacements[:n_first]),
        source=f"{item.source} (fc2)",
    )
    return phonon_item, phonon


__all__ = [
    "FORCES_FC3",
    "ThirdOrderDataError",
    "ThirdOrderItem",
    "displaced_supercells",
    "phonon_reference_from_phono3py",
    "read_third_order_reference",
    "third_order_item_from_phono3py",
]
