"""SevenNet-0 through the command line: ``convert --pretrained sevennet-0`` then ``evaluate``
writes sevenn's own numbers (``tests/fixtures/sevennet/reference.json``, from sevenn's ASE
calculator on the same checkpoint; float32, tolerances as in ``tests/models/test_sevennet.py``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase import Atoms

from equitrain_jax import cli

if importlib.util.find_spec("sevenn") is None:
    pytest.skip("SevenNet-0 ships in sevenn: pip install --no-deps sevenn==0.13.0", allow_module_level=True)
pytest.importorskip("torch")

REFERENCE = json.loads((Path(__file__).parents[1] / "fixtures" / "sevennet" / "reference.json").read_text())


def test_convert_then_evaluate_gives_sevenns_numbers(tmp_path, capsys):
    record = REFERENCE["structures"]["crystal"][0]
    expected = REFERENCE["results"]["float32"]["crystal"][0]
    atoms = Atoms(numbers=record["numbers"], positions=record["positions"], cell=record["cell"], pbc=record["pbc"])
    ase.io.write(tmp_path / "crystal.extxyz", atoms)
    cli.main(["convert", "--pretrained", "sevennet-0", "-o", str(tmp_path / "sevennet-0")])
    cli.main(["evaluate", str(tmp_path / "crystal.extxyz"), "--model", str(tmp_path / "sevennet-0"), "--dtype", "float32",
              "-o", str(tmp_path / "out.extxyz")])
    assert "max|F|" in capsys.readouterr().out
    written = ase.io.read(tmp_path / "out.extxyz")
    assert abs(written.get_potential_energy() - expected["energy"]) <= 1e-5 * abs(expected["energy"])
    assert np.abs(written.get_forces() - np.asarray(expected["forces"])).max() <= 1e-4
    assert np.abs(written.get_stress() - np.asarray(expected["stress"])).max() <= 1e-6
