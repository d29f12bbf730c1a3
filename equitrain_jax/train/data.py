"""Labelled, padded training batches from ASE structures.

Labels become graph fields next to the inputs (see `equitrain_jax.data.graph`)::

    globals["energy"]     [G]        eV, total energy, 0 where absent
    globals["has_energy"] [G]        bool, whether the energy label is used
    nodes["forces"]       [N, 3]     eV/Å
    globals["stress"]     [G, 3, 3]  eV/Å³ (ASE sign: +dE/dε / V), zeros where absent
    globals["has_stress"] [G]        bool, whether the stress label is used

Each label is read from ``atoms.info`` (energy, stress) or ``atoms.arrays`` (forces) under the
configured key, else from ``atoms.calc.results`` under the same key.  Forces are required, stress
is optional per structure, and so is the energy of a structure that says it has none with
``atoms.info[FORCES_ONLY] = True`` (phono3py's displaced supercells, see
`equitrain_jax.train.third_order_data`): the loss masks the labels a structure lacks, and a
missing energy anywhere else is an error (a mistyped key must not train silently without
energies).  All checks happen here, before anything is compiled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Optional

import ase
import jax
import jraph
import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress

from equitrain_jax.data import atoms_to_graph, batch_graphs, bucket_shape, device_arrays, pad_graph, padded_device_graph
from equitrain_jax.train.config import FORCES_ONLY


class LabelKeys(NamedTuple):
    """Where labels are stored; ``stress=None`` trains without stress."""

    energy: str = "energy"
    forces: str = "forces"
    stress: Optional[str] = "stress"


def _lookup(atoms: ase.Atoms, key: str, per_atom: bool, index: int) -> Optional[np.ndarray]:
    store = atoms.arrays if per_atom else atoms.info
    if key in store:
        value = store[key]
    elif atoms.calc is not None and key in getattr(atoms.calc, "results", {}):
        changed = atoms.calc.check_state(atoms) if hasattr(atoms.calc, "check_state") else []
        if changed:  # ASE's own getters refuse these results too
            raise ValueError(f"structure {index} ({atoms.get_chemical_formula()}): its calculator's {key!r} belongs to "
                             f"another structure (changed since: {', '.join(changed)}); label it again")
        value = atoms.calc.results[key]
    else:
        return None
    value = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(value)):
        raise ValueError(f"structure {index}: label {key!r} contains NaN or inf: {value.tolist()}")
    return value


def _required(atoms: ase.Atoms, key: str, per_atom: bool, index: int) -> np.ndarray:
    value = _lookup(atoms, key, per_atom, index)
    if value is None:
        where = "atoms.arrays" if per_atom else "atoms.info"
        raise ValueError(f"structure {index} ({atoms.get_chemical_formula()}): no {key!r} label in {where} or atoms.calc.results")
    return value


def labelled_graph(
    atoms: ase.Atoms,
    cutoff: float,
    atomic_numbers: Sequence[int],
    keys: LabelKeys = LabelKeys(),
    head: int = 0,
    index: int = 0,
) -> jraph.GraphsTuple:
    """Unpadded graph of ``atoms`` with its labels; ``index`` names the structure in errors.

    Raises:
        ValueError: for a missing, misshaped or non-finite label, and for every input error of
            `equitrain_jax.data.atoms_to_graph` (unknown elements, …), prefixed by the index.
    """
    try:
        graph = atoms_to_graph(atoms, cutoff, atomic_numbers, head=head)
    except ValueError as error:
        raise ValueError(f"structure {index}: {error}") from error
    energy = None if atoms.info.get(FORCES_ONLY) else _required(atoms, keys.energy, False, index)
    forces = _required(atoms, keys.forces, True, index)
    if energy is not None and energy.reshape(-1).shape != (1,):
        raise ValueError(f"structure {index}: energy label {keys.energy!r} should be one number, got shape {energy.shape}")
    if forces.shape != (len(atoms), 3):
        raise ValueError(f"structure {index}: forces label {keys.forces!r} has shape {forces.shape}, expected {(len(atoms), 3)}")
    stress = None if keys.stress is None else _lookup(atoms, keys.stress, False, index)
    if stress is not None:
        stress = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress
        if stress.shape != (3, 3):
            raise ValueError(f"structure {index}: stress label {keys.stress!r} has shape {stress.shape}, expected (6,) or (3, 3)")
    return graph._replace(
        nodes={**graph.nodes, "forces": forces},
        globals={
            **graph.globals,
            "energy": np.zeros(1) if energy is None else energy.reshape(1),
            "has_energy": np.array([energy is not None]),
            "stress": np.zeros((1, 3, 3)) if stress is None else stress[None],
            "has_stress": np.array([stress is not None]),
        },
    )


def labelled_batches(
    structures: Sequence[ase.Atoms],
    cutoff: float,
    atomic_numbers: Sequence[int],
    batch_size: int = 8,
    keys: LabelKeys = LabelKeys(),
    head: Any = 0,
    dtype: Any = np.float64,
) -> list[jraph.GraphsTuple]:
    """Padded labelled batches of ``batch_size`` structures (the last may be smaller), in order.

    ``head``: one head index, or one per structure.  Every structure is checked before any batch
    is built.
    """
    graphs = _checked_graphs(structures, cutoff, atomic_numbers, batch_size, keys, head)
    return [
        padded_device_graph(batch_graphs(graphs[start : start + batch_size]), dtype)
        for start in range(0, len(graphs), batch_size)
    ]


def _checked_graphs(structures, cutoff, atomic_numbers, batch_size, keys, head) -> list[jraph.GraphsTuple]:
    structures = list(structures)
    if not structures:
        raise ValueError("no training structures: got an empty list")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    heads = [head] * len(structures) if np.ndim(head) == 0 else list(head)
    if len(heads) != len(structures):
        raise ValueError(f"got {len(heads)} head indices for {len(structures)} structures")
    return [labelled_graph(a, cutoff, atomic_numbers, keys, h, i) for i, (a, h) in enumerate(zip(structures, heads))]


def sharded_batches(
    structures: Sequence[ase.Atoms],
    cutoff: float,
    atomic_numbers: Sequence[int],
    batch_size: int,
    n_shards: int,
    keys: LabelKeys = LabelKeys(),
    head: Any = 0,
    dtype: Any = np.float64,
) -> list[jraph.GraphsTuple]:
    """Batches of ``batch_size`` structures, each split into ``n_shards`` equally padded graphs
    stacked on a leading axis (``n_node`` is [n_shards, n_graph]) for data-parallel training.

    Structure ``j`` of a batch goes to shard ``j % n_shards``; a last batch with fewer than
    ``n_shards`` structures joins the one before.  The loss of a stacked batch equals that of one
    graph holding all its structures (see `equitrain_jax.train.step`).  ``head``: one index, or
    one per structure.
    """
    if n_shards < 1 or batch_size < n_shards:
        raise ValueError(f"need 1 <= n_shards <= batch_size, got n_shards={n_shards}, batch_size={batch_size}")
    graphs = _checked_graphs(structures, cutoff, atomic_numbers, batch_size, keys, head)
    if len(graphs) < n_shards:
        raise ValueError(f"{len(graphs)} structures cannot fill {n_shards} shards")
    starts = list(range(0, len(graphs), batch_size))
    if len(graphs) - starts[-1] < n_shards and len(starts) > 1:
        starts.pop()
    batches = []
    for b, start in enumerate(starts):
        stop = starts[b + 1] if b + 1 < len(starts) else len(graphs)
        shards = [batch_graphs(graphs[start + s : stop : n_shards]) for s in range(n_shards)]
        shape = bucket_shape(shards)
        padded = [pad_graph(g, *shape) for g in shards]
        batches.append(device_arrays(jax.tree_util.tree_map(lambda *xs: np.stack(xs), *padded), dtype))
    return batches
