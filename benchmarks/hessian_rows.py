"""What one full-Hessian row costs, in the model's own force calls, at several chunk sizes.

    python benchmarks/hessian_rows.py                              # Si16 and Si64, chunks 1, 3, 12
    python benchmarks/hessian_rows.py --structures Si64 --chunks 1 3 --rows 48

The model and structures of ``benchmarks/hessian.py`` (MACE-MP-0 medium architecture, 128
channels, random weights, float64; diamond Si supercells).  Per structure: the median of 5 force
calls (compiled, neighbour list built once), then, per chunk size, the median of --repeats calls
of `equitrain_jax.phonons.hessian.hessian_vector_products` on the first --rows unit vectors
(Hessian rows; after one compiling call), as seconds per row and as force calls per row.  Writes
``benchmarks/results/hessian_rows.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from hessian import torch_model, unitcell_and_matrix
from timing import median_time

OUTPUT = Path(__file__).parent / "results" / "hessian_rows.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--structures", nargs="+", default=["Si16", "Si64"])
    parser.add_argument("--chunks", nargs="+", type=int, default=[1, 3, 12])
    parser.add_argument("--rows", type=int, default=48, help="rows per call (at most 3N)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args()

    import jax
    from ase.build import make_supercell

    from equitrain_jax.convert import convert_module
    from equitrain_jax.phonons.hessian import hessian_vector_products
    from equitrain_jax.potential import Potential

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        convert_module(torch_model(128), scratch)
        potential = Potential(scratch, dtype="float64")
        for name in args.structures:
            unit, matrix = unitcell_and_matrix(name)
            atoms = make_supercell(unit, matrix)
            n = len(atoms)
            graph = potential.device_graph(potential.graph(atoms))
            forces = lambda: jax.block_until_ready(potential._outputs(potential.variables, graph))  # noqa: E731
            forces()
            force_s = median_time(forces, 5)
            vectors = np.eye(3 * n)[: min(args.rows, 3 * n)].reshape(-1, n, 3)
            for chunk in args.chunks:
                hessian_vector_products(potential, atoms, vectors[:chunk], chunk_size=chunk)  # compiles
                seconds = median_time(lambda: hessian_vector_products(potential, atoms, vectors, chunk_size=chunk),
                                      args.repeats)
                row = {"structure": name, "atoms": n, "force_call_s": force_s, "chunk_size": chunk,
                       "rows": len(vectors), "seconds": seconds, "seconds_per_row": seconds / len(vectors),
                       "force_calls_per_row": seconds / len(vectors) / force_s}
                rows.append(row)
                print(f"{name} ({n} atoms): force call {force_s:.3f} s; {len(vectors)} rows in chunks of {chunk}: "
                      f"{seconds:.2f} s, {row['seconds_per_row']:.3f} s per row = "
                      f"{row['force_calls_per_row']:.2f} force calls", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "threads": {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "XLA_FLAGS")},
        "model": "MACE-MP-0 medium architecture, 128 channels, random weights, float64", "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
