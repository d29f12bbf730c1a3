"""Neighbour-list time of vesin (what equitrain-jax uses) vs matscipy (what mace-torch uses), one run.

Diamond-Si supercells, cutoff 6 Å, full lists with integer cell shifts; also checks that both
return the same number of edges.  Prints medians and the ratio matscipy / vesin.

    python benchmarks/neighbour_list.py
"""

from __future__ import annotations

import statistics
import time

from ase.build import bulk
from matscipy.neighbours import neighbour_list as matscipy_neighbour_list

from equitrain_jax.data import neighbour_list

REPEATS = {64: 2, 512: 4, 4096: 8}


def median_time(fn, repeats=7):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main():
    print(f"{'atoms':>6} {'edges':>8} {'vesin ms':>10} {'matscipy ms':>12} {'ratio':>6}")
    for n, rep in REPEATS.items():
        atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(rep)
        atoms.rattle(0.02, seed=0)
        t_vesin, (senders, _, _) = median_time(
            lambda: neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 6.0)
        )
        t_matscipy, (i, _, _) = median_time(lambda: matscipy_neighbour_list("ijS", atoms, 6.0))
        assert len(senders) == len(i), (len(senders), len(i))
        print(f"{n:6d} {len(i):8d} {t_vesin * 1e3:10.2f} {t_matscipy * 1e3:12.2f} {t_matscipy / t_vesin:6.1f}")


if __name__ == "__main__":
    main()
