"""Neighbour lists for atomic structures, computed with vesin."""

from __future__ import annotations

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
    validation happens in :func:`equitrain_jax.data.graph.atoms_to_graph`.

    Args:
        positions: [N, 3] Cartesian positions in Å.
        cell: [3, 3] cell vectors as rows, in Å.
        pbc: [3] periodicity along each cell vector.
        cutoff: cutoff radius in Å.

    Returns:
        ``senders`` int32 [E], ``receivers`` int32 [E] and integer-valued
        ``unit_shifts`` int64 [E, 3].
    """
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    senders, receivers, unit_shifts = calculator.compute(
        points=np.asarray(positions, dtype=np.float64),
        box=np.asarray(cell, dtype=np.float64),
        periodic=np.asarray(pbc, dtype=bool),
        quantities="ijS",
    )
    keep = (senders != receivers) | np.any(unit_shifts != 0, axis=1)
    return (
        senders[keep].astype(np.int32),
        receivers[keep].astype(np.int32),
        unit_shifts[keep].astype(np.int64),
    )
