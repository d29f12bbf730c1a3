"""Parity with mace-torch on the same (random) weights, for every MACE-MP architecture option.

The reference is mace-torch's own ASE calculator in float64, with torch's default dtype set to
float64 as mace-torch's scripts do (its ZBL term computes 14.3996·Zu·Zv in the default dtype).
Neighbour lists are built independently on each side (matscipy in mace-torch, vesin here).
"""

from __future__ import annotations

import numpy as np
import pytest

from common import ELEMENTS, structures, torch_reference

torch = pytest.importorskip("torch")
pytest.importorskip("mace")

from equitrain_jax.convert import convert_model  # noqa: E402
from equitrain_jax.convert.architectures import build_mace_torch  # noqa: E402
from equitrain_jax.models.io import ModelBundle  # noqa: E402
from equitrain_jax.potential import Potential  # noqa: E402

TOL64 = 1e-8  # eV, eV/Å, eV/Å³

CASES = {
    "mp0a-small": dict(architecture="mp0a-small"),
    "mp0a-medium": dict(architecture="mp0a-medium"),
    "mp0a-large": dict(architecture="mp0a-large"),
    "mp0b": dict(architecture="mp0b"),
    "mp0b2": dict(architecture="mp0b2"),
    "mp0b3": dict(architecture="mp0b3"),
    "two-heads": dict(architecture="mp0a-medium", heads=("pbe", "r2scan")),
    "mace-soft": dict(architecture="mp0b", model_class="MACE", distance_transform="Soft"),
}


def build(case: str, channels: int = 8):
    return build_mace_torch(atomic_numbers=ELEMENTS, channels=channels, seed=3, **CASES[case])


def assert_parity(ours, reference, tol):
    for mine, ref in zip(ours, reference):
        assert abs(mine["energy"] - ref["energy"]) < tol
        np.testing.assert_allclose(mine["forces"], ref["forces"], rtol=0, atol=tol)
        np.testing.assert_allclose(mine["virial"], ref["virial"], rtol=0, atol=tol)
        if ref["periodic"]:
            np.testing.assert_allclose(mine["stress"], ref["stress"], rtol=0, atol=tol)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float64_parity_batched(case):
    """All four structures in one padded batch against mace-torch one at a time."""
    module = build(case)
    atoms = list(structures().values())
    head = "r2scan" if case == "two-heads" else None
    reference = torch_reference(module, atoms, head=head)
    potential = Potential(ModelBundle(*convert_model(module)), dtype="float64", head=head)
    ours = potential.evaluate(atoms)
    assert all(out["forces"].dtype == np.float64 for out in ours)
    assert_parity(ours, reference, TOL64)
    energies = [r["energy"] for r in reference]
    assert np.ptp(energies) > 1.0, "structures should differ in energy, or the test proves little"


def test_batch_equals_one_at_a_time():
    """Batched and single-structure calls agree to rounding (different padding and summation order)."""
    potential = Potential(ModelBundle(*convert_model(build("mp0b3"))), dtype="float64")
    atoms = list(structures().values())
    batched = potential.evaluate(atoms)
    for structure, together in zip(atoms, batched):
        (alone,) = potential.evaluate([structure])
        np.testing.assert_allclose(alone["energy"], together["energy"], rtol=1e-13, atol=1e-10)
        for key in ("forces", "stress", "virial"):
            np.testing.assert_allclose(alone[key], together[key], rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("case", ["mp0a-medium", "mp0b"])
def test_float32_relative_parity(case):
    """float32 against the float64 reference: energies within 1e-5 of |E| per structure; forces and
    virials within 1e-5 of the largest value in the batch (float32 rounding follows the energy
    scale, so a structure with forces 100x smaller than its neighbours' has larger relative
    error, in mace-torch's own float32 too)."""
    module = build(case)
    atoms = list(structures().values())
    reference = torch_reference(module, atoms)
    ours = Potential(ModelBundle(*convert_model(module)), dtype="float32").evaluate(atoms)
    scales = {key: max(np.abs(ref[key]).max() for ref in reference) for key in ("forces", "virial")}
    for mine, ref in zip(ours, reference):
        assert mine["forces"].dtype == np.float32
        assert abs(mine["energy"] - ref["energy"]) <= 1e-5 * abs(ref["energy"])
        for key, scale in scales.items():
            assert np.abs(mine[key] - ref[key]).max() <= 1e-5 * scale, key


def test_full_width_medium():
    """MACE-MP-0 medium at its real width (128 channels) on the triclinic crystal and the slab."""
    module = build("mp0a-medium", channels=128)
    atoms = [structures()["triclinic"], structures()["slab"]]
    reference = torch_reference(module, atoms)
    ours = Potential(ModelBundle(*convert_model(module)), dtype="float64").evaluate(atoms)
    assert_parity(ours, reference, TOL64)


@pytest.mark.parametrize("case", ["mp0a-small", "mp0a-large", "mp0b", "mp0b3", "two-heads"])
def test_full_width(case):
    """Every other MACE-MP architecture at its real width (128 channels), all four structures."""
    module = build(case, channels=128)
    atoms = list(structures().values())
    head = "pbe" if case == "two-heads" else None
    reference = torch_reference(module, atoms, head=head)
    ours = Potential(ModelBundle(*convert_model(module)), dtype="float64", head=head).evaluate(atoms)
    assert_parity(ours, reference, TOL64)
