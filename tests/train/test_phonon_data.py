"""Phonon training data against phonopy itself: files in every accepted format give phonopy's own
force constants, never with NAC; directions, targets, padding and validation errors."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from ase.calculators.emt import EMT
from phonopy import Phonopy
from phonopy.file_IO import write_BORN, write_FORCE_CONSTANTS, write_FORCE_SETS
from phonopy.harmonic.displacement import get_least_displacements
from phonopy.physical_units import get_physical_units

from equitrain_jax.data import batch_graphs, pad_to_bucket
from equitrain_jax.train.hessian_loss import hessian_error_sums
from equitrain_jax.train.phonon_data import (
    PhononDataError,
    direction_rng,
    hessian_batch,
    phonon_graph,
    phonon_item_from_phonopy,
    read_phonon_item,
    sample_directions,
)

from .phonon_references import aluminium, cu3au, finite_displacement_phonopy, full_to_hessian, rocksalt_nio

CUTOFF, ELEMENTS = 6.0, (13, 29, 79)
BORN = np.array([np.eye(3) * 2.1, np.eye(3) * -2.1])  # made-up Born charges of Ni and O (e)
EPSILON = np.eye(3) * 5.3  # made-up ε∞
NAC_FACTOR = get_physical_units().Hartree * get_physical_units().Bohr  # phonopy's e²/(4πε0) in eV·Å


@pytest.fixture(scope="module")
def cu3au_phonopy():
    """Phonopy finite displacements of L1₂ Cu3Au (2×2×2, 32 atoms) with EMT forces."""
    return finite_displacement_phonopy(cu3au(), np.diag([2, 2, 2]), EMT)


@pytest.fixture(scope="module")
def nio_phonopy():
    """Rocksalt NiO (2×2×2 primitive supercell, 16 atoms), EMT forces and made-up Born charges."""
    phonon = finite_displacement_phonopy(rocksalt_nio(), np.diag([2, 2, 2]), EMT)
    phonon.nac_params = {"born": BORN, "dielectric": EPSILON, "factor": NAC_FACTOR}
    return phonon


FORCE_SETS_ATOL = 3e-8
"""eV/Å²: FORCE_SETS holds forces to 1e-10 eV/Å, which over a 0.01 Å displacement is 1e-8 eV/Å²."""


def assert_force_constants_equal(item, phonon, atol=1e-10):
    """Φ of the item equals phonopy's full force constants (in [N, 3, N, 3] layout) to ``atol``
    times the largest |Φ| (eV/Å²)."""
    expected = full_to_hessian(phonon.force_constants)
    assert item.force_constants.shape == expected.shape
    np.testing.assert_allclose(item.force_constants, expected, rtol=0, atol=atol * np.abs(expected).max())


def test_phonopy_params_yaml(tmp_path, cu3au_phonopy):
    """A phonopy_params.yaml with displacements and EMT forces: phonopy's own full symmetrised
    force constants, its raw displacement/force pairs and its displacement directions."""
    path = tmp_path / "phonopy_params.yaml"
    cu3au_phonopy.save(path)
    item = read_phonon_item(path)
    assert_force_constants_equal(item, cu3au_phonopy)
    np.testing.assert_allclose(item.supercell.positions, cu3au_phonopy.supercell.positions, atol=1e-10)
    assert list(item.supercell.numbers) == list(cu3au_phonopy.supercell.numbers)
    firsts = cu3au_phonopy.dataset["first_atoms"]
    assert item.displacements.shape == item.forces.shape == (len(firsts), 32, 3)
    for m, first in enumerate(firsts):
        np.testing.assert_allclose(item.displacements[m, first["number"]], first["displacement"], atol=1e-12)
        np.testing.assert_allclose(item.forces[m], first["forces"], atol=1e-12)
    assert np.count_nonzero(np.abs(item.displacements).sum(axis=2)) == len(firsts)  # one atom per supercell
    # directions: one per ± pair, unit length, each along one of phonopy's displacements
    assert 1 <= len(item.directions) <= len(firsts)
    np.testing.assert_allclose(np.linalg.norm(item.directions.reshape(len(item.directions), -1), axis=1), 1.0)
    units = item.displacements.reshape(len(firsts), -1) / 0.01
    overlaps = np.abs(item.directions.reshape(len(item.directions), -1) @ units.T)
    assert np.allclose(overlaps.max(axis=1), 1.0)
    assert item.provenance()["nac_params_present"] is False


def test_force_sets_and_force_constants_beside_a_structure(tmp_path, cu3au_phonopy):
    """FORCE_SETS beside (or given with) a structure-only phonopy_disp.yaml, and FORCE_CONSTANTS
    beside one: the same force constants as phonopy's; without a data set, the directions are
    phonopy's least displacements of the supercell."""
    with_sets, with_fc = tmp_path / "sets", tmp_path / "fc"
    for folder in (with_sets, with_fc):
        folder.mkdir()
        cu3au_phonopy.save(folder / "phonopy_disp.yaml", settings={"force_sets": False, "displacements": False})
    write_FORCE_SETS(cu3au_phonopy.dataset, filename=with_sets / "FORCE_SETS")
    write_FORCE_CONSTANTS(cu3au_phonopy.force_constants, filename=with_fc / "FORCE_CONSTANTS")
    for item in (read_phonon_item(with_sets / "phonopy_disp.yaml"),
                 read_phonon_item(with_sets / "phonopy_disp.yaml", force_sets=with_sets / "FORCE_SETS")):
        assert_force_constants_equal(item, cu3au_phonopy, atol=FORCE_SETS_ATOL)
        assert len(item.displacements) == len(cu3au_phonopy.dataset["first_atoms"])
    item = read_phonon_item(with_fc / "phonopy_disp.yaml")
    assert_force_constants_equal(item, cu3au_phonopy)
    assert item.displacements.shape == (0, 32, 3)
    least = get_least_displacements(cu3au_phonopy.symmetry, is_plusminus=False)
    assert len(item.directions) == len(least)
    atoms = sorted(int(np.flatnonzero(np.abs(d).sum(axis=1))[0]) for d in item.directions)
    assert atoms == sorted(int(d[0]) for d in least)


def test_targets_never_include_nac(tmp_path, nio_phonopy):
    """Born charges in the YAML (nac_params) or in a BORN file beside it are recorded, and the
    force constants and Φ·v targets are phonopy's analytic ones; the reference's NAC is real (it
    moves the near-Γ frequencies), so leaving it out is a choice this test would see reversed."""
    yaml = tmp_path / "phonopy_params.yaml"
    nio_phonopy.save(yaml)
    item = read_phonon_item(yaml)
    assert item.nac_params is not None and item.nac_source == str(yaml)
    assert item.provenance()["nac_params_present"] and not item.provenance()["nac_applied_to_force_constants"]
    np.testing.assert_allclose(item.nac_params["born"], BORN, atol=1e-6)
    assert_force_constants_equal(item, nio_phonopy)
    rng = direction_rng(3, 0, 0)
    directions, targets, mask = sample_directions(item, 4, "random", rng)
    analytic = np.einsum("ijab,kjb->kia", nio_phonopy.force_constants, directions)
    np.testing.assert_allclose(targets, analytic, rtol=0, atol=1e-10 * np.abs(analytic).max())

    near_gamma = [[1e-3, 0, 0]]
    with_nac = nio_phonopy.get_frequencies(near_gamma[0])
    without = Phonopy(nio_phonopy.unitcell, nio_phonopy.supercell_matrix, primitive_matrix=nio_phonopy.primitive_matrix)
    without.force_constants = nio_phonopy.force_constants
    assert np.abs(with_nac - without.get_frequencies(near_gamma[0])).max() > 0.5  # THz: LO–TO splitting

    beside = tmp_path / "born"
    beside.mkdir()
    nio_phonopy.save(beside / "phonopy_disp.yaml", settings={"force_sets": False, "born_effective_charge": False,
                                                             "dielectric_constant": False})
    write_FORCE_SETS(nio_phonopy.dataset, filename=beside / "FORCE_SETS")
    write_BORN(nio_phonopy.primitive, BORN, EPSILON, filename=beside / "BORN")
    item = read_phonon_item(beside / "phonopy_disp.yaml")
    assert item.nac_source == str(beside / "BORN")
    np.testing.assert_allclose(item.nac_params["dielectric"], EPSILON, atol=1e-6)
    assert_force_constants_equal(item, nio_phonopy, atol=FORCE_SETS_ATOL)

    alone = tmp_path / "without_born"  # the same files without BORN: the same batch, bit for bit
    alone.mkdir()
    for name in ("phonopy_disp.yaml", "FORCE_SETS"):
        (alone / name).write_bytes((beside / name).read_bytes())
    plain = read_phonon_item(alone / "phonopy_disp.yaml")
    assert plain.nac_params is None
    graphs = [phonon_graph(i, CUTOFF, (8, 28)) for i in (item, plain)]
    with_born, without = (hessian_batch([i], [g], k=3, seed=5) for i, g in zip((item, plain), graphs))
    for key in ("hessian_directions", "hessian_targets", "hessian_mask"):
        assert with_born.nodes[key].tobytes() == without.nodes[key].tobytes(), key


def test_type2_data_set_of_displacements_of_every_atom(cu3au_phonopy):
    """A phonopy type-2 data set (every atom displaced) with harmonic forces F = −Φ·u: its pairs
    are kept, its directions are the normalised displacements, and raw targets equal Φ·û exactly."""
    rng = np.random.default_rng(2)
    fc = cu3au_phonopy.force_constants
    displacements = rng.normal(scale=0.01, size=(2, 32, 3))
    forces = -np.einsum("ijab,mjb->mia", fc, displacements)
    phonon = Phonopy(cu3au_phonopy.unitcell, cu3au_phonopy.supercell_matrix, primitive_matrix=cu3au_phonopy.primitive_matrix)
    phonon.dataset = {"displacements": displacements, "forces": forces}
    phonon.force_constants = fc
    item = phonon_item_from_phonopy(phonon, "type-2")
    np.testing.assert_array_equal(item.displacements, displacements)
    np.testing.assert_array_equal(item.forces, forces)
    np.testing.assert_allclose(item.directions, displacements / np.linalg.norm(displacements, axis=(1, 2))[:, None, None])
    directions, targets, mask = sample_directions(item, 3, "raw", direction_rng(0, 0, 0))
    assert mask.tolist() == [True, True, False]
    np.testing.assert_allclose(targets, np.einsum("ijab,kjb->kia", fc, directions), atol=1e-12)


def test_named_errors(tmp_path, cu3au_phonopy):
    """No forces, NaN, inconsistent shapes, unknown elements, raw directions without data."""
    cu3au_phonopy.save(tmp_path / "phonopy_disp.yaml", settings={"force_sets": False})
    with pytest.raises(PhononDataError, match="phonopy_disp.yaml: no force constants"):
        read_phonon_item(tmp_path / "phonopy_disp.yaml")
    item = phonon_item_from_phonopy(cu3au_phonopy, "Cu3Au.yaml")
    forces = item.forces.copy()
    forces[1, 5, 2] = np.nan
    with pytest.raises(PhononDataError, match=r"Cu3Au.yaml: forces contains NaN or inf \(first at index \[1, 5, 2\]\)"):
        dataclasses.replace(item, forces=forces)
    with pytest.raises(PhononDataError, match="Cu3Au.yaml: displacements .* and forces"):
        dataclasses.replace(item, forces=item.forces[:, :-1])
    with pytest.raises(PhononDataError, match="Cu3Au.yaml: force constants have shape"):
        dataclasses.replace(item, force_constants=item.force_constants[:-1])
    with pytest.raises(PhononDataError, match=r"Cu3Au.yaml: structure contains element\(s\) \['Au'\]"):
        phonon_graph(item, CUTOFF, (13, 29))
    fc_only = dataclasses.replace(item, displacements=np.zeros((0, 32, 3)), forces=np.zeros((0, 32, 3)))
    with pytest.raises(PhononDataError, match="Cu3Au.yaml: direction mode 'raw' needs displaced supercells"):
        sample_directions(fc_only, 2, "raw", direction_rng(0, 0, 0))


def test_directions_and_targets(cu3au_phonopy):
    """Random directions: length √(3N), E[v vᵀ] = I, a function of (seed, epoch, step) only;
    phonopy's: all of them (the rest masked) or K distinct ones; targets Φ·v with phonopy's Φ."""
    item = phonon_item_from_phonopy(cu3au_phonopy, "Cu3Au")
    n3 = 3 * item.n_atoms
    first = sample_directions(item, 4, "random", direction_rng(1, 2, 3))
    again = sample_directions(item, 4, "random", direction_rng(1, 2, 3))
    later = sample_directions(item, 4, "random", direction_rng(1, 2, 4))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], later[0])
    np.testing.assert_allclose(np.linalg.norm(first[0].reshape(4, -1), axis=1), np.sqrt(n3))
    assert first[2].all()
    np.testing.assert_allclose(first[1], np.einsum("ijab,kjb->kia", cu3au_phonopy.force_constants, first[0]),
                               atol=1e-10)

    draws = sample_directions(item, 6000, "random", direction_rng(0, 0, 0))[0].reshape(6000, n3)
    second_moment = draws.T @ draws / len(draws)
    assert np.abs(second_moment - np.eye(n3)).max() < 0.1  # 6000 draws: standard error ≈ 0.013 off the diagonal

    d = len(item.directions)
    assert d >= 2
    directions, targets, mask = sample_directions(item, d + 2, "phonopy", direction_rng(0, 0, 0))
    assert mask.tolist() == [True] * d + [False] * 2 and not directions[d:].any() and not targets[d:].any()
    np.testing.assert_allclose(directions[:d], item.directions * np.sqrt(n3))
    directions, _, mask = sample_directions(item, d - 1, "phonopy", direction_rng(0, 0, 0))
    assert mask.all()
    overlaps = directions.reshape(d - 1, -1) @ item.directions.reshape(d, -1).T / np.sqrt(n3)
    assert sorted(np.argmax(overlaps, axis=1).tolist()) == sorted(set(np.argmax(overlaps, axis=1).tolist()))
    np.testing.assert_allclose(overlaps.max(axis=1), 1.0)


@pytest.mark.filterwarnings("ignore:Warning. Point group symmetries")  # the 2×2×7 supercell
def test_padded_batches_of_different_sizes_share_one_shape():
    """Two Al supercells of 27 and 28 atoms fall into one bucket: same padded shapes, one
    compilation; the fields hold each item's own draws at its node offsets, zero on padding."""
    small = phonon_item_from_phonopy(finite_displacement_phonopy(aluminium(), np.diag([3, 3, 3]), EMT), "Al27")
    large = phonon_item_from_phonopy(finite_displacement_phonopy(aluminium(), np.diag([2, 2, 7]), EMT), "Al28")
    mixed = phonon_item_from_phonopy(finite_displacement_phonopy(cu3au(), np.diag([1, 1, 2]), EMT), "Cu3Au8")
    graphs = {item.source: phonon_graph(item, CUTOFF, ELEMENTS) for item in (small, large, mixed)}
    errors = jax.jit(lambda graph: hessian_error_sums(0.5 * graph.nodes["hessian_targets"], graph))
    shapes = []
    for item in (small, large):
        for step in (0, 1):
            batch = hessian_batch([item], [graphs[item.source]], k=3, mode="random", seed=5, step=step)
            shapes.append(jax.tree_util.tree_map(np.shape, batch))
            errors(batch)
    assert all(s == shapes[0] for s in shapes) and shapes[0].nodes["positions"] == (28, 3)
    assert errors._cache_size() == 1

    batch = hessian_batch([mixed, small], [graphs["Cu3Au8"], graphs["Al27"]], k=3, mode="random", seed=5, epoch=2, step=7)
    plain = pad_to_bucket(batch_graphs([graphs["Cu3Au8"], graphs["Al27"]]))
    assert jax.tree_util.tree_map(np.shape, batch.nodes["positions"]) == plain.nodes["positions"].shape
    np.testing.assert_array_equal(batch.senders, plain.senders)
    rng = direction_rng(5, 2, 7)
    for item, offset in ((mixed, 0), (small, 8)):
        directions, targets, mask = sample_directions(item, 3, "random", rng)
        rows = slice(offset, offset + item.n_atoms)
        np.testing.assert_array_equal(batch.nodes["hessian_directions"][rows], np.swapaxes(directions, 0, 1))
        np.testing.assert_array_equal(batch.nodes["hessian_targets"][rows], np.swapaxes(targets, 0, 1))
        assert batch.nodes["hessian_mask"][rows].all()
    assert not batch.nodes["hessian_mask"][35:].any() and not batch.nodes["hessian_directions"][35:].any()


def test_raw_targets_carry_the_anharmonic_bias():
    """Raw targets −F(u)·√(3N)/|u| from one-sided displacements of EMT Al (3×3×3 primitive
    supercell) differ from Φ·û·√(3N) by ½|u|·Φ3[û, û]·√(3N) + O(|u|²), with Φ3[û, û] from a
    second central difference of EMT forces (h = 1e-3 Å) and Φ from phonopy at ±1e-3 Å; the ± pair
    of a plus–minus data set cancels the O(|u|) term.  Measured: deviation from the ½|u|·Φ3 term
    1.6 |u|/Å relative; ± average 0.03 of the one-sided bias at |u| = 0.02 Å."""
    supercell = np.diag([3, 3, 3])
    exact = phonon_item_from_phonopy(finite_displacement_phonopy(aluminium(), supercell, EMT, 1e-3, True), "exact")
    n3 = 3 * exact.n_atoms
    phi = exact.force_constants.reshape(n3, n3)
    biases = {}
    for distance in (0.01, 0.02):
        item = phonon_item_from_phonopy(finite_displacement_phonopy(aluminium(), supercell, EMT, distance, False), "raw")
        (direction,), (target,), _ = sample_directions(item, 1, "raw", direction_rng(0, 0, 0))
        biases[distance] = target - (phi @ direction.reshape(-1)).reshape(direction.shape)
        unit, h = direction / np.sqrt(n3), 1e-3

        def forces(step):
            atoms = item.supercell.copy()
            atoms.positions += step * unit
            atoms.calc = EMT()
            return atoms.get_forces()

        third = -(forces(h) + forces(-h) - 2 * forces(0.0)) / h**2  # Φ3[û, û], eV/Å³
        expected = 0.5 * distance * np.sqrt(n3) * third
        assert np.abs(expected).max() > 0.05  # a real anharmonic term (eV/Å²)
        assert np.abs(biases[distance] - expected).max() < 3 * distance * np.abs(expected).max()
    ratio = np.linalg.norm(biases[0.02]) / np.linalg.norm(biases[0.01])
    assert abs(ratio - 2) < 0.1

    both = phonon_item_from_phonopy(finite_displacement_phonopy(aluminium(), supercell, EMT, 0.02, True), "±")
    directions, targets, mask = sample_directions(both, 2, "raw", direction_rng(0, 0, 0))
    assert mask.all() and np.allclose(directions[0], -directions[1])
    central = 0.5 * (targets[0] - targets[1]) - (phi @ directions[0].reshape(-1)).reshape(directions[0].shape)
    assert np.abs(central).max() < 0.1 * np.abs(biases[0.02]).max()
