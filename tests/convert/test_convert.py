"""Model file → ``equitrain-jax convert`` → model directory → same numbers as mace-torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from common import ELEMENTS, structures, torch_reference

torch = pytest.importorskip("torch")
pytest.importorskip("mace")

from equitrain_jax import Calculator, cli  # noqa: E402
from equitrain_jax.convert import ConversionError, convert_file, convert_model  # noqa: E402
from equitrain_jax.convert.architectures import build_mace_torch  # noqa: E402


@pytest.fixture(scope="module")
def torch_model():
    return build_mace_torch("mp0b3", atomic_numbers=ELEMENTS, channels=8, seed=5)


@pytest.fixture(scope="module")
def model_file(torch_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("torch") / "mp0b3.model"
    torch.save(torch_model, path)
    return path


def test_file_round_trip_through_cli(torch_model, model_file, tmp_path):
    out = tmp_path / "converted"
    cli.main(["convert", str(model_file), "-o", str(out)])
    assert (out / "config.json").is_file() and (out / "params").is_dir()
    atoms = structures()["triclinic"]
    (reference,) = torch_reference(torch_model, [atoms])
    atoms.calc = Calculator(out, dtype="float64")
    assert abs(atoms.get_potential_energy() - reference["energy"]) < 1e-8
    np.testing.assert_allclose(atoms.get_forces(), reference["forces"], rtol=0, atol=1e-8)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), reference["stress"], rtol=0, atol=1e-8)


def test_loading_does_not_import_torch(model_file, tmp_path):
    out = tmp_path / "converted"
    convert_file(model_file, out)
    code = (
        "import sys\n"
        "from ase.build import bulk\n"
        "from equitrain_jax import Calculator\n"
        f"atoms = bulk('Si', 'diamond', a=5.43)\n"
        f"atoms.calc = Calculator({str(out)!r})\n"
        "atoms.get_potential_energy()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow  # 87 s of the default run (mace-torch's cuEquivariance conversion on CPU)
def test_cuequivariance_checkpoint_is_normalised(torch_model, tmp_path):
    pytest.importorskip("cuequivariance_torch")
    from mace.cli.convert_e3nn_cueq import run as e3nn_to_cueq

    previous = torch.get_default_dtype()
    try:
        cueq_model = e3nn_to_cueq(torch_model, return_model=True, device="cpu")
    finally:
        torch.set_default_dtype(previous)
    assert any("cuequivariance" in type(m).__module__ for m in cueq_model.modules())
    path = tmp_path / "cueq.model"
    torch.save(cueq_model, path)
    convert_file(path, tmp_path / "converted")
    atoms = structures()["molecule"]
    (reference,) = torch_reference(torch_model, [atoms])
    atoms.calc = Calculator(tmp_path / "converted", dtype="float64")
    assert abs(atoms.get_potential_energy() - reference["energy"]) < 1e-8
    np.testing.assert_allclose(atoms.get_forces(), reference["forces"], rtol=0, atol=1e-8)


def test_unmapped_parameter_fails_naming_it():
    model = build_mace_torch("mp0a-small", atomic_numbers=ELEMENTS, channels=8)
    model.interactions[0].register_parameter("extra_gain", torch.nn.Parameter(torch.ones(3)))
    with pytest.raises(ConversionError, match=r"interactions\.0\.extra_gain"):
        convert_model(model)


def test_unsupported_option_fails_naming_it():
    model = build_mace_torch("mp0a-small", atomic_numbers=ELEMENTS, channels=8)
    model.use_so3 = True
    with pytest.raises(ConversionError, match="use_so3"):
        convert_model(model)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "notes.model"
    path.write_text("this is not a model\n")
    with pytest.raises(ConversionError, match="not a mace-torch model file"):
        convert_file(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_file_without_traceback(tmp_path, capsys):
    path = tmp_path / "empty.model"
    path.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["convert", str(path), "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "not a mace-torch model file" in capsys.readouterr().err


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        convert_file(tmp_path / "missing.model", tmp_path / "out")
