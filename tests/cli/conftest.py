"""A tiny MACE model (built in JAX with random weights, no torch; see `common.tiny_mace`)
and EMT-labelled Cu cells, written once per session, for the command-line tests that run
``equitrain-jax`` in subprocesses.  The model is small so that a fine-tuning subprocess compiles
in seconds; these tests check behaviour (refusals, resumption, options), not model accuracy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from equitrain_jax.models.io import save_model

from common import tiny_mace

REPO = Path(__file__).parents[2]


def emt_copper(count: int, seed: int) -> list:
    """Strained, rattled 4-atom fcc Cu cells with EMT energy (eV), forces (eV/Å) and stress (eV/Å³)
    stored in ``info``/``arrays``, as a labelled extxyz file holds them."""
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6 * rng.uniform(0.98, 1.03), cubic=True)
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.info["energy"], atoms.arrays["forces"] = atoms.get_potential_energy(), atoms.get_forces()
        atoms.info["stress"] = atoms.get_stress()
        atoms.calc = None
        cells.append(atoms)
    return cells


def emt_copper_phonons(path: Path) -> Path:
    """``phonopy_params.yaml`` of fcc Cu (2×2×2 primitive supercell, 8 atoms): phonopy's own
    displacement (0.01 Å) with EMT forces, as a DFT finite-displacement run writes it."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unitcell = bulk("Cu", "fcc", a=3.6)
    phonon = Phonopy(PhonopyAtoms(symbols=unitcell.get_chemical_symbols(), cell=unitcell.cell.array,
                                  scaled_positions=unitcell.get_scaled_positions()), supercell_matrix=np.diag([2, 2, 2]))
    phonon.generate_displacements(distance=0.01)
    forces = []
    for cell in phonon.supercells_with_displacements:
        atoms = ase.Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)
        atoms.calc = EMT()
        forces.append(atoms.get_forces())
    phonon.forces = np.array(forces)
    phonon.save(path)
    return path


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """``base/`` and ``other/`` (tiny models, other weights), ``train.xyz`` (8 cells),
    ``valid.xyz`` (2), ``long_train.xyz`` (24), ``cu.extxyz`` (one relaxed-looking Cu cell) and
    ``cu_phonons.yaml`` (EMT phonons of Cu, see `emt_copper_phonons`)."""
    root = tmp_path_factory.mktemp("cli")
    for name, seed in (("base", 0), ("other", 1)):
        bundle = tiny_mace((29,), seed=seed)
        save_model(root / name, bundle.config, bundle.variables)
    ase.io.write(root / "train.xyz", emt_copper(8, seed=1))
    ase.io.write(root / "valid.xyz", emt_copper(2, seed=2))
    ase.io.write(root / "long_train.xyz", emt_copper(24, seed=3))
    ase.io.write(root / "cu.extxyz", bulk("Cu", "fcc", a=3.6))
    emt_copper_phonons(root / "cu_phonons.yaml")
    return root


def command_env(**extra: str) -> dict:
    """The environment of an ``equitrain-jax`` subprocess: this checkout first on the path, no
    user compilation cache unless given."""
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "EQUITRAIN_JAX_CACHE_DIR": "", **extra}


def command(*args: str) -> list[str]:
    """The ``equitrain-jax`` console script beside this Python (else ``python -m equitrain_jax.cli``)."""
    script = Path(sys.executable).parent / "equitrain-jax"
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "equitrain_jax.cli", *args]


def equitrain_jax(*args: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run ``equitrain-jax ARGS`` in a fresh process and wait for it."""
    return subprocess.run(command(*args), cwd=cwd, env=command_env(**env), capture_output=True, text=True,
                          timeout=timeout)
