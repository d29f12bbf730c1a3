"""The MACE foundation families of `convert.architectures` against the converter.

Options the converter does not map are refused by name, through the API and on the command line,
each exercised on a real mace-torch model built with that one option (and the same model without it
converts, so the refusal is the option's).  The families built only from mapped options convert with
float64 parity against mace-torch's own calculator (slow); the others are refused naming an option.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np
import pytest

from common import ELEMENTS, structures, torch_reference

torch = pytest.importorskip("torch")
pytest.importorskip("mace")

from equitrain_jax import cli  # noqa: E402
from equitrain_jax.convert import ConversionError, convert_model  # noqa: E402
from equitrain_jax.convert.architectures import ARCHITECTURES, NONLINEAR, build_mace_torch  # noqa: E402
from equitrain_jax.models.io import ModelBundle  # noqa: E402
from equitrain_jax.potential import Potential  # noqa: E402

TOL64 = 1e-8  # eV, eV/Å, eV/Å³
BASE = ARCHITECTURES["mp0a-small"]
CHARGE_EMBEDDING = {"total_charge": dict(type="categorical", per="graph", num_classes=5, emb_dim=4, offset=2)}

# option → (the base architecture with that option, what the torch model must show, the refusal's text)
UNSUPPORTED = {
    "embedding_specs": (
        dataclasses.replace(BASE, embedding_specs=CHARGE_EMBEDDING),
        lambda m: hasattr(m, "joint_embedding"),
        r"embedding_specs",
    ),
    "edge_irreps": (
        dataclasses.replace(BASE, edge_channels=64),
        lambda m: m.edge_irreps is not None and str(m.interactions[1].linear_up.irreps_out) == "2x0e",
        r"edge_irreps=2x0e",
    ),
    "use_edge_irreps_first": (
        dataclasses.replace(BASE, edge_channels=64, use_edge_irreps_first=True),
        lambda m: str(m.interactions[0].linear_up.irreps_out) == "2x0e",
        r"use_edge_irreps_first",
    ),
    "gaussian_radial": (
        dataclasses.replace(BASE, radial_type="gaussian"),
        lambda m: type(m.radial_embedding.bessel_fn).__name__ == "GaussianBasis",
        r"radial basis GaussianBasis",
    ),
    "chebyshev_radial": (
        dataclasses.replace(BASE, radial_type="chebyshev"),
        lambda m: type(m.radial_embedding.bessel_fn).__name__ == "ChebychevBasis",
        r"radial basis ChebychevBasis",
    ),
    "use_agnostic_product": (
        dataclasses.replace(BASE, use_agnostic_product=True),
        lambda m: m.products[0].symmetric_contractions.contractions[0].weights_max.shape[0] == 1,
        r"use_agnostic_product",
    ),
    "nonlinear_interaction": (
        dataclasses.replace(BASE, first=NONLINEAR, other=NONLINEAR),
        lambda m: {type(block).__name__ for block in m.interactions} == {NONLINEAR},
        NONLINEAR,
    ),
    "odd_parity_hidden_irreps": (
        dataclasses.replace(BASE, odd_scalars=True),
        lambda m: str(m.products[0].linear.irreps_out) == "4x0e+4x0o",
        r"hidden_irreps '4x0e\+4x0o'",
    ),
}


@functools.cache
def torch_model(option: str):
    """A 4-channel mace-torch model with one option the converter does not map (None: without)."""
    architecture = UNSUPPORTED[option][0] if option else BASE
    return build_mace_torch(architecture, atomic_numbers=ELEMENTS, channels=4, seed=2)


def test_base_model_converts():
    """The models below differ from this one by one option each; this one converts."""
    config, _ = convert_model(torch_model(None))
    assert config.hidden_irreps == "4x0e"


@pytest.mark.parametrize("option", sorted(UNSUPPORTED))
def test_option_refused_by_name(option):
    _, has_option, message = UNSUPPORTED[option]
    module = torch_model(option)
    assert has_option(module), f"the mace-torch model was not built with {option}"
    # odd-parity hidden irreps are refused by MACEConfig's validation (a ValueError); the other
    # options by the converter's own checks (ConversionError, a ValueError too)
    expected = ValueError if option == "odd_parity_hidden_irreps" else ConversionError
    with pytest.raises(expected, match=message):
        convert_model(module)


@pytest.mark.parametrize("option", sorted(UNSUPPORTED))
def test_cli_refuses_option_with_exit_2(option, tmp_path, capsys):
    path = tmp_path / f"{option}.model"
    torch.save(torch_model(option), path)
    out = tmp_path / "converted"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["convert", str(path), "-o", str(out)])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("equitrain-jax convert: error: ")
    assert re.search(UNSUPPORTED[option][2], line)
    assert not out.exists()


# --------------------------------------------------------------------------- whole families

REFUSED_FAMILIES = {"mh0": "use_agnostic_product", "mh1": "use_agnostic_product", "omol0": "embedding_specs"}
# the MACE-MP names of tests/models/test_parity.py are left to it
PARITY_TESTED = {"mp0a-small", "mp0a-medium", "mp0a-large", "mp0b", "mp0b2", "mp0b3"}
CONVERTED_FAMILIES = sorted(set(ARCHITECTURES) - set(REFUSED_FAMILIES) - PARITY_TESTED)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(REFUSED_FAMILIES))
def test_family_refused_naming_an_option(family):
    module = build_mace_torch(family, atomic_numbers=ELEMENTS, channels=4, seed=3)
    with pytest.raises(ConversionError, match=REFUSED_FAMILIES[family]):
        convert_model(module)


def assert_parity(ours, reference):
    for mine, ref in zip(ours, reference):
        assert abs(mine["energy"] - ref["energy"]) < TOL64
        np.testing.assert_allclose(mine["forces"], ref["forces"], rtol=0, atol=TOL64)
        np.testing.assert_allclose(mine["virial"], ref["virial"], rtol=0, atol=TOL64)
        if ref["periodic"]:
            np.testing.assert_allclose(mine["stress"], ref["stress"], rtol=0, atol=TOL64)


@pytest.mark.slow
@pytest.mark.parametrize("family", CONVERTED_FAMILIES)
def test_family_parity_reduced_width(family):
    """8 channels, all four structures, float64, against mace-torch's calculator."""
    module = build_mace_torch(family, atomic_numbers=ELEMENTS, channels=8, seed=3)
    atoms = list(structures().values())
    reference = torch_reference(module, atoms)
    assert_parity(Potential(ModelBundle(*convert_model(module)), dtype="float64").evaluate(atoms), reference)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["omat0-medium", "off23-small", "off23-large"])
def test_family_parity_full_width(family):
    """Families whose width or option mix no MACE-MP test covers, at their real width
    (OMAT-0 medium is also MATPES-PBE/r2SCAN; OFF23 small has 96 channels, large 192 with L = 2)."""
    module = build_mace_torch(family, atomic_numbers=ELEMENTS, seed=3)
    atoms = [structures()["molecule"], structures()["triclinic"]]
    reference = torch_reference(module, atoms)
    assert_parity(Potential(ModelBundle(*convert_model(module)), dtype="float64").evaluate(atoms), reference)


@pytest.mark.slow
def test_apply_cutoff_false_parity():
    """``apply_cutoff=False`` (MH-1, OMOL-0: the envelope multiplies the radial MLP's output, not its
    input) is mapped today; parity on the triclinic crystal."""
    module = build_mace_torch(
        dataclasses.replace(BASE, apply_cutoff=False), atomic_numbers=ELEMENTS, channels=4, seed=2
    )
    assert module.radial_embedding.apply_cutoff is False
    atoms = [structures()["triclinic"]]
    reference = torch_reference(module, atoms)
    assert_parity(Potential(ModelBundle(*convert_model(module)), dtype="float64").evaluate(atoms), reference)
