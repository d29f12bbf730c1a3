"""Phonon training data: DFT force constants from phonopy files, and padded batches of
Hessian-vector-product targets.

A `PhononItem` is one phonopy reference: the equilibrium supercell, its force constants Φ
(symmetrised by phonopy, full [N, 3, N, 3] eV/Å², the ANALYTIC part only: Born charges and
dielectric tensors are carried for evaluation but never folded into Φ), the raw displacement/force
pairs and phonopy's displacement directions.

Each training step draws K directions v per item on the host and sends them with their targets as
node fields of one padded graph of the items' equilibrium supercells::

    nodes["hessian_directions"] [n_node, K, 3]  direction k on each node (Å, see below)
    nodes["hessian_targets"]    [n_node, K, 3]  Φ·v (eV/Å² per Å of v), or −F·√(3N)/|u| (raw)
    nodes["hessian_mask"]       [n_node, K]     True on the real atoms of items whose direction k is real

Direction k of the batch is one tangent over all nodes holding each item's own k-th direction on
its atoms: the Hessian of a batch is block-diagonal across its structures, so K Hessian-vector
products serve every item at once.  Node-major fields ride through `batch_graphs` and
`pad_to_bucket` like force labels, so a batch has the bucketed shapes of its graph and materials of
different sizes in the same bucket compile once.

Every direction of an item of N atoms has length √(3N) (RMS 1 per Cartesian component), so
E[v vᵀ] = I for random directions and the mean squared residual per component estimates
‖H − Φ‖²_F / 3N, the mean squared error of a Hessian row, independent of the supercell size.

About 500 lines: reading phonopy references (NumPy and phonopy only) and batching them for the
jitted step (JAX) live together for now; the reading half is to move into its own module so that
the command line can check `--phonons` files before JAX is imported.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import ase
import jax
import jraph
import numpy as np
import yaml
from phonopy import Phonopy
from phonopy.harmonic.displacement import directions_to_displacement_dataset, get_least_displacements
from phonopy.harmonic.force_constants import compact_fc_to_full_fc
from phonopy.interface.phonopy_yaml import PhonopyYaml

from equitrain_jax.data import (
    PaddedShape,
    atoms_to_graph,
    batch_graphs,
    bucket_shape,
    device_arrays,
    pad_graph,
    pad_to_bucket,
)
from equitrain_jax.phonons.bridge import phonopy_to_ase
from equitrain_jax.phonons.compare import load_reference, reference_nac_source
from equitrain_jax.train.config import DEFAULT_DIRECTION_MODE, DEFAULT_DIRECTIONS, DIRECTION_MODES


class PhononDataError(ValueError):
    """A phonon reference or item that cannot be trained on; the message names the file and problem."""


@dataclasses.dataclass(frozen=True, eq=False)
class PhononItem:
    """One phonopy reference as training data (arrays float64, atoms in phonopy's supercell order).

    Attributes:
        supercell: equilibrium supercell of N atoms (Å, masses in amu).
        force_constants: Φ[i, a, j, b] = ∂²E/∂u_ia ∂u_jb, [N, 3, N, 3] eV/Å², symmetrised by
            phonopy (translational and index-permutation symmetry); without NAC.
        displacements: [M, N, 3] Å, the displaced supercells' displacements (M = 0 for a
            reference with force constants only).
        forces: [M, N, 3] eV/Å, DFT forces of the displaced supercells, as stored (no drift removed).
        directions: [D, N, 3], phonopy's displacement directions, unit length, ± pairs merged
            (H·(−u) = −H·u holds nothing new); phonopy's least displacements of the supercell
            when the reference has no displacement data set.
        source: the reference file.
        nac_params: phonopy's NAC parameters of the reference (Born charges, dielectric tensor)
            or None; for evaluating phonons like with like, never part of ``force_constants``.
        nac_source: where ``nac_params`` came from (a file), or None.
    """

    supercell: ase.Atoms
    force_constants: np.ndarray
    displacements: np.ndarray
    forces: np.ndarray
    directions: np.ndarray
    source: str = ""
    nac_params: Optional[dict] = None
    nac_source: Optional[str] = None

    def __post_init__(self):
        check_item(self)

    @property
    def n_atoms(self) -> int:
        return len(self.supercell)

    def provenance(self) -> dict[str, Any]:
        """JSON-ready description: file, sizes, and whether NAC parameters existed (they are
        never applied to the force constants, hence to targets)."""
        return {
            "source": self.source,
            "formula": self.supercell.get_chemical_formula(),
            "n_atoms": self.n_atoms,
            "n_displacements": len(self.displacements),
            "n_directions": len(self.directions),
            "nac_params_present": self.nac_params is not None,
            "nac_source": self.nac_source,
            "nac_applied_to_force_constants": False,
        }


def _finite(name: str, value: np.ndarray, source: str) -> None:
    bad = ~np.isfinite(value)
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise PhononDataError(f"{source}: {name} contains NaN or inf (first at index {where})")


def check_item(item: PhononItem) -> None:
    """Raise `PhononDataError` naming the source if shapes disagree or any value is not finite."""
    n, source = len(item.supercell), item.source or "phonon item"
    if n == 0:
        raise PhononDataError(f"{source}: the supercell has no atoms")
    if item.force_constants.shape != (n, 3, n, 3):
        raise PhononDataError(
            f"{source}: force constants have shape {list(item.force_constants.shape)}, expected "
            f"[{n}, 3, {n}, 3] for the {n}-atom supercell"
        )
    if item.displacements.shape != item.forces.shape or item.displacements.shape[1:] != (n, 3):
        raise PhononDataError(
            f"{source}: displacements {list(item.displacements.shape)} and forces "
            f"{list(item.forces.shape)} must both be [M, {n}, 3] for the {n}-atom supercell"
        )
    if item.directions.ndim != 3 or item.directions.shape[1:] != (n, 3) or len(item.directions) == 0:
        raise PhononDataError(f"{source}: directions have shape {list(item.directions.shape)}, expected [D ≥ 1, {n}, 3]")
    for name in ("force_constants", "displacements", "forces", "directions"):
        _finite(name, getattr(item, name), source)
    _finite("positions", item.supercell.positions, source)
    sizes = np.linalg.norm(item.displacements, axis=(1, 2))
    if np.any(sizes == 0):
        raise PhononDataError(f"{source}: displaced supercell(s) {np.flatnonzero(sizes == 0).tolist()} have zero displacement")


# ---------------------------------------------------------------------------- reading


def _raw_pairs(reference: Phonopy) -> tuple[np.ndarray, np.ndarray]:
    """Displacements and forces [M, N, 3] of phonopy's data set (type 1 or 2); M = 0 without forces."""
    n = len(reference.supercell)
    dataset = reference.dataset
    if not dataset:
        return np.zeros((0, n, 3)), np.zeros((0, n, 3))
    if "first_atoms" in dataset:
        firsts = [d for d in dataset["first_atoms"] if d.get("forces") is not None]
        displacements = np.zeros((len(firsts), n, 3))
        for m, first in enumerate(firsts):
            displacements[m, first["number"]] = first["displacement"]
        forces = np.array([first["forces"] for first in firsts], dtype=float).reshape(len(firsts), -1, 3)
        return displacements, forces
    if dataset.get("forces") is None:
        return np.zeros((0, n, 3)), np.zeros((0, n, 3))
    return np.asarray(dataset["displacements"], dtype=float), np.asarray(dataset["forces"], dtype=float)


def merge_plus_minus(vectors: np.ndarray) -> np.ndarray:
    """Unit directions [D, N, 3] of ``vectors``, each ± pair kept once (first occurrence)."""
    flat = vectors.reshape(len(vectors), -1)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    kept: list[np.ndarray] = []
    for vector in flat:
        if not any(abs(float(vector @ other)) > 1 - 1e-8 for other in kept):
            kept.append(vector)
    return np.array(kept).reshape(len(kept), *vectors.shape[1:])


def _displacement_directions(reference: Phonopy) -> np.ndarray:
    """Phonopy's displacement directions [D, N, 3] (unit): from its data set, else its least
    displacements of the supercell (what phonopy would have asked DFT for)."""
    n = len(reference.supercell)
    dataset = reference.dataset or {}
    if "first_atoms" in dataset and dataset["first_atoms"]:
        vectors = np.zeros((len(dataset["first_atoms"]), n, 3))
        for m, first in enumerate(dataset["first_atoms"]):
            vectors[m, first["number"]] = first["displacement"]
    elif dataset.get("displacements") is not None:
        vectors = np.asarray(dataset["displacements"], dtype=float)
    else:
        least = get_least_displacements(reference.symmetry, is_plusminus=False)
        firsts = directions_to_displacement_dataset(least, 1.0, reference.supercell)["first_atoms"]
        vectors = np.zeros((len(firsts), n, 3))
        for m, first in enumerate(firsts):
            vectors[m, first["number"]] = first["displacement"]
    return merge_plus_minus(vectors)


def full_force_constants(reference: Phonopy) -> np.ndarray:
    """The reference's force constants as a full Hessian [N, 3, N, 3] eV/Å² (compact ones expanded
    by phonopy's lattice translations)."""
    fc = np.asarray(reference.force_constants, dtype=float)
    if fc.shape[0] != fc.shape[1]:
        fc = compact_fc_to_full_fc(reference.primitive, np.ascontiguousarray(fc))
    return np.ascontiguousarray(np.transpose(fc, (0, 2, 1, 3)))


def phonon_item_from_phonopy(
    reference: Phonopy, source: str = "", nac_params: Optional[dict] = None, nac_source: Optional[str] = None
) -> PhononItem:
    """A `PhononItem` of a `Phonopy` object with force constants (and, optionally, a data set).

    ``nac_params`` default to the reference's own (``reference.nac_params``); they are recorded,
    never applied: phonopy keeps NAC out of its force constants and adds it to dynamical matrices.
    """
    source = source or "phonopy reference"
    if reference.force_constants is None:
        raise PhononDataError(f"{source}: the reference has no force constants (no forces in its data set?)")
    displacements, forces = _raw_pairs(reference)
    if nac_params is None and reference.nac_params is not None:
        nac_params, nac_source = dict(reference.nac_params), nac_source or source
    return PhononItem(
        supercell=phonopy_to_ase(reference.supercell),
        force_constants=full_force_constants(reference),
        displacements=displacements,
        forces=forces,
        directions=_displacement_directions(reference),
        source=source,
        nac_params=nac_params,
        nac_source=nac_source if nac_params is not None else None,
    )


def read_phonon_item(
    path: Union[str, os.PathLike],
    force_sets: Optional[Union[str, os.PathLike]] = None,
    force_constants: Optional[Union[str, os.PathLike]] = None,
) -> PhononItem:
    """A `PhononItem` from phonopy files (see `read_phonon_reference`)."""
    return read_phonon_reference(path, force_sets, force_constants)[0]


def read_phonon_reference(
    path: Union[str, os.PathLike],
    force_sets: Optional[Union[str, os.PathLike]] = None,
    force_constants: Optional[Union[str, os.PathLike]] = None,
) -> tuple[PhononItem, Phonopy]:
    """A `PhononItem` from phonopy files, read as `equitrain_jax.phonons.load_reference` reads them,
    and the `Phonopy` object read (for frequencies; NAC parameters set on it as phonopy found them).

    ``path`` is a ``phonopy_params.yaml`` (structure with displacements and forces, or with force
    constants) or a structure-only ``phonopy.yaml``/``phonopy_disp.yaml`` with a FORCE_SETS or
    FORCE_CONSTANTS file given or beside it.  NAC parameters (``nac_params`` in the YAML, or a
    BORN file beside it) are recorded in the item, never applied to its force constants.

    Raises:
        PhononDataError: naming the file when it holds no forces or force constants, or
            inconsistent or non-finite data.
    """
    path = Path(path)
    try:
        reference = load_reference(path, force_sets=force_sets, force_constants=force_constants)
    except (ValueError, FileNotFoundError) as error:
        raise PhononDataError(str(error)) from error
    except yaml.YAMLError as error:
        raise PhononDataError(f"{path}: not a readable phonopy YAML ({' '.join(str(error).split())})") from error
    nac_params, nac_source = None, None
    if reference.nac_params is not None:  # the YAML's nac_params, or a BORN file beside it (never the cwd's)
        nac_params = dict(reference.nac_params)
        nac_source = str(path) if _yaml_has_nac(path) else reference_nac_source(path)
    item = phonon_item_from_phonopy(reference, str(path), nac_params=nac_params, nac_source=nac_source)
    return item, reference


def _yaml_has_nac(path: Path) -> bool:
    document = PhonopyYaml()
    document.read(path)
    return document.nac_params is not None


# ---------------------------------------------------------------------------- directions


def direction_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator of a step's directions: a function of (seed, epoch, step) only, so a resumed
    run draws the same directions."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(step)]))


def sample_directions(
    item: PhononItem, k: int, mode: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K directions of one item, their targets and which are real.

    Modes (every direction has length √(3N)):
        ``"random"``: uniform on the sphere of R^{3N}; E[v vᵀ] = I, so the mean squared residual
            per component is an unbiased estimate of ‖H − Φ‖²_F / 3N.  Targets Φ·v.
        ``"phonopy"``: phonopy's displacement directions (`PhononItem.directions`); all of them
            if D ≤ K (the rest masked), else K drawn without replacement.  Targets Φ·v.
        ``"raw"``: û from the displaced supercells, targets −F(u)·√(3N)/|u| straight from the
            DFT forces, no symmetrisation; all if M ≤ K, else K drawn.  Biased by the anharmonic
            term: −F(u)/|u| = Φ·û + ½|u|·Φ3[û, û] + O(|u|²).

    Returns:
        directions [K, N, 3] (Å), targets [K, N, 3] (eV/Å²), mask [K] (bool).
    """
    if mode not in DIRECTION_MODES:
        raise ValueError(f"direction mode must be one of {tuple(DIRECTION_MODES)}, got {mode!r}")
    if k < 1:
        raise ValueError(f"the number of directions must be at least 1, got {k}")
    n = item.n_atoms
    length = np.sqrt(3 * n)
    if mode == "random":
        chosen = rng.standard_normal((k, 3 * n)).reshape(k, n, 3)
        labels = None
    else:
        pool = item.directions if mode == "phonopy" else item.displacements
        if len(pool) == 0:
            raise PhononDataError(
                f"{item.source}: direction mode {mode!r} needs displaced supercells with forces; "
                "the reference has force constants only"
            )
        picks = np.arange(len(pool)) if len(pool) <= k else np.sort(rng.choice(len(pool), size=k, replace=False))
        chosen = pool[picks]
        labels = -item.forces[picks] if mode == "raw" else None
    scale = length / np.linalg.norm(chosen, axis=(1, 2))[:, None, None]
    chosen = chosen * scale
    count = len(chosen)
    directions, targets, mask = np.zeros((k, n, 3)), np.zeros((k, n, 3)), np.zeros(k, dtype=bool)
    directions[:count], mask[:count] = chosen, True
    if labels is None:
        phi = item.force_constants.reshape(3 * n, 3 * n)
        targets[:count] = (chosen.reshape(count, 3 * n) @ phi.T).reshape(count, n, 3)
    else:
        targets[:count] = labels * scale
    return directions, targets, mask


# ---------------------------------------------------------------------------- graphs and batches


def phonon_graph(item: PhononItem, cutoff: float, atomic_numbers: Sequence[int], head: int = 0) -> jraph.GraphsTuple:
    """Unpadded graph of the item's equilibrium supercell (neighbour list built once, here).

    Raises:
        PhononDataError: naming the item's source for elements the model lacks and every other
            input error of `equitrain_jax.data.atoms_to_graph`.
    """
    try:
        return atoms_to_graph(item.supercell, cutoff, atomic_numbers, head=head)
    except ValueError as error:
        raise PhononDataError(f"{item.source or 'phonon item'}: {error}") from error


def step_directions(
    items: Sequence[PhononItem], k: int, mode: str, seed: int, epoch: int, step: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`sample_directions` of every item of a step, in order, from `direction_rng(seed, epoch,
    step)`: the same draws however the items are later split over devices."""
    rng = direction_rng(seed, epoch, step)
    return [sample_directions(item, k, mode, rng) for item in items]


def with_directions(item: PhononItem, graph: jraph.GraphsTuple, sampled: tuple[np.ndarray, ...]) -> jraph.GraphsTuple:
    """The item's graph with its directions, targets and mask (from `sample_directions`) as node
    fields (see the module docstring)."""
    if int(np.sum(graph.n_node)) != item.n_atoms:
        raise ValueError(f"{item.source}: graph has {int(np.sum(graph.n_node))} nodes for a "
                         f"{item.n_atoms}-atom supercell")
    directions, targets, mask = sampled
    return graph._replace(nodes={
        **graph.nodes,
        "hessian_directions": np.swapaxes(directions, 0, 1),
        "hessian_targets": np.swapaxes(targets, 0, 1),
        "hessian_mask": np.broadcast_to(mask, (item.n_atoms, len(mask))).copy(),
    })


def hessian_batch(
    items: Sequence[PhononItem],
    graphs: Sequence[jraph.GraphsTuple],
    k: int = DEFAULT_DIRECTIONS,
    mode: str = DEFAULT_DIRECTION_MODE,
    seed: int = 0,
    epoch: int = 0,
    step: int = 0,
    pad: bool = True,
) -> jraph.GraphsTuple:
    """One step's batch: the items' graphs (from `phonon_graph`) with K directions and targets
    each as node fields (see the module docstring), padded to bucket sizes (numpy; move it with
    `equitrain_jax.data.device_arrays`).

    Directions are drawn by `step_directions`.  The padded shapes depend only on the graphs and K,
    never on the draw.  ``pad=False`` returns the batched graph unpadded.
    """
    if len(items) == 0 or len(items) != len(graphs):
        raise ValueError(f"need one graph per item and at least one item, got {len(items)} items and {len(graphs)} graphs")
    sampled = step_directions(items, k, mode, seed, epoch, step)
    batch = batch_graphs([with_directions(*triple) for triple in zip(items, graphs, sampled)])
    return pad_to_bucket(batch) if pad else batch


def _empty_like(graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
    """A graph with the fields of ``graph`` and no structure in it (an idle device's shard)."""
    def empty(fields):
        return {key: value[:0] for key, value in fields.items()}

    return graph._replace(nodes=empty(graph.nodes), edges=empty(graph.edges), globals=empty(graph.globals),
                          senders=graph.senders[:0], receivers=graph.receivers[:0], n_node=graph.n_node[:0],
                          n_edge=graph.n_edge[:0])


class PhononBatches:
    """The phonon items of a training run in fixed groups of ``batch_size`` (in order), each step's
    group with freshly drawn directions, every group padded to ONE shape (the largest group's
    buckets), so a run compiles its step once for phonons whatever the materials' sizes.

    With ``n_shards`` > 1 a group's items go to shard ``j % n_shards`` (shards without items hold
    padding only) and the shards are stacked on a leading axis, as
    `equitrain_jax.train.data.sharded_batches` does for structures; the directions are the same
    as on one device (`step_directions` draws them in the group's order).

    Args:
        items: the phonon items; ``graphs``: their unpadded graphs (`phonon_graph`).
        k, mode: directions per item and step, and how they are chosen (`sample_directions`).
        seed: with the epoch and step, all that decides the directions.
        dtype: floating dtype of the device arrays.
    """

    def __init__(self, items: Sequence[PhononItem], graphs: Sequence[jraph.GraphsTuple], batch_size: int,
                 k: int = DEFAULT_DIRECTIONS, mode: str = DEFAULT_DIRECTION_MODE, seed: int = 0,
                 n_shards: int = 1, dtype: Any = np.float64):
        if not items or len(items) != len(graphs):
            raise ValueError(f"need one graph per phonon item and at least one item, got {len(items)} and {len(graphs)}")
        if batch_size < 1 or n_shards < 1:
            raise ValueError(f"batch_size and n_shards must be at least 1, got {batch_size} and {n_shards}")
        if mode != "random":
            for item in items:
                sample_directions(item, k, mode, direction_rng(seed, 0, 0))  # refuses raw without displacements
        self.items, self.graphs = list(items), list(graphs)
        self.k, self.mode, self.seed, self.n_shards, self.dtype = k, mode, seed, n_shards, dtype
        self.groups = [list(range(start, min(start + batch_size, len(items))))
                       for start in range(0, len(items), batch_size)]
        shards = [self._shard_graphs(group, self.graphs) for group in self.groups]
        self.shape: PaddedShape = bucket_shape([g for group in shards for g in group if len(g.n_node)])

    def __len__(self) -> int:
        return len(self.groups)

    def _shard_graphs(self, group: list[int], graphs: Sequence[jraph.GraphsTuple]) -> list[jraph.GraphsTuple]:
        shards = []
        for s in range(self.n_shards):
            members = [graphs[i] for i in group[s :: self.n_shards]]
            shards.append(batch_graphs(members) if members else _empty_like(graphs[group[0]]))
        return shards

    def batch(self, index: int, epoch: int, step: int) -> jraph.GraphsTuple:
        """Group ``index`` with the directions of (seed, ``epoch``, ``step``), padded to `shape`,
        as device arrays (stacked over shards when ``n_shards`` > 1)."""
        group = self.groups[index]
        sampled = step_directions([self.items[i] for i in group], self.k, self.mode, self.seed, epoch, step)
        labelled = dict(zip(group, (with_directions(self.items[i], self.graphs[i], s) for i, s in zip(group, sampled))))
        graphs = [labelled.get(i, graph) for i, graph in enumerate(self.graphs)]
        padded = [pad_graph(g, *self.shape) for g in self._shard_graphs(group, graphs)]
        if self.n_shards == 1:
            return device_arrays(padded[0], self.dtype)
        return device_arrays(jax.tree_util.tree_map(lambda *xs: np.stack(xs), *padded), self.dtype)

    def digest_arrays(self) -> list:
        """What the phonon data are, for a run's fingerprint: per item its supercell (numbers,
        positions, cell), force constants, displacements and forces."""
        return [[np.asarray(item.supercell.numbers), item.supercell.positions, item.supercell.cell.array,
                 item.force_constants, item.displacements, item.forces] for item in self.items]


__all__ = [
    "DEFAULT_DIRECTIONS",
    "DEFAULT_DIRECTION_MODE",
    "DIRECTION_MODES",
    "PhononDataError",
    "PhononItem",
    "check_item",
    "direction_rng",
    "full_force_constants",
    "PhononBatches",
    "hessian_batch",
    "merge_plus_minus",
    "phonon_graph",
    "phonon_item_from_phonopy",
    "read_phonon_item",
    "read_phonon_reference",
    "sample_directions",
    "step_directions",
    "with_directions",
]
