"""Small random-weight models and crystals shared by the phonon tests (built once per session)."""

from __future__ import annotations

import functools
import warnings

from ase import Atoms
from ase.build import bulk

import mace  # noqa: F401  (must precede e3nn(torch))
from equitrain_jax.convert import convert_model
from equitrain_jax.convert.architectures import build_mace_torch
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.potential import Potential

PHONON_ELEMENTS = (11, 17, 14)  # Na, Cl, Si


@functools.lru_cache(maxsize=None)
def phonon_potential() -> Potential:
    """mp0a-small, 8 channels, avg_num_neighbors 2 (so force constants are O(1) eV/Å²); with this
    seed rocksalt NaCl has no imaginary modes (diamond Si has some, which the tests do not mind)."""
    module = build_mace_torch(
        "mp0a-small", atomic_numbers=PHONON_ELEMENTS, channels=8, seed=0, avg_num_neighbors=2.0
    )
    return Potential(ModelBundle(*convert_model(module)), dtype="float64")


@functools.lru_cache(maxsize=None)
def other_potential() -> Potential:
    """The same architecture as `phonon_potential` with other random weights (seed 1): a second
    "model" to serve as a reference that differs."""
    module = build_mace_torch(
        "mp0a-small", atomic_numbers=PHONON_ELEMENTS, channels=8, seed=1, avg_num_neighbors=2.0
    )
    return Potential(ModelBundle(*convert_model(module)), dtype="float64")


@functools.lru_cache(maxsize=None)
def hessian_potential() -> Potential:
    """mp0b3 (density interactions, Agnesi transform, ZBL), for the derivative tests."""
    module = build_mace_torch("mp0b3", atomic_numbers=(6, 14), channels=8, seed=2, avg_num_neighbors=2.0)
    return Potential(ModelBundle(*convert_model(module)), dtype="float64")


def unitcells() -> dict[str, Atoms]:
    return {
        "Si-diamond": bulk("Si", "diamond", a=5.43),
        "NaCl-rocksalt": bulk("NaCl", "rocksalt", a=5.64),
    }


def rattled_sic() -> Atoms:
    """16-atom zincblende SiC-like cell (Si and C), rattled so no symmetry is left."""
    atoms = bulk("SiC", "zincblende", a=5.0) * (2, 2, 2)
    atoms.rattle(0.05, seed=4)
    return atoms


def quiet(fn, *args, **kwargs):
    """Call ``fn`` with phonopy's and our own user warnings silenced (small test supercells)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)
