"""Neighbour lists for atomic structures, computed with vesin.

vesin bins space into cells of at least the cutoff, at most `MAX_CELL_LIST_CELLS` of them; for a
region that is much longer in one direction than in another it then divides by zero and the
process dies (SIGFPE) without a word, and a huge number of pairs exhausts memory.  So every input
is checked first (`check_neighbour_search`), and refused with a ValueError that states the limit:
coordinates and cell vectors within `MAX_COORDINATE`, a region vesin can bin, and at most
`MAX_NEIGHBOUR_PAIRS` expected pairs.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import numpy.typing as npt


def _import_vesin_without_torch():
    """Import vesin without letting it import torch (it does so opportunistically, for tensor
    inputs we never pass): model loading stays torch-free and 1 s faster to import."""
    if "vesin" in sys.modules or "torch" in sys.modules:
        import vesin

        return vesin
    sys.modules["torch"] = None  # makes `import torch` inside vesin raise ImportError
    try:
        import vesin
    finally:
        del sys.modules["torch"]
    return vesin


vesin = _import_vesin_without_torch()

MAX_COORDINATE = 1e5
"""Largest |coordinate| of an atom and largest cell-vector length, in Å (10 µm): beyond it the
structure is surely a unit mistake, float32 positions keep less than 0.01 Å, and vesin's integer
cell indices could overflow."""
MAX_CELL_LIST_CELLS = 100_000
"""vesin's cap on its cell list: it shrinks a larger grid to about this many cells keeping their
aspect ratio, which fails (division by zero) where a direction would get less than one cell."""
MAX_NUMBER_DENSITY = 1.0
"""Atoms per Å³ above which a periodic cell is refused: more than five times diamond's 0.176,
the densest solid at ambient pressure; a cell given in nm instead of Å is 1000 times too dense."""

MAX_NEIGHBOUR_PAIRS = 100_000_000
"""Largest number of neighbour pairs expected from the density (about 10 GB while they are built)."""
_DIRECTIONS = ("a", "b", "c")


def periodic_heights(cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Distance in Å of each periodic cell vector from the span of the other periodic ones.

    Args:
        cell: [3, 3] cell vectors as rows, in Å.
        pbc: [3] periodicity flags.

    Returns:
        [P] heights for the P periodic directions, in order.
    """
    periodic = cell[pbc]
    heights = []
    for i, vector in enumerate(periodic):
        others = np.delete(periodic, i, axis=0).T
        if others.size:
            vector = vector - others @ np.linalg.lstsq(others, vector, rcond=None)[0]
        heights.append(np.linalg.norm(vector))
    return np.array(heights)


def check_neighbour_search(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> None:
    """Raise a ValueError, stating the limit, for any input vesin cannot take without crashing or
    exhausting memory: a cutoff that is not a positive number, non-finite coordinates, coordinates
    or cell vectors beyond `MAX_COORDINATE`, a region vesin cannot bin, or more than
    `MAX_NEIGHBOUR_PAIRS` expected pairs.  (A degenerate periodic cell is refused earlier, by
    `equitrain_jax.data.atoms_to_graph`, with a clearer message.)

    The region searched spans, along each direction, the cell height where periodic and the extent
    of the atoms (plus vesin's margin) where not; in cutoffs that is n_a × n_b × n_c cells.  Up to
    `MAX_CELL_LIST_CELLS` cells vesin uses them as they are; beyond, it coarsens the grid keeping
    its proportions, which needs every direction to keep several cells (n_min ≥ 4·(Πn/cap)^⅓).
    """
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"the neighbour-list cutoff must be a finite positive number of Å, got {cutoff!r}")
    if len(positions) == 0:
        return
    if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(cell))):
        raise ValueError("positions and cell must be finite numbers (NaN or inf found)")
    far = np.flatnonzero(np.abs(positions).max(axis=1) > MAX_COORDINATE)
    if len(far):
        raise ValueError(
            f"atom {far[0]} is at {positions[far[0]].tolist()} Å: coordinates beyond ±{MAX_COORDINATE:.0e} Å "
            f"(MAX_COORDINATE) are refused ({len(far)} atom(s) that far; a unit mistake?)"
        )
    lengths = np.linalg.norm(cell, axis=1)
    if np.any(lengths > MAX_COORDINATE):
        axis = int(np.argmax(lengths))
        raise ValueError(
            f"cell vector {_DIRECTIONS[axis]} is {lengths[axis]:.4g} Å long: cell vectors longer than "
            f"{MAX_COORDINATE:.0e} Å (MAX_COORDINATE) are refused"
        )
    low, high = positions.min(axis=0), positions.max(axis=0)
    extents = high - low + 0.01 * np.maximum(np.abs(low), np.abs(high)) + 1.0  # vesin's bounding box, generously
    spans = extents.copy()
    spans[pbc] = periodic_heights(cell, pbc)
    cells = np.maximum(1.0, spans / cutoff)
    total = float(np.prod(cells))
    if total > MAX_CELL_LIST_CELLS and cells.min() < 4.0 * (total / MAX_CELL_LIST_CELLS) ** (1.0 / 3.0):
        raise ValueError(
            f"the structure spans {' × '.join(f'{x:.4g}' for x in spans)} Å (cell heights along periodic "
            f"directions, extent of the atoms along the others): {total:.3g} cubes of the cutoff "
            f"({cutoff:.4g} Å), more than the neighbour list's {MAX_CELL_LIST_CELLS} "
            "(MAX_CELL_LIST_CELLS) for a region this elongated; are some atoms far away, or a cell "
            "vector far too long?"
        )
    n_atoms = len(positions)
    volume = float(np.prod(np.where(pbc, spans, np.maximum(spans, 2.0 * cutoff))))
    expected = n_atoms * n_atoms * (4.0 / 3.0 * math.pi * cutoff**3) / volume
    if not np.any(pbc):
        expected = min(expected, n_atoms * (n_atoms - 1))
    if expected > MAX_NEIGHBOUR_PAIRS:
        raise ValueError(
            f"about {expected:.3g} neighbour pairs expected for {n_atoms} atoms within the cutoff "
            f"{cutoff:.4g} Å in {volume:.4g} Å³: more than {MAX_NEIGHBOUR_PAIRS:.0e} (MAX_NEIGHBOUR_PAIRS) "
            "would exhaust memory"
        )
    if np.all(pbc):
        cell_volume = abs(float(np.linalg.det(cell)))
        density = n_atoms / cell_volume
        if density > MAX_NUMBER_DENSITY:
            raise ValueError(
                f"{n_atoms} atoms in a cell of {cell_volume:.4g} Å³: {density:.3g} atoms/Å³, "
                f"denser than any solid (diamond: 0.18; limit {MAX_NUMBER_DENSITY:g}, MAX_NUMBER_DENSITY); "
                "are the cell and positions in Å (not nm or bohr)?"
            )


def neighbour_list(
    positions: npt.ArrayLike,
    cell: npt.ArrayLike,
    pbc: npt.ArrayLike,
    cutoff: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list of all pairs closer than ``cutoff``.

    Same convention as ASE/matscipy and mace-torch: the edge vector of edge ``e``
    is ``positions[receivers[e]] - positions[senders[e]] + unit_shifts[e] @ cell``.
    Both directions of every pair are listed; self-edges with zero shift are
    excluded, self-edges to periodic images are kept.

    Mixed periodicity (e.g. a slab periodic along a and b only) is handled by
    vesin directly; cell vectors along non-periodic directions may be zero.
    Positions need not be wrapped into the cell. Inputs are assumed valid
    (finite positions, ``cutoff > 0``, non-degenerate periodic cell vectors);
    validation happens in :func:`equitrain_jax.data.graph.atoms_to_graph`.  What
    vesin itself cannot take is refused here first (`check_neighbour_search`).

    Args:
        positions: [N, 3] Cartesian positions in Å.
        cell: [3, 3] cell vectors as rows, in Å.
        pbc: [3] periodicity along each cell vector.
        cutoff: cutoff radius in Å.

    Returns:
        ``senders`` int32 [E], ``receivers`` int32 [E] and integer-valued
        ``unit_shifts`` int64 [E, 3].

    Raises:
        ValueError: see `check_neighbour_search`.
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    check_neighbour_search(positions, cell, pbc, float(cutoff))
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    senders, receivers, unit_shifts = calculator.compute(points=positions, box=cell, periodic=pbc, quantities="ijS")
    keep = (senders != receivers) | np.any(unit_shifts != 0, axis=1)
    return (
        senders[keep].astype(np.int32),
        receivers[keep].astype(np.int32),
        unit_shifts[keep].astype(np.int64),
    )
