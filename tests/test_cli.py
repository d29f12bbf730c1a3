"""The command line on a converted model: evaluate writes mace-torch's numbers."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

from conftest import ELEMENTS, structures, torch_reference

torch = pytest.importorskip("torch")
pytest.importorskip("mace")

from equitrain_jax import cli  # noqa: E402
from equitrain_jax.convert.architectures import build_mace_torch  # noqa: E402


def test_convert_then_evaluate(tmp_path, capsys):
    module = build_mace_torch("mp0b", atomic_numbers=ELEMENTS, channels=8, seed=11)
    model_file = tmp_path / "model.model"
    torch.save(module, model_file)
    cli.main(["convert", str(model_file), "-o", str(tmp_path / "model")])
    atoms = [structures()["triclinic"], structures()["molecule"]]
    ase.io.write(tmp_path / "in.xyz", atoms)
    cli.main(["evaluate", str(tmp_path / "in.xyz"), "--model", str(tmp_path / "model"), "-o", str(tmp_path / "out.xyz")])
    printed = capsys.readouterr().out
    assert "max|F|" in printed and len(printed.strip().splitlines()) >= 3
    reference = torch_reference(module, atoms)
    for written, ref in zip(ase.io.read(tmp_path / "out.xyz", index=":"), reference):
        assert abs(written.get_potential_energy() - ref["energy"]) < 1e-6
        np.testing.assert_allclose(written.get_forces(), ref["forces"], atol=1e-6)


def test_evaluate_unknown_element_is_a_clear_error(tmp_path, capsys):
    cli.main(["convert", "--architecture", "mp0a-small", "--channels", "8", "-o", str(tmp_path / "model")])
    gold = structures()["molecule"].copy()
    gold.numbers[0] = 79
    ase.io.write(tmp_path / "gold.xyz", gold)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", str(tmp_path / "gold.xyz"), "--model", str(tmp_path / "model")])
    assert exit_info.value.code == 2
    assert "Au" in capsys.readouterr().err
