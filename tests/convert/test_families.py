"""The MACE foundation families of `convert.architectures` against the converter.

Options the converter does not map are refused by name, through the API and on the command line,
each exercised on a real mace-torch model built with that one option (and the same model without it
converts, so the refusal is the option's).  The options it maps convert with float64 parity against
mace-torch's own calculator, each alone and all together in MACE-MH-1; so do the families built
from mapped options (slow), and the others are refused naming an option.
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
    "odd_parity_hidden_irreps": (
        dataclasses.replace(BASE, odd_scalars=True),
        lambda m: str(m.products[0].linear.irreps_out) == "4x0e+4x0o",
        r"odd-parity hidden irreps \['0o'\]",
    ),
}

# option → (a family's architecture with that option added, what the torch model must show); each
# converts with float64 parity (MH-0/1 combine all four)
MEDIUM = ARCHITECTURES["mp0a-medium"]
IMPLEMENTED = {
    "use_agnostic_product": (
        dataclasses.replace(ARCHITECTURES["mp0b3"], use_agnostic_product=True),
        lambda m: m.products[0].symmetric_contractions.contractions[0].weights_max.shape[0] == 1,
    ),
    "edge_irreps": (
        dataclasses.replace(MEDIUM, edge_channels=64),
        lambda m: str(m.interactions[1].linear_up.irreps_out) == "4x0e+4x1o"
        and str(m.interactions[0].linear_up.irreps_out) == "8x0e",
    ),
    "use_edge_irreps_first": (
        dataclasses.replace(MEDIUM, edge_channels=64, use_edge_irreps_first=True),
        lambda m: str(m.interactions[0].linear_up.irreps_out) == "4x0e",
    ),
    "nonlinear_interaction": (
        dataclasses.replace(MEDIUM, first=NONLINEAR, other=NONLINEAR),
        lambda m: {type(block).__name__ for block in m.interactions} == {NONLINEAR},
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
    with pytest.raises(ConversionError, match=message):
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


def assert_parity(ours, reference):
    for mine, ref in zip(ours, reference):
        assert abs(mine["energy"] - ref["energy"]) < TOL64
        np.testing.assert_allclose(mine["forces"], ref["forces"], rtol=0, atol=TOL64)
        np.testing.assert_allclose(mine["virial"], ref["virial"], rtol=0, atol=TOL64)
        if ref["periodic"]:
            np.testing.assert_allclose(mine["stress"], ref["stress"], rtol=0, atol=TOL64)


def check_parity(module, atoms, head=None):
    """Energy, forces, virial (and stress of periodic cells) against mace-torch's calculator, float64."""
    reference = torch_reference(module, atoms, head=head)
    potential = Potential(ModelBundle(*convert_model(module)), dtype="float64", head=head)
    assert_parity(potential.evaluate(atoms), reference)


@pytest.mark.slow
@pytest.mark.parametrize("option", sorted(IMPLEMENTED))
def test_option_parity(option):
    """Each option on its own, 8 channels, all four structures."""
    architecture, has_option = IMPLEMENTED[option]
    module = build_mace_torch(architecture, atomic_numbers=ELEMENTS, channels=8, seed=2)
    assert has_option(module), f"the mace-torch model was not built with {option}"
    check_parity(module, list(structures().values()))


MH_HEAD = "omat_pbe"  # the last of MH-1's six heads: a head mix-up shows


def test_mh1_parity_reduced_width():
    """MACE-MH-1's options together (non-linear blocks, agnostic product, 1-channel edge irreps in
    both layers, cutoff outside the radial MLP, ZBL, six heads) at 4 channels with the reduced
    symmetric-contraction basis (mace-torch builds it in seconds), all four structures."""
    module = build_mace_torch(
        dataclasses.replace(ARCHITECTURES["mh1"], use_reduced_cg=True), atomic_numbers=ELEMENTS, channels=4, seed=5
    )
    config, _ = convert_model(module)
    assert (config.interaction_first, config.interaction) == (NONLINEAR, NONLINEAR)
    assert config.agnostic_product and config.edge_irreps == "1x0e+1x1o" and config.edge_irreps_first
    assert not config.apply_cutoff and config.pair_repulsion and len(config.heads) == 6
    check_parity(module, list(structures().values()), head=MH_HEAD)


# --------------------------------------------------------------------------- whole families

REFUSED_FAMILIES = {"omol0": "embedding_specs"}
# the MACE-MP names of tests/models/test_parity.py are left to it
PARITY_TESTED = {"mp0a-small", "mp0a-medium", "mp0a-large", "mp0b", "mp0b2", "mp0b3"}
CONVERTED_FAMILIES = sorted(set(ARCHITECTURES) - set(REFUSED_FAMILIES) - PARITY_TESTED)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(REFUSED_FAMILIES))
def test_family_refused_naming_an_option(family):
    module = build_mace_torch(family, atomic_numbers=ELEMENTS, channels=4, seed=3)
    with pytest.raises(ConversionError, match=REFUSED_FAMILIES[family]):
        convert_model(module)


def last_head(family: str):
    """The family's last head (None for single-head families)."""
    heads = ARCHITECTURES[family].heads
    return heads[-1] if heads else None


@pytest.mark.slow
@pytest.mark.parametrize("family", CONVERTED_FAMILIES)
def test_family_parity_reduced_width(family):
    """8 channels, all four structures, float64, against mace-torch's calculator."""
    module = build_mace_torch(family, atomic_numbers=ELEMENTS, channels=8, seed=3)
    check_parity(module, list(structures().values()), head=last_head(family))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["omat0-medium", "off23-small", "off23-large", "mh1"])
def test_family_parity_full_width(family):
    """Families whose width or option mix no MACE-MP test covers, at their real width
    (OMAT-0 medium is also MATPES-PBE/r2SCAN; OFF23 small has 96 channels, large 192 with L = 2;
    MH-1 512 channels with 128-channel edges, its architecture is MH-0's too)."""
    module = build_mace_torch(family, atomic_numbers=ELEMENTS, seed=3)
    check_parity(module, [structures()["molecule"], structures()["triclinic"]], head=last_head(family))


def test_mh0_is_built_as_mh1():
    """MH-0 is tested through MH-1: the builders differ only in their provenance note."""
    assert dataclasses.replace(ARCHITECTURES["mh0"], provenance="") == dataclasses.replace(
        ARCHITECTURES["mh1"], provenance=""
    )


@pytest.mark.slow
def test_mh1_every_head():
    """Each of MH-1's six heads (readout block, E0s, scale and shift per head), 8 channels, on the
    triclinic crystal and the molecule."""
    module = build_mace_torch("mh1", atomic_numbers=ELEMENTS, channels=8, seed=4)
    atoms = [structures()["triclinic"], structures()["molecule"]]
    energies = []
    for head in ARCHITECTURES["mh1"].heads:
        reference = torch_reference(module, atoms, head=head)
        potential = Potential(ModelBundle(*convert_model(module)), dtype="float64", head=head)
        assert_parity(potential.evaluate(atoms), reference)
        energies.append(reference[0]["energy"])
    assert len(set(np.round(energies, 6))) == 6, "the heads should give different energies"


@pytest.mark.slow
def test_apply_cutoff_false_parity():
    """``apply_cutoff=False`` (MH-1, OMOL-0: the envelope multiplies the radial MLP's output, not its
    input); parity on the triclinic crystal."""
    module = build_mace_torch(
        dataclasses.replace(BASE, apply_cutoff=False), atomic_numbers=ELEMENTS, channels=4, seed=2
    )
    assert module.radial_embedding.apply_cutoff is False
    check_parity(module, [structures()["triclinic"]])


@pytest.mark.slow
def test_nonlinear_block_with_e3nn_gate():
    """Files pickled by mace-torch before its own GatedEquivariantBlock hold e3nn's ``nn.Gate`` (the
    same numbers): swapped into every block, the model converts with parity."""
    from e3nn import nn as e3nn_nn

    module = build_mace_torch(IMPLEMENTED["nonlinear_interaction"][0], atomic_numbers=ELEMENTS, channels=4, seed=6)
    for block in module.interactions:
        gate = block.equivariant_nonlin
        block.equivariant_nonlin = e3nn_nn.Gate(  # e3nn wants one activation per irreps entry
            gate.irreps_scalars, [torch.nn.functional.silu] * len(gate.irreps_scalars),
            gate.irreps_gates, [torch.sigmoid] * len(gate.irreps_gates), gate.irreps_gated,
        )
    assert type(module.interactions[1].equivariant_nonlin).__module__.startswith("e3nn")
    check_parity(module, [structures()["triclinic"], structures()["molecule"]])


# --------------------------------------------------------------------------- command line

def convert_command(args: list[str], capsys) -> tuple[int, str]:
    """Exit status (0 when ``cli.main`` returns) and standard error of ``equitrain-jax convert``."""
    try:
        cli.main(["convert", *args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err.strip()


def test_cli_unknown_architecture_lists_the_known_ones(tmp_path, capsys):
    code, err = convert_command(["--architecture", "mh2", "-o", str(tmp_path / "out")], capsys)
    assert code == 2
    (line,) = err.splitlines()
    assert line == f"equitrain-jax convert: error: --architecture 'mh2' is not one of {sorted(ARCHITECTURES)}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", sorted(REFUSED_FAMILIES))
def test_cli_refuses_family_by_option_before_building(family, tmp_path, capsys):
    """MACE-OMOL-0 (1024 channels) is refused naming its option, without building the model."""
    code, err = convert_command(["--architecture", family, "-o", str(tmp_path / "out")], capsys)
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith(f"equitrain-jax convert: error: --architecture {family}: option {REFUSED_FAMILIES[family]}")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(set(ARCHITECTURES) - set(REFUSED_FAMILIES)))
def test_cli_converts_every_family(family, tmp_path, capsys):
    """``equitrain-jax convert --architecture NAME --channels 4`` writes a model directory with the
    family's blocks and heads whose energy and forces on the molecule are those of mace-torch's
    calculator on the same random weights (the builder is deterministic in its seed)."""
    out = tmp_path / "model"
    code, err = convert_command(["--architecture", family, "--channels", "4", "--seed", "3", "-o", str(out)], capsys)
    assert code == 0, err
    potential = Potential(out, dtype="float64", head=last_head(family))
    architecture = ARCHITECTURES[family]
    config = potential.bundle.config
    assert (config.interaction_first, config.interaction) == (architecture.first, architecture.other)
    assert list(config.heads) == list(architecture.heads or ["Default"])
    module = build_mace_torch(family, channels=4, seed=3)
    atoms = [structures()["molecule"]]
    assert_parity(potential.evaluate(atoms), torch_reference(module, atoms, head=last_head(family)))
