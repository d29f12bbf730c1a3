"""Phonons of many materials in batches (`equitrain_jax.phonons.many`, ``phonons --many``).

References: phonopy's own finite displacements (±1e-3 Å) of the same model through our ASE
calculator, for each material; and the one-material path `phonopy_from_potential`.  Three
crystals with supercells of 16, 16 and 27 atoms in batches of at most 48 atoms: rocksalt NaCl (2
displacements) and bcc Na (1: a zero tangent for the second) share a batch padded from 43 to 48
atoms, diamond Si is alone in one of 16.
"""

from __future__ import annotations

import csv
import socket
import subprocess

import ase.io
import numpy as np
import pytest
from ase.build import bulk, molecule

from equitrain_jax.calculator import Calculator
from equitrain_jax.phonons import phonopy_from_calculator, phonopy_from_potential
from equitrain_jax.phonons.bridge import supercell_for_min_length
from equitrain_jax.phonons.many import (
    ManySettings, neighbour_slots, pack_batches, padded_atoms, phonons_of_many, tangent_chunk,
)

from phonon_models import phonon_potential, quiet

MIN_LENGTH = 6.0  # Å: 2×2×2 of rocksalt NaCl and diamond Si (16 atoms), 3×3×3 of bcc Na (27)
SETTINGS = ManySettings(relax=False, min_length=MIN_LENGTH, mesh=(6, 6, 6), batch_atoms=48)


def materials():
    return [bulk("NaCl", "rocksalt", a=5.64), bulk("Si", "diamond", a=5.43), bulk("Na", "bcc", a=4.23)]


def test_batches_hold_every_material_once_within_the_budget():
    sizes = [16, 54, 16, 128, 250, 300, 27, 8]
    counts = [2, 1, 2, 3, 1, 1, 1, 4]
    batches = pack_batches(sizes, counts, 256)
    assert sorted(i for batch in batches for i in batch) == list(range(len(sizes)))
    for batch in batches:
        assert len(batch) == 1 or sum(sizes[i] for i in batch) <= 256
        assert padded_atoms(sum(sizes[i] for i in batch), 256) >= sum(sizes[i] for i in batch)
    assert batches[0][0] == 7  # the most displacements first
    # every batch that fits the budget is padded to a power of two up to it: few sizes for a list
    assert {padded_atoms(n, 256) for n in range(1, 257)} == {16, 32, 64, 128, 256}
    assert padded_atoms(300, 256) == 320  # a larger supercell alone: its own bucket (< 25 % padding)
    # a batch of 1-displacement crystals computes one tangent per call, not the list's chunk
    assert [tangent_chunk(k, 3) for k in range(1, 6)] == [1, 2, 3, 3, 3]
    assert [tangent_chunk(k, 12) for k in (1, 3, 5, 13)] == [1, 4, 8, 12]


def test_batches_keep_one_neighbour_width():
    """A batch's graph is padded to the neighbour slots of its densest supercell: materials of
    different widths (powers of two, at least 16) never share one, the widest come first."""
    assert [neighbour_slots(d) for d in (0, 9, 16, 17, 40, 60, 86)] == [16, 16, 16, 32, 64, 64, 128]
    sizes, counts = [54, 54, 16, 128, 27], [1, 1, 2, 1, 3]
    widths = [neighbour_slots(d) for d in (40, 20, 60, 17, 9)]
    batches = pack_batches(sizes, counts, 256, widths)
    assert batches == [[2, 0], [3, 1], [4]]
    assert all(len({widths[i] for i in batch}) == 1 for batch in batches)


@pytest.fixture(scope="module")
def batched():
    potential = phonon_potential()
    lines = []
    results = quiet(phonons_of_many, potential, materials(), SETTINGS, log=lines.append)
    return potential, results, lines[0]


@pytest.mark.slow  # compiles the HVPs and the forces: 181 s set-up + 143 s (load average ~25)
def test_batched_force_constants_match_finite_displacements(batched):
    """Force constants within the ±1e-3 Å finite-difference error, mesh frequencies within
    1e-3 THz and F, S, Cv at 300 K within 1e-4 relative of phonopy's finite displacements."""
    potential, results, plan = batched
    assert "2 batches" in plan and "padded to [16, 48] atoms" in plan, plan
    assert [r.row["natoms_supercell"] for r in results] == [16, 16, 27]
    for atoms, result in zip(materials(), results):
        assert not result.failed, result.row
        matrix = np.diag(supercell_for_min_length(atoms.cell.array, MIN_LENGTH))
        reference = quiet(phonopy_from_calculator, Calculator(potential), atoms, matrix, distance=1e-3, plusminus=True)
        fc, fc_fd = result.phonon.force_constants, reference.force_constants
        scale = np.abs(fc_fd).max()
        assert scale > 0.1
        np.testing.assert_allclose(fc, fc_fd, rtol=0, atol=1e-5 * scale, err_msg=result.row["formula"])
        reference.run_mesh(SETTINGS.mesh, is_gamma_center=True)
        frequencies = reference.get_mesh_dict()["frequencies"]
        assert abs(result.row["min_frequency_THz"] - frequencies.min()) < 1e-3
        assert abs(result.row["max_frequency_THz"] - frequencies.max()) < 1e-3
        reference.run_thermal_properties(temperatures=[300.0], cutoff_frequency=0.01)
        thermal = reference.get_thermal_properties_dict()
        for column, key in (("free_energy_kJ_per_mol", "free_energy"), ("entropy_J_per_K_mol", "entropy"),
                            ("heat_capacity_J_per_K_mol", "heat_capacity")):
            np.testing.assert_allclose(result.row[column], thermal[key][0], rtol=1e-4, atol=1e-5, err_msg=column)


@pytest.mark.slow  # shares the fixture's compilation; the one-by-one path compiles its own: 102 s
def test_batched_equals_one_by_one(batched):
    """The same exact force constants as `phonopy_from_potential` on each material alone."""
    potential, results, _ = batched
    for atoms, result in zip(materials(), results):
        matrix = np.diag(supercell_for_min_length(atoms.cell.array, MIN_LENGTH))
        alone = quiet(phonopy_from_potential, potential, atoms, matrix)
        scale = np.abs(alone.force_constants).max()
        np.testing.assert_allclose(result.phonon.force_constants, alone.force_constants, rtol=0, atol=1e-10 * scale)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def summary(path) -> list[dict]:
    """The rows of a summary.csv without the timing column."""
    with open(path) as file:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(file)]


@pytest.mark.slow  # three command-line runs, each compiling: 316 s on the 2 shared cores
def test_command_line_rows_and_two_processes(tmp_path):
    """``phonons --many``: a row per structure in input order, the failures with their reason,
    the files of the rest; two jax.distributed processes gather the same summary."""
    from cli.conftest import command, command_env
    from common import tiny_mace
    from equitrain_jax.models.io import save_model

    bundle = tiny_mace((11, 17, 14, 29))  # tiny_mace initialises on Cu
    save_model(tmp_path / "model", bundle.config, bundle.variables)
    gold = bulk("Au", "fcc", a=4.08)
    ase.io.write(tmp_path / "list.extxyz", [bulk("NaCl", "rocksalt", a=5.64), molecule("H2O"), bulk("Si", "diamond", a=5.43), gold])
    base = ["phonons", "--many", "list.extxyz", "--model", "model", "--min-length", "6", "--mesh", "6", "6", "6",
            "--fmax", "1e-3"]
    single = subprocess.run(command(*base, "-o", "one"), cwd=tmp_path, env=command_env(), capture_output=True,
                            text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    rows = summary(tmp_path / "one" / "summary.csv")
    assert [row["index"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["formula"] for row in rows] == ["ClNa", "H2O", "Si2", "Au"]
    assert "periodic in 3 directions" in rows[1]["error"] and "'Au'" in rows[3]["error"]
    for row in (rows[0], rows[2]):
        assert row["error"] == "" and row["relax_steps"] and float(row["max_frequency_THz"]) > 0, row
        assert (tmp_path / "one" / f"{row['index']}-{row['formula']}" / "phonopy_params.yaml").is_file()

    refused = subprocess.run(command(*base, "-o", "one"), cwd=tmp_path, env=command_env(), capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr

    port = str(free_port())
    processes = [subprocess.Popen(command(*base, "-o", "two", "--coordinator", f"localhost:{port}", "--num-processes",
                                          "2", "--process-id", str(i)), cwd=tmp_path, env=command_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [process.communicate(timeout=900) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert summary(tmp_path / "two" / "summary.csv") == rows
