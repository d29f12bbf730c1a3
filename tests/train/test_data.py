"""Labelled padded batches: labels in the right place, ASE conventions, errors before compilation."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from equitrain_jax.train import LabelKeys, labelled_batches

from common import ALLOY_ELEMENTS as ELEMENTS, emt_cells


def test_labels_from_calculator_and_from_info_arrays():
    cells = emt_cells(3, seed=0)
    (batch,) = labelled_batches(cells, 5.0, ELEMENTS, batch_size=4)
    n = sum(len(a) for a in cells)
    assert batch.nodes["mask"].sum() == n and batch.globals["mask"].sum() == 3
    np.testing.assert_allclose(batch.nodes["forces"][:n], np.concatenate([a.get_forces() for a in cells]))
    np.testing.assert_allclose(batch.globals["energy"][:3], [a.get_potential_energy() for a in cells])
    np.testing.assert_allclose(batch.globals["stress"][:3], [a.get_stress(voigt=False) for a in cells])
    assert batch.globals["has_stress"].tolist()[:3] == [True] * 3
    assert not np.any(batch.nodes["forces"][n:]) and not np.any(batch.globals["has_stress"][3:])

    stored = []
    for atoms in cells:
        copy = atoms.copy()  # no calculator: labels only in info/arrays
        copy.info["dft_energy"] = atoms.get_potential_energy()
        copy.arrays["dft_forces"] = atoms.get_forces()
        stored.append(copy)
    (same,) = labelled_batches(stored, 5.0, ELEMENTS, keys=LabelKeys("dft_energy", "dft_forces", None))
    np.testing.assert_array_equal(same.nodes["forces"], batch.nodes["forces"])
    np.testing.assert_array_equal(same.globals["energy"], batch.globals["energy"])
    assert not np.any(same.globals["has_stress"])


def unlabelled():
    return emt_cells(1, seed=1)[0].copy()


@pytest.mark.parametrize(
    "structures, keys, message",
    [
        ([], LabelKeys(), "empty list"),
        ([emt_cells(1, seed=2)[0], unlabelled()], LabelKeys(), "structure 1.*no 'energy' label"),
        (emt_cells(1, seed=2), LabelKeys(forces="dft_forces"), "structure 0.*no 'dft_forces' label in atoms.arrays"),
        (emt_cells(1, seed=2), LabelKeys(energy="free_energy_typo"), "no 'free_energy_typo'"),
    ],
)
def test_missing_labels(structures, keys, message):
    with pytest.raises(ValueError, match=message):
        labelled_batches(structures, 5.0, ELEMENTS, keys=keys)


def test_nan_labels_and_unknown_elements():
    atoms = emt_cells(1, seed=3)[0]
    forces = atoms.get_forces().copy()
    forces[2, 1] = np.nan
    nan_forces = atoms.copy()
    nan_forces.arrays["forces"] = forces
    nan_forces.info["energy"] = atoms.get_potential_energy()
    with pytest.raises(ValueError, match="structure 0: label 'forces' contains NaN"):
        labelled_batches([nan_forces], 5.0, ELEMENTS, keys=LabelKeys(stress=None))
    gold = bulk("Au", "fcc", a=4.08)
    gold.info["energy"], gold.arrays["forces"] = 0.0, np.zeros((1, 3))
    with pytest.raises(ValueError, match="structure 1: .*Au"):
        labelled_batches([atoms, gold], 5.0, ELEMENTS)


def test_labels_of_a_moved_structure_are_refused():
    """A calculator's results belong to the positions they were computed at: moved since, ASE's
    own getters refuse them, and so does training (it used them before, silently)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = emt_cells(1, seed=4)[0]
    labelled = atoms.copy()
    labelled.calc = SinglePointCalculator(labelled, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
    labelled_batches([labelled], 5.0, ELEMENTS, keys=LabelKeys(stress=None))  # unchanged: accepted
    labelled.positions[0] += 0.3
    with pytest.raises(ValueError, match=r"structure 0 .*'energy' belongs to another structure \(changed since: positions\)"):
        labelled_batches([labelled], 5.0, ELEMENTS, keys=LabelKeys(stress=None))
