"""Tests for ASE Atoms -> padded jraph.GraphsTuple conversion."""

from __future__ import annotations

import re

import jraph
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from equitrain_jax.data import (
    add_masks,
    atoms_to_graph,
    batch_graphs,
    bucket_size,
    in_degree,
    neighbour_list,
    pad_graph,
    pad_to_bucket,
)

MODEL_Z = [1, 6, 7, 8, 11, 14, 18, 29]


def _triclinic() -> Atoms:
    rng = np.random.default_rng(0)
    cell = np.array([[5.0, 0.0, 0.0], [1.2, 4.6, 0.0], [0.7, -0.9, 5.3]])
    frac = np.array(
        [[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.25, 0.25, 0.25]]
    )
    frac = frac + rng.uniform(-0.05, 0.05, frac.shape)
    return Atoms("SiO2NaC", scaled_positions=frac, cell=cell, pbc=True)


def _small_cell() -> Atoms:
    cell = [[2.2, 0, 0], [0.4, 2.1, 0], [0, 0.3, 2.4]]
    return Atoms("Cu", positions=[[0.1, 0.2, 0.3]], cell=cell, pbc=True)


def _molecule() -> Atoms:
    return molecule("CH3CH2OH")


def _slab() -> Atoms:
    return fcc111("Cu", (2, 2, 3), vacuum=6.0)


def _isolated() -> Atoms:
    atoms = molecule("H2O")
    atoms += Atoms("Ar", positions=[[500.0, -300.0, 1000.0]])
    return atoms


def _unwrapped() -> Atoms:
    atoms = _triclinic()
    atoms.positions += np.array([[7.0, -11.0, 3.0]]) * np.arange(len(atoms))[:, None]
    return atoms


STRUCTURES = {
    "triclinic": (_triclinic, 4.0),
    "small_cell_many_images": (_small_cell, 7.5),
    "molecule": (_molecule, 3.0),
    "slab_xy": (_slab, 5.0),
    "isolated_atom": (_isolated, 4.0),
    "unwrapped_positions": (_unwrapped, 4.0),
}


def _triples(i: np.ndarray, j: np.ndarray, shifts: np.ndarray) -> set:
    return set(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(shifts).astype(int).tolist())))


def _edge_vectors(graph) -> np.ndarray:
    """Edge vectors [E, 3] in Å recomputed from positions, shifts and per-edge cells."""
    edge_graph = np.repeat(np.arange(len(graph.n_edge)), graph.n_edge)
    positions = graph.nodes["positions"]
    shifts = np.einsum("ei,eij->ej", graph.edges["unit_shifts"], graph.globals["cell"][edge_graph])
    return positions[graph.receivers] - positions[graph.senders] + shifts


@pytest.mark.parametrize("name", STRUCTURES)
def test_neighbour_list_matches_ase(name: str) -> None:
    make, cutoff = STRUCTURES[name]
    atoms = make()
    i, j, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    expected = _triples(*ase_neighbor_list("ijS", atoms, cutoff))
    assert _triples(i, j, shifts) == expected
    assert len(i) == len(expected)
    assert i.dtype == np.int32 and j.dtype == np.int32


def test_structures_exercise_their_cases() -> None:
    small = _small_cell()
    i, j, shifts = neighbour_list(small.positions, small.cell.array, small.pbc, 7.5)
    assert np.abs(shifts).max() >= 3  # cutoff spans several cell images
    slab = _slab()
    assert list(slab.pbc) == [True, True, False]
    _, _, shifts = neighbour_list(slab.positions, slab.cell.array, slab.pbc, 5.0)
    assert np.all(shifts[:, 2] == 0) and np.any(shifts[:, :2] != 0)
    isolated = _isolated()
    i, j, _ = neighbour_list(isolated.positions, isolated.cell.array, isolated.pbc, 4.0)
    assert 3 not in i and 3 not in j


@pytest.mark.parametrize("name", STRUCTURES)
def test_atoms_to_graph_layout_and_physics(name: str) -> None:
    make, cutoff = STRUCTURES[name]
    atoms = make()
    graph = atoms_to_graph(atoms, cutoff, MODEL_Z, head=2)
    n, e = len(atoms), len(graph.senders)

    assert set(graph.nodes) == {"positions", "species"}
    assert set(graph.edges) == {"unit_shifts"}
    assert set(graph.globals) == {"cell", "head"}
    assert graph.nodes["positions"].dtype == np.float64 and graph.nodes["positions"].shape == (n, 3)
    assert graph.nodes["species"].dtype == np.int32
    assert graph.edges["unit_shifts"].dtype == np.float64
    assert graph.edges["unit_shifts"].shape == (e, 3)
    assert graph.senders.dtype == np.int32 and graph.receivers.dtype == np.int32
    assert graph.globals["cell"].shape == (1, 3, 3) and graph.globals["head"].tolist() == [2]
    assert graph.n_node.tolist() == [n] and graph.n_edge.tolist() == [e]
    assert graph.n_node.dtype == np.int32 and graph.n_edge.dtype == np.int32

    np.testing.assert_array_equal(np.array(MODEL_Z)[graph.nodes["species"]], atoms.numbers)
    moved = atoms.copy()  # the graph's positions: the same structure, moved towards the origin (near_origin)
    moved.positions = graph.nodes["positions"]
    assert _triples(graph.senders, graph.receivers, graph.edges["unit_shifts"]) == _triples(
        *ase_neighbor_list("ijS", moved, cutoff)
    )
    # the same edges as ASE finds in the structure as given: (i, j, edge vector) one by one
    i, j, vectors = ase_neighbor_list("ijD", atoms, cutoff)
    expected = sorted(zip(i.tolist(), j.tolist(), np.round(vectors, 8).tolist()))
    ours = sorted(zip(graph.senders.tolist(), graph.receivers.tolist(), np.round(_edge_vectors(graph), 8).tolist()))
    assert [(a, b) for a, b, _ in ours] == [(a, b) for a, b, _ in expected]
    np.testing.assert_allclose([v for *_, v in ours], [v for *_, v in expected], atol=1e-10)
    lengths = np.linalg.norm(_edge_vectors(graph), axis=1)
    assert np.all(lengths < cutoff) and np.all(lengths > 0)
    expected_lengths = np.sort(ase_neighbor_list("d", atoms, cutoff))
    np.testing.assert_allclose(np.sort(lengths), expected_lengths, atol=1e-10)


def test_batch_graphs_offsets_indices() -> None:
    g1 = atoms_to_graph(_triclinic(), 4.0, MODEL_Z)
    g2 = atoms_to_graph(_molecule(), 3.0, MODEL_Z, head=1)
    batch = batch_graphs([g1, g2])

    assert batch.n_node.tolist() == [*g1.n_node, *g2.n_node]
    assert batch.n_edge.tolist() == [*g1.n_edge, *g2.n_edge]
    assert batch.globals["head"].tolist() == [0, 1]
    n1 = int(g1.n_node[0])
    np.testing.assert_array_equal(batch.senders, np.concatenate([g1.senders, g2.senders + n1]))
    np.testing.assert_array_equal(
        batch.receivers, np.concatenate([g1.receivers, g2.receivers + n1])
    )
    np.testing.assert_allclose(
        _edge_vectors(batch), np.concatenate([_edge_vectors(g1), _edge_vectors(g2)]), atol=1e-12
    )


def test_bucket_size() -> None:
    sizes = [bucket_size(n) for n in range(0, 5000)]
    assert all(s >= max(n, 1) for n, s in enumerate(sizes))
    assert all((s - n) / n <= 0.25 for n, s in enumerate(sizes) if n >= 32)
    assert min(sizes) == 8
    assert len({bucket_size(n) for n in range(1025, 2049)}) == 4
    assert bucket_size(1, minimum=2) == 2
    with pytest.raises(ValueError, match="-1"):
        bucket_size(-1)


def _edge_set(graph, mask=None) -> set:
    keep = np.ones(len(graph.senders), bool) if mask is None else mask
    return {
        (int(s), int(r), tuple(int(x) for x in shift))
        for s, r, shift in zip(graph.senders[keep], graph.receivers[keep], graph.edges["unit_shifts"][keep])
    }


def _check_padded(padded, unpadded, real_graphs: int) -> None:
    """Neighbour-major layout: slot n*K + k is the k-th edge into node n; same real edges."""
    real_nodes, real_edges = int(unpadded.n_node.sum()), len(unpadded.senders)
    n, e, g = len(padded.nodes["species"]), len(padded.senders), len(padded.n_node)
    k = padded.nodes["neighbour_mask"].shape[1]
    assert e == n * k and padded.n_node.sum() == n
    np.testing.assert_array_equal(padded.n_edge, padded.n_node * k)
    np.testing.assert_array_equal(padded.receivers, np.repeat(np.arange(n), k))
    np.testing.assert_array_equal(padded.nodes["neighbour_mask"].reshape(-1), padded.edges["mask"])
    assert len(padded.nodes["positions"]) == n and len(padded.edges["unit_shifts"]) == e
    assert len(padded.globals["cell"]) == g and len(padded.globals["head"]) == g
    assert padded.nodes["mask"].sum() == real_nodes and padded.nodes["mask"][:real_nodes].all()
    assert padded.edges["mask"].sum() == real_edges
    assert padded.globals["mask"].sum() == real_graphs
    assert padded.globals["mask"][:real_graphs].all()
    assert _edge_set(padded, padded.edges["mask"]) == _edge_set(unpadded)
    lengths = np.linalg.norm(_edge_vectors(padded), axis=1)[padded.edges["mask"]]
    assert np.all(lengths > 0)
    empty = ~padded.edges["mask"]
    np.testing.assert_array_equal(padded.senders[empty], padded.receivers[empty])
    # every slot stays inside its graph
    node_graph = np.repeat(np.arange(g), padded.n_node)
    np.testing.assert_array_equal(node_graph[padded.senders], node_graph[padded.receivers])
    assert np.all(np.abs(np.linalg.det(padded.globals["cell"][real_graphs:])) > 0)
    assert np.all(padded.nodes["species"][real_nodes:] == 0)
    assert np.all(padded.globals["head"][real_graphs:] == 0)


def test_pad_graph_exact_sizes() -> None:
    batch = batch_graphs(
        [atoms_to_graph(_triclinic(), 4.0, MODEL_Z), atoms_to_graph(_isolated(), 4.0, MODEL_Z)]
    )
    nodes = int(batch.n_node.sum())
    k = in_degree(batch) + 3
    padded = pad_graph(batch, n_node=nodes + 5, max_neighbours=k, n_graph=5)
    assert len(padded.senders) == (nodes + 5) * k and len(padded.nodes["species"]) == nodes + 5
    assert padded.n_node.tolist()[2:] == [5, 0, 0]
    _check_padded(padded, batch, 2)
    # jraph's own padding convention agrees with the node and graph masks
    np.testing.assert_array_equal(jraph.get_graph_padding_mask(padded), padded.globals["mask"])
    np.testing.assert_array_equal(jraph.get_node_padding_mask(padded), padded.nodes["mask"])


def test_pad_graph_without_padding_nodes_and_masks_kept() -> None:
    graph = add_masks(atoms_to_graph(_molecule(), 3.0, MODEL_Z))
    assert graph.nodes["mask"].all() and graph.edges["mask"].all() and graph.globals["mask"].all()
    nodes = int(graph.n_node.sum())
    padded = pad_graph(graph, n_node=nodes, max_neighbours=in_degree(graph), n_graph=2)
    assert padded.n_node.tolist() == [nodes, 0]
    _check_padded(padded, graph, 1)


@pytest.mark.parametrize("name", STRUCTURES)
def test_pad_to_bucket(name: str) -> None:
    make, cutoff = STRUCTURES[name]
    graph = atoms_to_graph(make(), cutoff, MODEL_Z)
    nodes = int(graph.n_node.sum())
    padded = pad_to_bucket(graph)
    assert len(padded.nodes["species"]) == bucket_size(nodes)
    assert padded.nodes["neighbour_mask"].shape[1] == bucket_size(in_degree(graph), minimum=4)
    _check_padded(padded, graph, 1)


def test_pad_graph_rejects_too_small_sizes() -> None:
    graph = atoms_to_graph(_molecule(), 3.0, MODEL_Z)
    nodes, degree = int(graph.n_node.sum()), in_degree(graph)
    for sizes in [(nodes - 1, degree, 2), (nodes, degree - 1, 2), (nodes, degree, 1)]:
        with pytest.raises(ValueError, match="max_neighbours"):
            pad_graph(graph, *sizes)


def _cell_error_structures() -> list[tuple[Atoms, str]]:
    zero_c = _triclinic()
    zero_c.cell[2] = 0.0
    parallel = _triclinic()
    parallel.cell[1] = 2 * parallel.cell[0]
    tiny = Atoms("H", positions=[[0, 0, 0]], cell=[1e-9, 3, 3], pbc=[True, False, False])
    slanted = _slab()
    slanted.cell[1] = slanted.cell[0] + [0.0, 0.01, 0.0]
    return [
        (zero_c, "direction(s) 2 (c)"),
        (parallel, "0 (a), 1 (b)"),
        (tiny, "0.1"),
        (slanted, "degenerate"),
    ]


@pytest.mark.parametrize(
    ("atoms", "cutoff", "keywords"),
    [
        (Atoms(), 3.0, ["empty"]),
        (molecule("CH3CH2Cl"), 3.0, ["Cl", "['H', 'C', 'N', 'O'"]),
        (Atoms("FeAu", positions=[[0, 0, 0], [2, 0, 0]]), 3.0, ["Fe", "Au"]),
        (Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.05]]), 3.0, ["0.1", "atoms 0 and 1"]),
        (
            Atoms("H2", positions=[[0, 0, 0.01], [0, 0, 2.96]], cell=[3, 3, 3.0], pbc=True),
            3.0,
            ["0.1", "0.05"],
        ),
        (molecule("H2O"), 0.0, ["cutoff", "0.0"]),
        (molecule("H2O"), -1.0, ["cutoff", "-1.0"]),
        *[(atoms, 3.0, ["cell", kw]) for atoms, kw in _cell_error_structures()],
    ],
)
def test_bad_input_raises(atoms: Atoms, cutoff: float, keywords: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        atoms_to_graph(atoms, cutoff, MODEL_Z)
    for keyword in keywords:
        assert keyword in str(info.value)


def test_nan_positions_raise() -> None:
    atoms = molecule("H2O")
    atoms.positions[2, 1] = np.nan
    atoms.positions[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"NaN.*\[0, 2\]"):
        atoms_to_graph(atoms, 3.0, MODEL_Z)


def test_zero_cell_allowed_along_non_periodic_direction() -> None:
    slab = _slab()
    slab.cell[2] = 0.0
    graph = atoms_to_graph(slab, 5.0, MODEL_Z)
    slab.positions = graph.nodes["positions"]  # as moved by near_origin
    assert _triples(graph.senders, graph.receivers, graph.edges["unit_shifts"]) == _triples(
        *ase_neighbor_list("ijS", slab, 5.0)
    )


CRASH_SCRIPT = """
import json, sys, warnings
import jax, numpy as np
from ase import Atoms
from ase.build import bulk
from equitrain_jax.calculator import Calculator
from equitrain_jax.data import atoms_to_graph, padded_device_graph
from equitrain_jax.models.io import ModelBundle
from equitrain_jax.models.sevennet import SevenNetConfig
from equitrain_jax.phonons import phonopy_from_potential
from equitrain_jax.phonons.hessian import hessian
from equitrain_jax.potential import Potential

config = SevenNetConfig(atomic_numbers=(1, 14), node_irreps=("4x0e", "4x0e+2x1e", "4x0e"), conv_denominators=(1.0, 1.0),
                        scale=(1.0, 1.0), shift=(0.0, 0.0), r_max=5.0, cutoff_on=4.5, num_bessel=4, radial_mlp=(8,),
                        readout_hidden=4)
graph = padded_device_graph(atoms_to_graph(Atoms("H2", positions=[[0, 0, 0], [0, 0, 1]]), 5.0, (1, 14)), np.float32)
shapes = jax.eval_shape(config.module(np.float32).init, jax.random.PRNGKey(0), graph)
potential = Potential(ModelBundle(config, jax.tree_util.tree_map(lambda x: np.ones(x.shape, x.dtype), shapes)))
huge = bulk("Si", "diamond", a=5.43)
huge.set_cell([[1e6, 0, 0], [0, 5.43, 0], [0, 0, 5.43]])
cases = {
    "far apart": Atoms("H2", positions=[[0, 0, 0], [1e6, 0, 0]]),
    "huge cell": Atoms("H", positions=[[0, 0, 0]], cell=[1e6, 5, 5], pbc=True),
    "wide flat cell": Atoms("H", positions=[[0, 0, 0]], cell=[2000, 2000, 5], pbc=True),
}
calls = {
    "evaluate": lambda atoms: potential.evaluate([atoms]),
    "calculator": lambda atoms: Atoms(atoms, calculator=Calculator(potential)).get_potential_energy(),
    "hessian": lambda atoms: hessian(potential, atoms),
}
results = {}
for name, atoms in cases.items():
    for call, run in calls.items():
        try:
            run(atoms)
            results[f"{name}/{call}"] = "no error"
        except ValueError as error:
            results[f"{name}/{call}"] = str(error)
try:  # a 1 Å cutoff over 2e5 Å: too many cells in one direction
    atoms_to_graph(Atoms("H2", positions=[[-99999, 0, 0], [99999, 0, 0]]), 1.0, (1,))
    results["long thin region/graph"] = "no error"
except ValueError as error:
    results["long thin region/graph"] = str(error)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        phonopy_from_potential(potential, huge, 1)
        results["huge cell/phonopy"] = "no error"
    except ValueError as error:
        results["huge cell/phonopy"] = str(error)
print(json.dumps(results))
"""


def test_far_apart_atoms_and_huge_cells_are_refused_not_fatal(tmp_path) -> None:
    """Atoms 1e6 Å apart, a 1e6 Å cell, or a region vesin cannot bin (these die by SIGFPE inside
    vesin when passed to it) give a ValueError stating the limit through `Potential.evaluate`, the
    ASE calculator, the Hessian and phonopy; run in a subprocess, so a crash fails the test rather
    than the test run."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    run = subprocess.run([sys.executable, "-c", CRASH_SCRIPT], capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).parents[2])
    assert run.returncode == 0, f"exit status {run.returncode} (negative: killed by a signal)\n{run.stderr[-2000:]}"
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(results) == 11
    for key, message in results.items():
        case = key.split("/")[0]
        expected = {"far apart": r"coordinates beyond ±1e\+05 Å \(MAX_COORDINATE\)",
                    "huge cell": r"cell vector a is 1e\+06 Å long.*MAX_COORDINATE",
                    "long thin region": r"cubes of the cutoff \(1 Å\).*100000 \(MAX_CELL_LIST_CELLS\)",
                    "wide flat cell": r"spans 2000 × 2000 × 5 Å.*100000 \(MAX_CELL_LIST_CELLS\)"}[case]
        assert re.search(expected, message), (key, message)


@pytest.mark.parametrize(
    "atoms, cutoff",
    [
        (Atoms("H2", positions=[[0, 0, 0], [1, 1, 1]], cell=[300, 300, 300], pbc=True), 5.0),
        (Atoms("H2", positions=[[0, 0, 0], [5e4, 0, 0]]), 5.0),
    ],
    ids=["large cube", "molecules 5e4 Å apart"],
)
def test_large_but_binnable_regions_are_accepted(atoms: Atoms, cutoff: float) -> None:
    """vesin coarsens a large, not elongated grid itself, and a long one under its cell cap is fine."""
    graph = atoms_to_graph(atoms, cutoff, MODEL_Z)
    assert len(graph.senders) == (2 if atoms.pbc.all() else 0)


def test_too_many_neighbour_pairs_are_refused() -> None:
    """A 0.2 Å cell with a 1000 Å cutoff would list ~5e11 periodic images."""
    atoms = Atoms("H", positions=[[0, 0, 0]], cell=[0.2, 0.2, 0.2], pbc=True)
    with pytest.raises(ValueError, match=r"5\.24e\+11 neighbour pairs expected.*MAX_NEIGHBOUR_PAIRS"):
        atoms_to_graph(atoms, 1000.0, MODEL_Z)


def test_a_cell_in_nanometres_is_refused() -> None:
    """Diamond Si with a = 0.543 (nm taken for Å): 50 atoms/Å³ passed every check before and ran
    out of memory (30 GB) inside the model; it is refused with the density named."""
    atoms = bulk("Si", "diamond", a=0.543, cubic=True)
    with pytest.raises(ValueError, match=r"0.1601 Å³: 50 atoms/Å³, denser than any solid.*not nm or bohr"):
        atoms_to_graph(atoms, 5.0, MODEL_Z)
    atoms_to_graph(bulk("C", "diamond", a=3.567, cubic=True), 5.0, MODEL_Z)  # the densest real one: fine
